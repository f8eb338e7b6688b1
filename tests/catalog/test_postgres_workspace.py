"""A whole workspace whose catalog is on a real PostgreSQL server (``[catalog] url`` in bastion.toml)."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from bastion.audit import AuditQuery
from bastion.conversations import Turn
from bastion.core.errors import AccessError, CatalogError, ConfigError
from bastion.workspace import Workspace
from tests.catalog.conftest import fill, open_workspace, seen

pytestmark = pytest.mark.services


def test_a_workspace_keeps_users_documents_keys_audit_and_conversations_in_postgresql(tmp_path, pg_url):
    ws = open_workspace(tmp_path / "ws", pg_url)
    assert ws.catalog.engine.dialect.name == "postgresql"
    fill(ws, tmp_path / "docs")

    # users, groups and roles
    assert ws.principal("alice").groups == {"finance", "staff"}
    assert ws.accounts.role("alice") == "editor" and ws.accounts.role("bob") == "member"
    assert {p.user_id for p in ws.directory.users()} == {"alice", "bob"}

    # the finance folder: alice (finance) finds it, bob (staff) does not; both find the public one
    assert any(p.endswith("payroll.md") for p in seen(ws, "quartermaster salary band", "alice"))
    assert not any(p.endswith("payroll.md") for p in seen(ws, "quartermaster salary band", "bob"))
    assert any(p.endswith("travel.md") for p in seen(ws, "hotel cap per night", "bob"))

    # a second sync finds nothing changed
    again = ws.sync()
    assert {r.source: (r.documents_added, r.documents_updated, r.documents_deleted, r.documents_unchanged)
            for r in again} == {"public": (0, 0, 0, 2), "finance": (0, 0, 0, 1)}

    # API keys and web sessions
    key_id, key = ws.accounts.create_key("bob", name="ci", expires_in=timedelta(days=1))
    with pytest.raises(AccessError, match="too long"):  # PostgreSQL enforces the column's length
        ws.accounts.create_key("bob", name="k" * 201)
    ws.accounts.create_key("bob", name="k" * 200)  # positive control: the longest name fits
    assert ws.accounts.authenticate_key(key).user_id == "bob"
    ws.accounts.revoke_key(key_id)
    assert not ws.accounts.authenticate_key(key).active  # known, but refused as revoked
    token, _ = ws.accounts.create_session("alice", timedelta(hours=1))
    assert ws.accounts.session(token)[0] == "alice"
    ws.accounts.set_password("alice", "correct horse battery")  # ends her sessions
    assert ws.accounts.session(token) is None
    assert ws.accounts.verify_password("alice", "correct horse battery").ok
    assert not ws.accounts.verify_password("alice", "wrong").ok

    # the audit log
    ws.audit.record(actor="bob", via="key", action="search", outcome="ok", target="hotel cap")
    ws.audit.record(actor="alice", via="session", action="login", outcome="ok")
    assert [e["action"] for e in ws.audit.query(AuditQuery(actor="bob"))] == ["search"]
    assert [e["actor"] for e in ws.audit.query(AuditQuery(newest_first=True))][:2] == ["alice", "bob"]
    # PostgreSQL text cannot hold NUL: such a value is stored with U+FFFD instead of failing the request
    ws.audit.record(actor="bob", via="key", action="search", outcome="ok", target="hotel\x00cap")
    assert ws.audit.query(AuditQuery(newest_first=True, limit=1))[0]["target"] == "hotel\ufffdcap"
    assert ws.audit.query(AuditQuery(after_id=2**40)) == []  # an id past the column's range finds nothing

    # conversations: each user sees only their own
    turn = Turn(question="What is the hotel cap?", answer="180 euro", citations=[], decision="extractive",
                message=None, lineage_id=None)
    conv = ws.conversations.append("bob", None, turn)
    ws.conversations.append("bob", conv.id, turn)
    assert [(c.title, c.turns) for c in ws.conversations.list("bob")] == [("What is the hotel cap?", 2)]
    assert ws.conversations.list("alice") == []

    ws.close()
    assert not (tmp_path / "ws" / "data" / "catalog.db").exists()  # nothing went to the SQLite file
    reopened = open_workspace(tmp_path / "ws")  # another process of the same workspace sees the same catalog
    assert any(p.endswith("payroll.md") for p in seen(reopened, "quartermaster salary band", "alice"))
    reopened.close()


def test_an_unreachable_catalog_server_is_a_clear_error_naming_it(tmp_path):
    ws = open_workspace(tmp_path / "ws0")  # positive control: the default SQLite catalog opens
    ws.directory.add_user("alice")
    home = tmp_path / "ws"
    home.mkdir()
    (home / "bastion.toml").write_text('[catalog]\nurl = "postgresql+psycopg://bastion@127.0.0.1:1/knowledge"\n'
                                       "connect_timeout_s = 2\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"'knowledge' at 127\.0\.0\.1:1 \(user 'bastion'\)"):
        _ = Workspace.open(home).catalog


def test_a_password_in_the_catalog_url_is_refused_and_never_echoed(tmp_path, monkeypatch):
    home = tmp_path / "ws"
    home.mkdir()
    (home / "bastion.toml").write_text('[catalog]\nurl = "postgresql+psycopg://bastion:S3cretPw@db:5432/kb"\n',
                                       encoding="utf-8")
    with pytest.raises(ConfigError, match="password_env") as caught:
        Workspace.open(home)
    assert "S3cretPw" not in str(caught.value)
    # from the environment too: the variable is named, the value is not shown
    (home / "bastion.toml").write_text("", encoding="utf-8")
    monkeypatch.setenv("BASTION_CATALOG__URL", "postgresql+psycopg://bastion:S3cretPw@db:5432/kb")
    with pytest.raises(ConfigError, match="BASTION_CATALOG__URL") as caught:
        Workspace.open(home)
    assert "S3cretPw" not in str(caught.value)


def test_the_password_comes_from_the_variable_named_by_password_env(tmp_path, pg_url, monkeypatch):
    from sqlalchemy import create_engine, text

    from tests.catalog.conftest import PG_SERVER

    role = f"bastion_u_{uuid.uuid4().hex[:12]}"
    database = pg_url.rsplit("/", 1)[1]
    admin = create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-from-env'"))
        conn.execute(text(f"ALTER DATABASE {database} OWNER TO {role}"))
    try:
        url = pg_url.replace("postgres@", f"{role}@")
        home = tmp_path / "ws"
        home.mkdir()
        (home / "bastion.toml").write_text(f'[catalog]\nurl = "{url}"\npassword_env = "KB_DB_PASSWORD"\n',
                                           encoding="utf-8")
        with pytest.raises(CatalogError, match="KB_DB_PASSWORD, which is not set"):
            _ = Workspace.open(home).catalog
        monkeypatch.setenv("KB_DB_PASSWORD", "pw-from-env")
        ws = Workspace.open(home)
        assert str(ws.catalog.engine.url.username) == role
        ws.directory.add_user("alice")
        assert ws.principal("alice").user_id == "alice"
        assert "pw-from-env" not in repr(ws.catalog.engine.url)
        ws.close()
    finally:
        with admin.connect() as conn:  # the database first: it and all in it belong to the role
            conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()
