"""Finding 11: a huge key expiry answered 500 (OverflowError) and the failure was not audited. Now
durations are capped at 3650 days and refused with a 422 problem; every failed request, 500s
included, leaves an audit entry, and a 500 tells the client nothing of the error."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import auth

PROBLEM = "application/problem+json"
ABSURD = ["999999999d", "3000000w", "99999999999d", "3651d", "99999999999999999s", "0d", "-5d", "1e9d", "soon"]


def _audit(client, served, **filters) -> list[dict]:
    return client.get("/api/v1/audit", params=filters, headers=auth(served.keys["root"])).json()["entries"]


def test_absurd_key_expiries_are_a_422_problem_and_audited(client, served):
    for expires in ABSURD:
        r = client.post("/api/v1/keys", json={"expires_in": expires}, headers=auth(served.keys["bob"]))
        assert r.status_code == 422, (expires, r.status_code, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["type"] == "urn:bastion:problem:validation" and repr(expires) in r.json()["detail"]
    failed = _audit(client, served, actor="bob", action="key.create")
    assert [(e["outcome"], e["detail"]["status"]) for e in failed] == [("failed", 422)] * len(ABSURD)
    # positive control: the longest allowed lifetime, and an ordinary one, make working keys
    for expires, days in (("3650d", 3650), ("30d", 30)):
        r = client.post("/api/v1/keys", json={"expires_in": expires}, headers=auth(served.keys["bob"]))
        assert r.status_code == 201, r.text
        expires_at = datetime.fromisoformat(r.json()["expires_at"].rstrip("Z")).replace(tzinfo=UTC)
        lifetime = expires_at - datetime.now(UTC)
        assert abs(lifetime - timedelta(days=days)) < timedelta(minutes=5)
        assert client.get("/api/v1/auth/me", headers=auth(r.json()["key"])).json()["user"] == "bob"


def test_the_cli_caps_key_expiry_too(served):
    from typer.testing import CliRunner

    from bastion.cli.app import app

    home = ["--home", str(served.ws.home)]
    for expires in ("99999999999d", "999999999d", "3000000w", "9" * 5000 + "d"):
        r = CliRunner().invoke(app, home + ["key", "create", "--user", "bob", "--expires", expires])
        assert r.exit_code == 2, (expires[:20], r.output[-300:])
        assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)  # an error message, no crash
    r = CliRunner().invoke(app, home + ["key", "create", "--user", "bob", "--expires", "3000000w"])
    assert "duration '3000000w' is too long: at most 3650d" in r.output
    r = CliRunner().invoke(app, home + ["key", "create", "--user", "bob", "--expires", "3650d", "--json"])
    assert r.exit_code == 0 and '"active": true' in r.stdout  # positive control
    r = CliRunner().invoke(app, home + ["monitor", "ack", str(2**70)])
    assert r.exit_code == 2 and "Traceback" not in r.output  # an out-of-range id is a usage error


def test_out_of_range_audit_times_are_a_422(client, served):
    root = auth(served.keys["root"])
    for since in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"):
        r = client.get("/api/v1/audit", params={"since": since}, headers=root)
        assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), (since, r.text)
    r = client.get("/api/v1/audit", params={"since": "2020-01-01T00:00:00+01:00"}, headers=root)
    assert r.status_code == 200 and r.json()["entries"]  # positive control
    assert [e["detail"]["status"] for e in _audit(client, served, action="audit.read", outcome="failed")] == [422, 422]


def test_config_durations_are_capped():
    from bastion.core.config import MonitorThresholds, parse_duration

    for bad in ("99999999d", "1e400d", "inf" + "d", "nan" + "h"):
        with pytest.raises(ValueError):
            MonitorThresholds(sync_sla=bad)
    assert parse_duration("3650d") == 3650 * 86400 and MonitorThresholds(sync_sla="3d").sync_sla == "3d"


@pytest.fixture
def no_raise(served):
    with TestClient(served.app, raise_server_exceptions=False) as c:
        yield c


def test_a_server_error_is_audited_and_tells_the_client_nothing(no_raise, served, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret detail: /srv/bastion/internal.db is locked")

    monkeypatch.setattr(served.ws, "search", boom)
    r = no_raise.post("/api/v1/search", json={"query": "revenue"}, headers=auth(served.keys["bob"]))
    assert r.status_code == 500 and r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["type"] == "urn:bastion:problem:internal"
    assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
    [entry] = _audit(no_raise, served, actor="bob", action="search")
    assert entry["outcome"] == "error" and entry["detail"]["status"] == 500
    assert entry["request_id"] == r.headers["x-request-id"]
    # positive control: the route works again once the fault is gone, and that is audited as ok
    monkeypatch.undo()
    r = no_raise.post("/api/v1/search", json={"query": "revenue"}, headers=auth(served.keys["bob"]))
    assert r.status_code == 200 and r.json()["hits"]
    assert [e["outcome"] for e in _audit(no_raise, served, actor="bob", action="search")] == ["error", "ok"]


def test_an_unexpected_bastion_error_is_a_bare_500(no_raise, served, monkeypatch):
    from bastion.core.errors import StoreError

    def boom(*args, **kwargs):
        raise StoreError("index file /srv/bastion/data/index.lance is corrupt")

    monkeypatch.setattr(served.ws, "search", boom)
    r = no_raise.post("/api/v1/search", json={"query": "revenue"}, headers=auth(served.keys["bob"]))
    assert r.status_code == 500 and "/srv/bastion" not in r.text and "StoreError" not in r.text
    assert _audit(no_raise, served, actor="bob", action="search")[-1]["outcome"] == "error"


def test_a_server_error_before_authentication_is_audited_too(no_raise, served, monkeypatch):
    accounts = served.app.state.server.accounts

    def boom(*args, **kwargs):
        raise RuntimeError("catalog on fire")

    monkeypatch.setattr(accounts, "verify_password", boom)
    r = no_raise.post("/api/v1/auth/login", json={"username": "alice", "password": "whatever-123"})
    assert r.status_code == 500 and "fire" not in r.text
    [entry] = _audit(no_raise, served, action="request", outcome="error")
    assert entry["actor"] is None and entry["target"] == "/api/v1/auth/login" and entry["detail"]["status"] == 500
