"""A real workspace whose chunk index is on PostgreSQL + pgvector (``[store] backend = "pgvector"``):
``bastion sync`` and ``bastion search`` through the CLI, ACL denials with positive controls, rebuild,
and the configuration errors that name the fix."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.core.errors import ConfigError
from bastion.stores.pgvector import PgVectorStore
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write

pytestmark = pytest.mark.services


def pgvector_workspace(home: Path, url: str, extra: str = "") -> Workspace:
    Workspace.init(home).close()
    (home / "bastion.toml").write_text(f'[store]\nbackend = "pgvector"\nurl = "{url}"\n{extra}', encoding="utf-8")
    return Workspace.open(home, embedder=HashEmbedder())


@pytest.fixture
def home(tmp_path, pg_url, monkeypatch):
    docs = tmp_path / "docs"
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    write(docs / "finance" / "q3.md", "# Q3 results\n\nQ3 2026 revenue was EUR 48.2 million, up 9 percent.\n")
    write(docs / "hr" / "travel.md", "# Travel policy\n\nHotel costs are capped at EUR 180 per night in Europe.\n")
    write(docs / "hr" / "报销.md", "# 差旅报销\n\n住宿费用每晚不超过 180 欧元。\n")
    h = tmp_path / "ws"
    ws = pgvector_workspace(h, pg_url)
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", docs, acl="everyone")
    ws.close()
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(h, embedder=HashEmbedder()))
    return h


def bastion(home: Path, *args: str) -> str:
    result = CliRunner().invoke(cli.app, ["--home", str(home), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_sync_and_search_through_the_cli_keep_the_acl(home, tmp_path):
    bastion(home, "sync")
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert isinstance(ws.store, PgVectorStore) and ws.store.count() == 3
    assert not (home / "data" / "index").exists()  # nothing written to the embedded index
    for mode in ("hybrid", "dense", "bm25"):
        alice = {h.path for h in ws.search("Q3 revenue million hotel", ws.principal("alice"), 5, mode=mode)}
        bob = {h.path for h in ws.search("Q3 revenue million hotel", ws.principal("bob"), 5, mode=mode)}
        assert "finance/q3.md" in alice  # positive control: finance reads it
        assert "finance/q3.md" not in bob and bob  # bob is denied it, and still finds what he may read
    assert "48.2 million" in bastion(home, "search", "Q3 revenue", "--as", "alice")
    assert "48.2 million" not in bastion(home, "search", "Q3 revenue", "--as", "bob")
    hits = ws.search("住宿费用", ws.principal("bob"), 3, mode="bm25")
    assert hits and hits[0].path == "hr/报销.md"  # Chinese BM25 through the workspace

    # a changed ACL and a deleted file take effect at the next sync
    write(tmp_path / "docs" / "hr" / ".bastion-acl", "group:hr\n")
    (tmp_path / "docs" / "finance" / "q3.md").unlink()
    [report] = ws.sync()
    assert report.documents_failed == 0
    assert not ws.search("hotel costs per night", ws.principal("bob"), 5)
    assert not ws.search("Q3 revenue million", ws.principal("alice"), 5, mode="bm25")
    ws.directory.add_user("hana", groups=["hr"])
    assert "hr/travel.md" in {h.path for h in ws.search("hotel costs per night", ws.principal("hana"), 5)}


def test_rebuild_drops_the_tables_and_reindexes(home):
    bastion(home, "sync")
    ws = Workspace.open(home, embedder=HashEmbedder())
    before = sorted(ws.store.chunk_keys())
    assert before
    ws.rebuild_index()
    ws2 = Workspace.open(home, embedder=HashEmbedder(dimension=32))  # another embedder: refused until a rebuild
    with pytest.raises(Exception, match="bastion rebuild"):
        ws2.store.count()
    ws2.rebuild_index()
    assert ws2.store.count() == len(before) and ws2.store.dimension == 32
    assert ws2.search("hotel costs", ws2.principal("bob"), 3)


def test_pgvector_without_a_postgresql_database_is_a_config_error_naming_the_fix(tmp_path):
    home = tmp_path / "ws"
    Workspace.init(home).close()
    (home / "bastion.toml").write_text('[store]\nbackend = "pgvector"\n', encoding="utf-8")
    ws = Workspace.open(home, embedder=HashEmbedder())
    with pytest.raises(ConfigError, match=r"\[store\] url.*\[catalog\] url"):
        ws.store.count()
    (home / "bastion.toml").write_text('[store]\nbackend = "pgvector"\nurl = "sqlite:///x.db"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="store.url.*PostgreSQL"):
        Workspace.open(home, embedder=HashEmbedder())
    (home / "bastion.toml").write_text('[store]\nbackend = "pgvector"\nurl = "postgresql://u:hunter2@db/x"\n',
                                       encoding="utf-8")
    with pytest.raises(ConfigError, match="password_env") as err:
        Workspace.open(home, embedder=HashEmbedder())
    assert "hunter2" not in str(err.value)


def test_the_store_defaults_to_the_catalogs_postgresql_database(tmp_path, pg_url):
    """``[store] backend = "pgvector"`` alone, with the catalog on PostgreSQL: both live in that database."""
    home = tmp_path / "ws"
    Workspace.init(home).close()
    (home / "bastion.toml").write_text(f'[catalog]\nurl = "{pg_url}"\n[store]\nbackend = "pgvector"\n', encoding="utf-8")
    ws = Workspace.open(home, embedder=HashEmbedder())
    ws.directory.add_user("bob", groups=["staff"])
    docs = write(tmp_path / "docs" / "a.md", "# Canteen\n\nThe canteen opens at noon.\n").parent
    ws.sources.add_folder("docs", docs, acl="group:staff")
    ws.sync()
    assert [h.path for h in ws.search("canteen opens", ws.principal("bob"), 3)] == ["a.md"]
    ws.directory.add_user("eve", groups=["visitors"])
    assert ws.search("canteen opens", ws.principal("eve"), 3) == []
    assert isinstance(ws.store, PgVectorStore) and ws.store.url.database == ws.catalog.engine.url.database


def test_label_vector_copies_from_bastion_toml_follow_syncs_and_rebuilds(home, tmp_path, pg_url):
    """``[store] label_vectors = true``: the exact dense ranking reads the per-label copies, which follow an ACL
    change at the next sync (denial and positive control) and go with ``bastion rebuild``'s dropped tables."""
    from bastion.stores.pgvector_schema import LABELS

    (home / "bastion.toml").write_text(f'[store]\nbackend = "pgvector"\nurl = "{pg_url}"\nlabel_vectors = true\n',
                                       encoding="utf-8")
    bastion(home, "sync")
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert ws.store.label_vectors

    def copies() -> int:
        with ws.store._tx() as cur:
            cur.execute(f"SELECT count(*) FROM {LABELS}")
            return int(cur.fetchone()[0])

    assert copies() == 3  # three documents of one chunk, one label each
    assert "finance/q3.md" in {h.path for h in ws.search("Q3 revenue", ws.principal("alice"), 5, mode="dense")}
    assert "finance/q3.md" not in {h.path for h in ws.search("Q3 revenue", ws.principal("bob"), 5, mode="dense")}
    write(tmp_path / "docs" / "hr" / ".bastion-acl", "group:hr\n")
    [report] = ws.sync()
    assert report.documents_failed == 0
    assert not {h.path for h in ws.search("hotel costs", ws.principal("bob"), 5, mode="dense")} & {"hr/travel.md", "hr/报销.md"}
    ws.directory.add_user("hana", groups=["hr"])
    assert "hr/travel.md" in {h.path for h in ws.search("hotel costs", ws.principal("hana"), 5, mode="dense")}
    ws.rebuild_index()
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert copies() == 3 and ws.store.count() == 3
