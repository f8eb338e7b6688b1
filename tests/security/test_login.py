"""Finding 10: the lockout told real accounts from unknown ones (429 and a fast reply only for real
ones), and anyone could lock any account, admin included, from everywhere. Now failures count per
(user name, client address) for known and unknown names alike, plus per client address."""
from __future__ import annotations

import re
import statistics
import time

from fastapi.testclient import TestClient

from tests.server.conftest import ADMIN_PW, ALICE_PW

LOGIN = "/api/v1/auth/login"


def _from(served, address: str) -> TestClient:
    """A client whose requests come from ``address`` (the direct peer; no proxy is trusted)."""
    return TestClient(served.app, client=(address, 40000))


def _answer(r) -> tuple:
    body = {k: v for k, v in r.json().items() if k not in ("instance", "request_id")}
    return r.status_code, body, r.headers.get("retry-after")


def _coarse(answers: list[tuple]) -> list[tuple]:
    """The answers with the seconds left of a lock rounded to tens: a pause of a second between two
    attempts may move them by one, which says nothing about the account."""
    def tens(text):
        return re.sub(r"\d+", lambda m: str(round(int(m.group()), -1)), text) if text else text

    return [(status, body | {"detail": tens(body["detail"])}, tens(retry)) for status, body, retry in answers]


def _attempts(client: TestClient, username: str, n: int) -> list[tuple]:
    return [_answer(client.post(LOGIN, json={"username": username, "password": "wrong-password"})) for _ in range(n)]


def test_known_and_unknown_users_get_the_same_answers(served):
    known = _attempts(_from(served, "198.51.100.1"), "alice", 7)
    unknown = _attempts(_from(served, "198.51.100.2"), "nosuchuser_zz", 7)
    assert _coarse(known) == _coarse(unknown)
    assert [status for status, _, _ in known] == [401, 401, 401, 401, 429, 429, 429]
    assert known[0][1]["detail"] == "wrong username or password"
    assert known[4][1]["detail"] == unknown[4][1]["detail"] == "too many failed logins; try again in 30 s"
    assert known[4][2] == unknown[4][2] == "30"
    # positive control: a fresh address with the right password logs in
    assert _from(served, "198.51.100.3").post(LOGIN, json={"username": "alice", "password": ALICE_PW}).status_code == 200


def test_an_unknown_users_failure_costs_about_as_much_as_a_known_ones(served):
    """Coarse on purpose: both check an argon2 hash, so neither answers several times faster."""
    def seconds(username: str, i: int) -> float:
        client = _from(served, f"192.0.2.{i}")
        start = time.perf_counter()
        assert client.post(LOGIN, json={"username": username, "password": "wrong-password"}).status_code == 401
        return time.perf_counter() - start

    known = statistics.median(seconds("alice", i) for i in range(1, 4))
    unknown = statistics.median(seconds("nosuchuser_zz", i) for i in range(11, 14))
    assert unknown > known / 5 and known > unknown / 5, (known, unknown)


def test_a_locked_account_still_logs_in_from_another_address(served):
    attacker = _from(served, "203.0.113.66")
    assert [s for s, _, _ in _attempts(attacker, "root", 5)] == [401, 401, 401, 401, 429]
    # from the attacker's address even the right password waits
    assert attacker.post(LOGIN, json={"username": "root", "password": ADMIN_PW}).status_code == 429
    # positive control: the admin, from their own address, logs in
    admin = _from(served, "198.51.100.20")
    r = admin.post(LOGIN, json={"username": "root", "password": ADMIN_PW})
    assert r.status_code == 200 and r.json()["user"] == "root"
    from bastion.audit import AuditQuery

    entries = served.app.state.server.audit.query(AuditQuery(action="login", actor="root"))
    assert [(e["ip"], e["outcome"]) for e in entries][-2:] == [("203.0.113.66", "denied"), ("198.51.100.20", "ok")]


def test_an_address_hammering_many_user_names_is_throttled(served):
    limit = served.ws.config.auth.max_failed_logins_per_address
    attacker = _from(served, "203.0.113.99")
    answers = [_answer(attacker.post(LOGIN, json={"username": f"guess{i}", "password": "wrong-password"}))
               for i in range(limit)]
    assert [s for s, _, _ in answers] == [401] * (limit - 1) + [429]
    # now any user name from that address waits, a real one with its right password too
    r = attacker.post(LOGIN, json={"username": "alice", "password": ALICE_PW})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # positive control: alice from another address
    assert _from(served, "198.51.100.30").post(LOGIN, json={"username": "alice", "password": ALICE_PW}).status_code == 200


def test_throttle_windows_doubling_and_success():
    from bastion.accounts import LoginThrottle

    now = [0.0]
    t = LoginThrottle(max_per_pair=2, max_per_address=4, base_s=30, max_s=100, window_s=600, clock=lambda: now[0])
    assert [t.failed("alice", "a") for _ in range(2)] == [0, 30]
    now[0] = 31
    assert t.wait("alice", "a") == 0 and t.failed("alice", "a") == 60  # doubled, per further failure
    now[0] = 92
    assert t.failed("alice", "a") == 100  # capped at max_s
    assert t.wait("alice", "b") == 0  # the lock is the pair's
    t.succeeded("bob", "a")
    assert t.wait("bob", "a") == 30  # the address reached its 4 failures (its own lock): a success keeps it
    now[0] = 92 + 100 + 600 + 1  # the lock is over and the window has passed: forgotten
    assert t.wait("alice", "a") == 0 and t.failed("alice", "a") == 0
    t.failed("carol", "c")
    t.succeeded("carol", "c")
    assert t.failed("carol", "c") == 0 and t.failed("carol", "c") == 30  # a success cleared the pair


def test_lockout_settings_are_in_the_auth_config():
    import pytest

    from bastion.core.config import AuthConfig

    cfg = AuthConfig()
    assert (cfg.max_failed_logins, cfg.max_failed_logins_per_address, cfg.lockout_base_s, cfg.lockout_max_s,
            cfg.failed_login_window_s) == (5, 20, 30, 900, 900)
    with pytest.raises(ValueError):
        AuthConfig(max_failed_logins_per_address=0)
