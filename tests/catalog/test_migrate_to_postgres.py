"""`bastion catalog migrate-to`: a synced SQLite workspace catalog copied into PostgreSQL, checked, and used."""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import sqlite3
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from bastion.audit import AuditQuery
from bastion.cli import app as cli
from bastion.conversations import Turn
from tests.catalog.conftest import fill, open_workspace, seen

pytestmark = pytest.mark.services

QUERIES = ["quartermaster salary band", "hotel cap per night", "annual leave days"]


def _settle(path) -> None:
    """Fold the WAL into the database file now: a connection of the test's own workspace that the garbage
    collector closes later would otherwise checkpoint it then, changing the file while migrate-to reads."""
    gc.collect()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(ws) -> dict:
    """What users of the workspace notice: who finds what, who exists, keys, audit entries, conversations."""
    return {
        "found": {(u, q): seen(ws, q, u) for u in ("alice", "bob") for q in QUERIES},
        "users": sorted((p.user_id, sorted(p.groups)) for p in ws.directory.users()),
        "roles": ws.accounts.roles(),
        "keys": sorted((k.id, k.user_id, k.active) for k in ws.accounts.list_keys()),
        "audit": [(e["id"], e["actor"], e["action"]) for e in ws.audit.query(AuditQuery(limit=1000))],
        "conversations": [(c.title, c.turns) for c in ws.conversations.list("bob")],
        "indexed": (ws.index_status().documents, ws.index_status().sources),
    }


def test_a_synced_workspace_moves_to_postgresql_and_finds_the_same(tmp_path, pg_url):
    home = tmp_path / "ws"
    ws = open_workspace(home)
    fill(ws, tmp_path / "docs")
    _, key = ws.accounts.create_key("bob", name="ci", expires_in=timedelta(days=1))
    revoked, _ = ws.accounts.create_key("alice")
    ws.accounts.revoke_key(revoked)
    ws.accounts.create_session("alice", timedelta(hours=1))
    for action in ("search", "ask", "login"):
        ws.audit.record(actor="bob", via="key", action=action, outcome="ok")
    turn = Turn(question="What is the hotel cap?", answer="180 euro", citations=[], decision="extractive",
                message=None, lineage_id=None)
    conv = ws.conversations.append("bob", None, turn)
    ws.conversations.append("bob", conv.id, turn)
    before = _state(ws)
    assert any(p.endswith("payroll.md") for p in before["found"][("alice", QUERIES[0])])  # alice reads finance
    assert not any(p.endswith("payroll.md") for p in before["found"][("bob", QUERIES[0])])  # bob does not
    ws.close()
    source = home / "data" / "catalog.db"
    _settle(source)
    digest = _digest(source)

    result = CliRunner().invoke(cli.app, ["--home", str(home), "catalog", "migrate-to", pg_url, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    tables = {t["table"]: t for t in out["tables"]}
    assert all(t["ok"] for t in tables.values())
    assert tables["users"]["target_rows"] == 2 and tables["documents"]["target_rows"] == 3
    assert tables["audit_log"]["source_rows"] == len(before["audit"])
    assert out["config"] == f'[catalog]\nurl = "{pg_url}"'
    assert _digest(source) == digest  # the source file was only read

    (home / "bastion.toml").write_text((home / "bastion.toml").read_text() + "\n" + out["config"] + "\n")
    moved = open_workspace(home)
    assert moved.catalog.engine.dialect.name == "postgresql"
    after = _state(moved)
    migrated = after["audit"].pop()  # the copy is audited in the new catalog
    assert migrated[2] == "catalog.migrate_to"
    assert after == before
    assert moved.accounts.authenticate_key(key).user_id == "bob"
    # ids the database numbers itself continue after the copied ones
    assert moved.audit.record(actor="bob", via="key", action="search", outcome="ok") > migrated[0]
    assert {r.source: r.documents_unchanged for r in moved.sync()} == {"public": 2, "finance": 1}
    moved.close()
    assert _digest(source) == digest

    again = CliRunner().invoke(cli.app, ["--home", str(home), "catalog", "migrate-to", pg_url])
    assert again.exit_code == 2
    assert "already holds catalog rows" in again.output and "--force" in again.output
    still = open_workspace(home)
    assert len(still.audit.query(AuditQuery(limit=1000))) == len(before["audit"]) + 2  # nothing replaced
    still.close()

    forced = CliRunner().invoke(cli.app, ["--home", str(home), "catalog", "migrate-to", pg_url, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "audit_log" in forced.output and f'url = "{pg_url}"' in forced.output
    replaced = open_workspace(home)
    assert _state(replaced)["found"] == before["found"]
    replaced.close()


def test_a_password_in_the_target_url_is_refused_and_not_echoed(tmp_path):
    home = tmp_path / "ws"
    open_workspace(home).close()
    result = CliRunner().invoke(cli.app, ["--home", str(home), "catalog", "migrate-to",
                                          "postgresql+psycopg://bastion:S3cretPw@127.0.0.1:5432/kb"])
    assert result.exit_code == 2
    assert "password_env" in result.output and "S3cretPw" not in result.output


def test_a_catalog_at_an_older_schema_is_refused_and_left_as_it_was(tmp_path, pg_url):
    from bastion.catalog.copy import copy_catalog
    from bastion.catalog.db import Catalog
    from bastion.core.errors import CatalogError

    source = tmp_path / "catalog.db"
    old = Catalog.open(f"sqlite:///{source}", migrate=False)
    old.migrate("0008")
    old.close()  # closed: its journal is in the file
    digest = _digest(source)
    target = Catalog.open(pg_url)
    with pytest.raises(CatalogError, match=r"revision 0008, this Bastion's is \d+: open the workspace once"):
        copy_catalog(source, target)
    assert _digest(source) == digest
    Catalog.open(f"sqlite:///{source}").close()  # positive control: upgraded, it copies
    assert {r.table: r.ok for r in copy_catalog(source, target)}["users"]
    target.close()
