"""Finding 7: web sessions survived a password change or reset. Now a new password ends the user's
sessions (API, Python API, CLI), and "log out everywhere" exists for the user and for admins."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import ADMIN_PW, ALICE_PW, auth

NEW_PW = "alice-password-2-new"


def _browser(served, user: str, password: str) -> tuple[TestClient, str]:
    """A separate cookie jar logged in as ``user``; returns it and the session's CSRF token."""
    browser = TestClient(served.app)
    r = browser.post("/api/v1/auth/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    assert browser.get("/api/v1/auth/me").json()["user"] == user
    return browser, r.json()["csrf_token"]


def _login(served, user: str, password: str) -> int:
    return TestClient(served.app).post("/api/v1/auth/login", json={"username": user, "password": password}).status_code


def _audit(client, served, **filters) -> list[dict]:
    return client.get("/api/v1/audit", params=filters, headers=auth(served.keys["root"])).json()["entries"]


def test_an_admin_password_reset_ends_the_users_sessions(client, served):
    stolen, _ = _browser(served, "alice", ALICE_PW)
    other, _ = _browser(served, "root", ADMIN_PW)
    r = client.patch("/api/v1/users/alice", json={"password": NEW_PW}, headers=auth(served.keys["root"]))
    assert r.status_code == 200
    me = stolen.get("/api/v1/auth/me")
    assert me.status_code == 401 and me.json()["type"] == "urn:bastion:problem:unauthenticated"
    # positive controls: the new password logs in, the old one does not, other users keep their sessions
    assert _login(served, "alice", NEW_PW) == 200
    assert _login(served, "alice", ALICE_PW) == 401
    assert other.get("/api/v1/auth/me").json()["user"] == "root"
    assert client.get("/api/v1/auth/me", headers=auth(served.keys["alice"])).json()["user"] == "alice"  # keys stay
    [entry] = _audit(client, served, action="user.change")
    assert entry["target"] == "alice" and entry["detail"]["sessions_ended"] == 1


def test_readding_a_user_with_a_password_ends_their_sessions(client, served):
    stolen, _ = _browser(served, "alice", ALICE_PW)
    body = {"user": "alice", "groups": ["finance", "staff"], "password": NEW_PW, "replace": True}
    assert client.post("/api/v1/users", json=body, headers=auth(served.keys["root"])).status_code == 201
    assert stolen.get("/api/v1/auth/me").status_code == 401
    assert _login(served, "alice", NEW_PW) == 200


def test_set_password_ends_sessions_and_so_does_the_cli(served):
    from typer.testing import CliRunner

    from bastion.cli.app import app

    accounts = served.app.state.server.accounts
    stolen, _ = _browser(served, "alice", ALICE_PW)
    assert accounts.set_password("alice", NEW_PW) == 1
    assert stolen.get("/api/v1/auth/me").status_code == 401

    stolen, _ = _browser(served, "alice", NEW_PW)
    r = CliRunner().invoke(app, ["--home", str(served.ws.home), "user", "passwd", "alice", "--password-stdin"],
                           input=ALICE_PW + "\n")
    assert r.exit_code == 0, r.output
    assert stolen.get("/api/v1/auth/me").status_code == 401
    fresh, _ = _browser(served, "alice", ALICE_PW)  # positive control: the CLI's password works
    assert fresh.get("/api/v1/auth/me").status_code == 200


def test_log_out_everywhere(client, served):
    laptop, csrf = _browser(served, "alice", ALICE_PW)
    phone, _ = _browser(served, "alice", ALICE_PW)
    root, _ = _browser(served, "root", ADMIN_PW)
    r = laptop.post("/api/v1/auth/logout-all", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json() == {"user": "alice", "sessions_ended": 2}
    assert laptop.get("/api/v1/auth/me").status_code == 401
    assert phone.get("/api/v1/auth/me").status_code == 401
    # positive controls: another user's session and alice's API key still work; she can log in again
    assert root.get("/api/v1/auth/me").json()["user"] == "root"
    assert client.get("/api/v1/auth/me", headers=auth(served.keys["alice"])).json()["user"] == "alice"
    assert _login(served, "alice", ALICE_PW) == 200
    [entry] = _audit(client, served, action="logout.all")
    assert entry["actor"] == "alice" and entry["outcome"] == "ok" and entry["detail"]["sessions_ended"] == 2


def test_log_out_everywhere_with_a_key_ends_the_keys_users_sessions(client, served):
    browser, _ = _browser(served, "alice", ALICE_PW)
    r = client.post("/api/v1/auth/logout-all", headers=auth(served.keys["alice"]))
    assert r.status_code == 200 and r.json()["sessions_ended"] == 1
    assert browser.get("/api/v1/auth/me").status_code == 401
    assert client.post("/api/v1/auth/logout-all").status_code == 401  # and not without a credential


def test_an_admin_ends_another_users_sessions(client, served):
    alice, _ = _browser(served, "alice", ALICE_PW)
    root, root_csrf = _browser(served, "root", ADMIN_PW)
    # a member may not end someone else's sessions
    r = client.delete("/api/v1/users/root/sessions", headers=auth(served.keys["alice"]))
    assert r.status_code == 403
    assert root.get("/api/v1/auth/me").status_code == 200
    r = root.delete("/api/v1/users/alice/sessions", headers={"X-CSRF-Token": root_csrf})
    assert r.status_code == 200 and r.json() == {"user": "alice", "sessions_ended": 1}
    assert alice.get("/api/v1/auth/me").status_code == 401
    assert root.get("/api/v1/auth/me").json()["user"] == "root"  # positive control: the admin's own session stays
    assert client.delete("/api/v1/users/nobody/sessions", headers=auth(served.keys["root"])).status_code == 404
    entries = _audit(client, served, action="user.sessions.end")
    assert [(e["actor"], e["target"], e["outcome"]) for e in entries] == [
        ("alice", None, "denied"), ("root", "alice", "ok"), ("root", "nobody", "denied")]


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_user_logout(client, served, as_json):
    import json

    from typer.testing import CliRunner

    from bastion.cli.app import app

    alice, _ = _browser(served, "alice", ALICE_PW)
    root, _ = _browser(served, "root", ADMIN_PW)
    r = CliRunner().invoke(app, ["--home", str(served.ws.home), "user", "logout", "alice"] + (["--json"] if as_json else []))
    assert r.exit_code == 0, r.output
    if as_json:
        assert json.loads(r.stdout) == {"user": "alice", "sessions_ended": 1}
    else:
        assert "ended 1 web session(s) of alice" in r.output
    assert alice.get("/api/v1/auth/me").status_code == 401
    assert root.get("/api/v1/auth/me").status_code == 200
    r = CliRunner().invoke(app, ["--home", str(served.ws.home), "user", "logout", "nobody"])
    assert r.exit_code == 2 and "unknown user 'nobody'" in r.output
    entries = _audit(client, served, action="user.sessions.end")
    assert [(e["via"], e["target"]) for e in entries] == [("cli", "alice")]
