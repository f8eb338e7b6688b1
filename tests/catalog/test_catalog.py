"""The catalog: SQLite in WAL mode, migrations that keep data."""
from sqlalchemy import text

from bastion.catalog.db import Catalog
from bastion.directory import Directory


def test_new_catalog_is_at_head_and_in_wal_mode(tmp_path):
    cat = Catalog.for_workspace(tmp_path)
    assert cat.schema_revision() == cat.head_revision() is not None
    with cat.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_migrating_again_keeps_data(tmp_path):
    cat = Catalog.for_workspace(tmp_path)
    Directory(cat).add_user("alice", groups=["finance"])
    cat.close()
    again = Catalog.for_workspace(tmp_path)  # opening migrates to head again: a no-op
    assert Directory(again).principal("alice").groups == {"finance"}


def test_upgrade_from_empty_database_creates_all_tables(tmp_path):
    cat = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}", migrate=False)
    assert cat.schema_revision() is None
    cat.migrate()
    with cat.engine.connect() as conn:
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    assert {"sources", "documents", "document_versions", "ingest_runs", "users", "groups", "memberships",
            "embedding_cache"} <= names
