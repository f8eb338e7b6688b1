"""The catalog: SQLite in WAL mode, migrations that keep data."""
from sqlalchemy import inspect, text

from bastion.catalog.db import Catalog
from bastion.directory import Directory


def test_new_catalog_is_at_head_and_in_wal_mode(tmp_path):
    cat = Catalog.for_workspace(tmp_path)
    assert cat.schema_revision() == cat.head_revision() is not None
    with cat.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_migrating_again_keeps_data(catalog_url):
    cat = Catalog.open(catalog_url)
    Directory(cat).add_user("alice", groups=["finance"])
    cat.close()
    again = Catalog.open(catalog_url)  # opening migrates to head again: a no-op
    assert Directory(again).principal("alice").groups == {"finance"}


def test_upgrade_from_empty_database_creates_all_tables(catalog_url):
    cat = Catalog.open(catalog_url, migrate=False)
    assert cat.schema_revision() is None
    cat.migrate()
    with cat.engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
    assert {"sources", "documents", "document_versions", "ingest_runs", "users", "groups", "memberships",
            "embedding_cache"} <= names


def test_upgrading_a_workspace_from_0002_keeps_users_and_makes_them_members(catalog_url):
    cat = Catalog.open(catalog_url, migrate=False)
    cat.migrate("0002")
    with cat.engine.begin() as conn:  # a workspace of the previous version, written with its schema
        conn.execute(text("INSERT INTO users (id, created_at) VALUES ('alice', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO groups (name, created_at) VALUES ('finance', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO memberships (user_id, group_name) VALUES ('alice', 'finance')"))
    cat.migrate()
    assert cat.schema_revision() == cat.head_revision()
    assert Directory(cat).principal("alice").groups == {"finance"}
    from bastion.accounts import Accounts

    assert Accounts(cat).role("alice") == "member"
    with cat.engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
    assert {"accounts", "api_keys", "web_sessions", "audit_log", "feedback", "sync_jobs"} <= names


import pytest  # noqa: E402


@pytest.mark.services
def test_the_catalog_migrates_on_postgresql_and_keeps_audit_and_lineage_append_only(pg_url):
    """The same migrations on the real PostgreSQL server, in a database of its own that is dropped after."""
    from bastion.audit import AuditLog, AuditQuery

    cat = Catalog.open(pg_url)
    assert cat.schema_revision() == cat.head_revision()
    Directory(cat).add_user("alice", groups=["finance"], role="editor")
    log = AuditLog(cat)
    log.record(actor="alice", via="key", action="search", outcome="ok", target="q3")
    assert [e["actor"] for e in log.query(AuditQuery())] == ["alice"]
    for stmt in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            with cat.engine.begin() as conn:
                conn.execute(text(stmt))
    assert [e["actor"] for e in log.query(AuditQuery())] == ["alice"]
    with cat.engine.connect() as conn:
        triggers = {r[0] for r in conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))}
    assert {"audit_log_no_change", "answer_lineage_no_change"} <= triggers
    from bastion.accounts import Accounts

    assert Accounts(cat).role("alice") == "editor"
    cat.close()


def test_upgrading_from_0003_keeps_runs_and_versions_and_adds_monitoring(catalog_url):
    cat = Catalog.open(catalog_url, migrate=False)
    cat.migrate("0003")
    with cat.engine.begin() as conn:  # a synced workspace of the previous version
        conn.execute(text("INSERT INTO sources (id, name, kind, config, created_at) "
                          "VALUES (1, 'docs', 'folder', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO documents (id, source_id, key, uri, acl, status, current_version_id, created_at, updated_at) "
                          "VALUES ('d1', 1, 'a.md', 'file:///a.md', '[\"everyone\"]', 'active', 'v1', CURRENT_TIMESTAMP, "
                          "CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO document_versions (id, document_id, content_hash, size, status, chunk_count, "
                          "created_at) VALUES ('v1', 'd1', 'h', 10, 'indexed', 2, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO ingest_runs (id, source, status, started_at, embedder_id, counts, errors) "
                          "VALUES (1, 'docs', 'completed', CURRENT_TIMESTAMP, 'e5', '{}', '[]')"))
    cat.migrate()
    assert cat.schema_revision() == cat.head_revision()
    with cat.engine.connect() as conn:
        assert conn.execute(text("SELECT chunk_count, stats FROM document_versions")).one() == (2, None)
        assert conn.execute(text("SELECT status, metrics FROM ingest_runs")).one() == ("completed", None)
        names = set(inspect(conn).get_table_names())
    assert {"alerts", "alert_deliveries", "source_schemas", "embedder_canaries"} <= names
    # a monitor over the upgraded catalog: versions without stats are simply not measured
    from bastion.core.config import MonitoringConfig
    from bastion.monitoring.monitor import Monitor

    with cat.session() as s:
        state = Monitor(cat, MonitoringConfig()).state(s, 1)
    assert state["documents"] == 1 and state["garbled_ratio"] is None
