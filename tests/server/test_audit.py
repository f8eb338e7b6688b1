"""The audit trail: written for every read and change, append-only, exportable, and required."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from tests.server.conftest import auth


def test_reads_changes_and_key_use_are_audited_with_who_what_outcome(client, served):
    ans = client.post("/api/v1/ask", json={"question": "What was the Q3 2026 revenue?"}, headers=auth(served.keys["alice"])).json()
    client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(served.keys["bob"]))
    client.post("/api/v1/users", json={"user": "frank", "groups": ["staff"]}, headers=auth(served.keys["root"]))
    entries = client.get("/api/v1/audit", headers=auth(served.keys["root"])).json()["entries"]
    ask = next(e for e in entries if e["action"] == "ask")
    assert ask["actor"] == "alice" and ask["via"] == "key" and ask["lineage_id"] == ans["lineage_id"]
    assert ask["outcome"] == "ok" and ask["ip"] and ask["detail"]["key_id"] and ask["target"].startswith("What was")
    search = next(e for e in entries if e["action"] == "search")
    assert search["actor"] == "bob" and search["detail"]["hits"]
    add = next(e for e in entries if e["action"] == "user.add")
    assert add["actor"] == "root" and add["target"] == "frank" and add["detail"]["groups"] == ["staff"]
    # filters
    only_alice = client.get("/api/v1/audit", params={"actor": "alice"}, headers=auth(served.keys["root"])).json()["entries"]
    assert {e["actor"] for e in only_alice} == {"alice"}
    by_lineage = client.get("/api/v1/audit", params={"lineage_id": ans["lineage_id"]}, headers=auth(served.keys["root"])).json()
    assert [e["action"] for e in by_lineage["entries"]] == ["ask"]
    newest = client.get("/api/v1/audit", params={"order": "desc", "limit": 2}, headers=auth(served.keys["root"])).json()["entries"]
    assert len(newest) == 2 and newest[0]["id"] > newest[1]["id"] >= max(e["id"] for e in entries)
    older = client.get("/api/v1/audit", params={"order": "desc", "before_id": newest[-1]["id"]},
                       headers=auth(served.keys["root"])).json()["entries"]
    assert older and all(e["id"] < newest[-1]["id"] for e in older)
    users_prefix = client.get("/api/v1/audit", params={"action": "user.*"}, headers=auth(served.keys["root"])).json()["entries"]
    assert {e["action"] for e in users_prefix} == {"user.add"}


def test_export_is_jsonl_for_admins_only(client, served):
    client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(served.keys["bob"]))
    r = client.get("/api/v1/audit/export", headers=auth(served.keys["root"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert any(e["action"] == "search" and e["actor"] == "bob" for e in lines)
    assert client.get("/api/v1/audit/export", headers=auth(served.keys["bob"])).status_code == 403


def test_the_audit_log_refuses_updates_and_deletes(client, served):
    client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(served.keys["bob"]))
    with served.ws.catalog.engine.begin() as conn:
        n = conn.execute(text("SELECT count(*) FROM audit_log")).scalar()
    for stmt in ("UPDATE audit_log SET actor = 'nobody'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            with served.ws.catalog.engine.begin() as conn:
                conn.execute(text(stmt))
    with served.ws.catalog.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() == n
        assert conn.execute(text("SELECT count(*) FROM audit_log WHERE actor = 'bob'")).scalar() >= 1


def test_a_read_fails_when_its_audit_entry_cannot_be_written(client, served, monkeypatch):
    audit = served.app.state.server.audit

    def broken(**_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(audit, "record", broken)
    def content(r) -> str:  # the body without its random request id (which may contain "180")
        return json.dumps({k: v for k, v in r.json().items() if k != "request_id"})

    r = client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(served.keys["bob"]))
    assert r.status_code == 503 and r.json()["type"] == "urn:bastion:problem:audit-unavailable"
    assert "hits" not in content(r) and "180" not in content(r)
    r = client.post("/api/v1/ask", json={"question": "What is the hotel cap?"}, headers=auth(served.keys["bob"]))
    assert r.status_code == 503 and "180" not in content(r) and "request_id" in r.json()
    monkeypatch.undo()
    assert client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(served.keys["bob"])).status_code == 200


def test_streamed_answer_is_audited_before_the_answer_event(client, served):
    with client.stream("POST", "/api/v1/ask", json={"question": "What was the Q3 2026 revenue?", "stream": True},
                       headers=auth(served.keys["alice"])) as r:
        body = "".join(r.iter_text())
    events = [block for block in body.split("\n\n") if block.strip()]
    assert events[-1].startswith("event: answer")
    answer = json.loads(events[-1].split("data: ", 1)[1])
    assert "48.2" in answer["answer"] and answer["citations"][0]["path"] == "finance/q3.md"
    from bastion.audit import AuditLog, AuditQuery

    assert AuditLog(served.ws.catalog).query(AuditQuery(lineage_id=answer["lineage_id"]))[0]["actor"] == "alice"


def test_cli_keys_roles_and_their_audit(served, tmp_path):
    from typer.testing import CliRunner

    from bastion.cli.app import app

    home = ["--home", str(served.ws.home)]
    runner = CliRunner()
    r = runner.invoke(app, home + ["user", "add", "gina", "--groups", "it", "--role", "admin", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"user": "gina", "groups": ["it"], "role": "admin",
                                                         "new_groups": [], "replaced_groups": None}
    r = runner.invoke(app, home + ["key", "create", "--user", "gina", "--expires", "30d", "--json"])
    created = json.loads(r.stdout)
    assert created["key"].startswith("bst_") and created["expires_at"] and created["active"]
    listed = json.loads(runner.invoke(app, home + ["key", "list", "--user", "gina", "--json"]).stdout)
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    from bastion.accounts import Accounts

    acc = Accounts(served.ws.catalog)
    assert acc.authenticate_key(created["key"]).user_id == "gina"
    assert runner.invoke(app, home + ["key", "revoke", created["id"]]).exit_code == 0
    assert not acc.authenticate_key(created["key"]).active
    bad = runner.invoke(app, home + ["key", "create", "--user", "gina", "--expires", "soon"])
    assert bad.exit_code == 2 and "invalid duration 'soon'" in bad.output
    bad = runner.invoke(app, home + ["user", "add", "hal", "--role", "root"])
    assert bad.exit_code == 2 and "invalid role 'root'" in bad.output
    audit = json.loads(runner.invoke(app, home + ["audit", "list", "--action", "key.*", "--json"]).stdout)
    assert [e["action"] for e in audit] == ["key.create", "key.revoke"] and all(e["via"] == "cli" for e in audit)


def test_password_from_stdin(served):
    from typer.testing import CliRunner

    from bastion.accounts import Accounts
    from bastion.cli.app import app

    r = CliRunner().invoke(app, ["--home", str(served.ws.home), "user", "passwd", "bob", "--password-stdin"],
                           input="a-long-password\n")
    assert r.exit_code == 0
    assert Accounts(served.ws.catalog).verify_password("bob", "a-long-password").ok
    r = CliRunner().invoke(app, ["--home", str(served.ws.home), "user", "passwd", "bob", "--password-stdin"], input="short\n")
    assert r.exit_code == 2 and "too short" in r.output
    assert Accounts(served.ws.catalog).verify_password("bob", "a-long-password").ok
