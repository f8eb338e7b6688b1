"""The pgvector store in the catalog's own PostgreSQL database: a sync writes a batch's chunks and
marks its documents indexed in ONE transaction (and deletes a vanished document's chunks with its
catalog update), so the index and the catalog never disagree, not even after an error or a kill -9
between the two. A store in another database keeps the two-commit protocol.

The failure between the chunk write and the catalog update is a real one: a trigger on the catalog's
``documents`` table refuses the update, after the chunks were written in the same transaction."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bastion.catalog.models import DocumentRow, DocumentVersionRow, IngestRunRow
from bastion.stores.pgvector import PgVectorStore
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write
from tests.ingest.test_crash import CHILD, _assert_one_version_per_document, _mutate, _workspace

pytestmark = pytest.mark.services

# tests/ingest/test_crash.py's child, announcing each catalog commit that marks documents indexed (step 4 of a
# batch) and waiting there: the parent kills it at that moment, when the batch's chunks are already written
KILLED_AT_STEP_4 = CHILD.replace("from bastion.workspace import Workspace\n", '''from bastion.workspace import Workspace
from sqlalchemy import event
from sqlalchemy.orm import Session
from bastion.catalog.models import DocumentRow

def before_commit(session):
    if any(isinstance(row, DocumentRow) and row.status == "active" for row in session.dirty):
        print("STEP-4", flush=True)
        time.sleep(0.3)
event.listen(Session, "before_commit", before_commit)
''', 1)

OLD = "# Canteen\n\nThe canteen opens at noon on weekdays.\n"
NEW = "# Canteen\n\nThe canteen now serves ramen from eleven.\n"


def open_workspace(home: Path, catalog_url: str, store_url: str | None = None) -> Workspace:
    store = f'url = "{store_url}"\n' if store_url else ""  # unset: the catalog's database
    (home / "bastion.toml").write_text(f'[catalog]\nurl = "{catalog_url}"\n[store]\nbackend = "pgvector"\n{store}',
                                       encoding="utf-8")
    return Workspace.open(home, embedder=HashEmbedder())


@pytest.fixture
def other_db_url(pg_server) -> Iterator[str]:
    """A second database on the same server."""
    name = f"other{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    pg_server.psql(f"CREATE DATABASE {name};")
    yield pg_server.get_uri(database=name, driver="psycopg").replace("postgres:@", "postgres@", 1)
    pg_server.psql(f"DROP DATABASE {name} WITH (FORCE);")


def make_workspace(tmp_path: Path, catalog_url: str, store_url: str | None = None) -> tuple[Workspace, Path]:
    home = tmp_path / "ws"
    Workspace.init(home).close()
    ws = open_workspace(home, catalog_url, store_url)
    ws.directory.add_user("bob", groups=["staff"])
    docs = tmp_path / "docs"
    write(docs / "canteen.md", OLD)
    write(docs / "travel.md", "# Travel\n\nHotel costs are capped at EUR 180 per night.\n")
    ws.sources.add_folder("docs", docs, acl="group:staff")
    return ws, docs


def last_run(ws: Workspace) -> IngestRunRow:
    with ws.catalog.session() as s:
        run = s.scalars(select(IngestRunRow).order_by(IngestRunRow.id.desc())).first()
        assert run is not None
        return run


def found(ws: Workspace, words: str) -> set[str]:
    """Paths of the BM25 hits of ``words`` for bob (who may read the folder)."""
    return {h.path for h in ws.search(words, ws.principal("bob"), 5, mode="bm25")}


def refuse_catalog_updates(ws: Workspace, when: str) -> None:
    """A trigger on the catalog's documents table that raises on the updates ``when`` matches."""
    with ws.catalog.engine.begin() as conn:
        conn.exec_driver_sql("CREATE OR REPLACE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN RAISE EXCEPTION 'refused by the test trigger'; END $$")
        conn.exec_driver_sql(f"CREATE TRIGGER test_refuse BEFORE UPDATE ON documents FOR EACH ROW WHEN ({when}) "
                             "EXECUTE FUNCTION test_refuse()")


def allow_catalog_updates(ws: Workspace) -> None:
    with ws.catalog.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER test_refuse ON documents")


def index_agrees_with_catalog(ws: Workspace) -> None:
    """Every document's chunks in the index are exactly those of the version the catalog calls current."""
    with ws.catalog.session() as s:
        current = {d.id: d.current_version_id for d in s.scalars(select(DocumentRow))}
        counts = {v.id: v.chunk_count for v in s.scalars(select(DocumentVersionRow))}
    index: dict[tuple[str, str], int] = {}
    for _, doc, version in ws.store.chunk_keys():
        index[(doc, version)] = index.get((doc, version), 0) + 1
    expected = {(doc, v): counts[v] for doc, v in current.items() if v is not None and counts[v]}
    assert index == expected


def test_same_database_syncs_searches_and_deletes_in_one_transaction(tmp_path, pg_url):
    # the store's URL spelled differently from the catalog's (another application_name): still the same database
    ws, docs = make_workspace(tmp_path, pg_url, pg_url + "&application_name=bastion-store")
    [report] = ws.sync()
    assert report.documents_added == 2 and report.documents_failed == 0
    assert last_run(ws).metrics["index_commit"] == "one-transaction"
    assert isinstance(ws.store, PgVectorStore) and ws.store.shares_database_with(ws.catalog)
    assert found(ws, "canteen noon") == {"canteen.md"}
    ws.directory.add_user("eve", groups=["visitors"])
    assert ws.search("canteen noon", ws.principal("eve"), 5) == []  # the ACL holds on this path too
    index_agrees_with_catalog(ws)

    write(docs / "canteen.md", NEW)
    (docs / "travel.md").unlink()
    [report] = ws.sync()
    assert report.documents_updated == 1 and report.documents_deleted == 1
    assert found(ws, "ramen eleven") == {"canteen.md"} and found(ws, "noon") == set()
    assert found(ws, "hotel costs night") == set()
    index_agrees_with_catalog(ws)
    assert ws.sync()[0].chunks_written == 0  # unchanged: nothing written


def test_an_error_after_the_chunk_write_keeps_the_old_chunks_and_catalog(tmp_path, pg_url):
    ws, docs = make_workspace(tmp_path, pg_url)
    ws.sync()
    with ws.catalog.session() as s:
        doc_id, old_version = s.execute(select(DocumentRow.id, DocumentRow.current_version_id)
                                        .where(DocumentRow.key == "canteen.md")).one()

    write(docs / "canteen.md", NEW)
    refuse_catalog_updates(ws, "NEW.current_version_id IS DISTINCT FROM OLD.current_version_id")
    with pytest.raises(Exception, match="refused by the test trigger"):
        ws.sync()
    assert last_run(ws).status == "failed" and last_run(ws).metrics["index_commit"] == "one-transaction"
    # the chunk write was rolled back with the refused catalog update: the old text, never the new
    assert found(ws, "canteen noon") == {"canteen.md"}
    assert found(ws, "ramen eleven") == set()
    assert {v for _, d, v in ws.store.chunk_keys() if d == doc_id} == {old_version}
    with ws.catalog.session() as s:
        assert s.get(DocumentRow, doc_id).current_version_id == old_version
    index_agrees_with_catalog(ws)

    # positive control: with the update allowed, the new text replaces the old; the delete path: a vanished
    # file whose catalog update is refused keeps its chunks and its catalog row, both
    (docs / "travel.md").unlink()
    allow_catalog_updates(ws)
    refuse_catalog_updates(ws, "NEW.status = 'deleted'")
    with pytest.raises(Exception, match="refused by the test trigger"):
        ws.sync()
    assert found(ws, "ramen eleven") == {"canteen.md"} and found(ws, "noon") == set()
    assert found(ws, "hotel costs night") == {"travel.md"}
    index_agrees_with_catalog(ws)

    # and once the catalog accepts it, the deletion goes through
    allow_catalog_updates(ws)
    [report] = ws.sync()
    assert report.documents_failed == 0 and report.documents_deleted == 1
    assert found(ws, "hotel costs night") == set() and found(ws, "ramen eleven") == {"canteen.md"}
    index_agrees_with_catalog(ws)


def test_a_store_in_another_database_keeps_two_commits(tmp_path, pg_url, other_db_url):
    ws, docs = make_workspace(tmp_path, pg_url, other_db_url)
    [report] = ws.sync()
    assert report.documents_added == 2
    assert last_run(ws).metrics["index_commit"] == "two-step"
    assert isinstance(ws.store, PgVectorStore) and not ws.store.shares_database_with(ws.catalog)
    assert found(ws, "canteen noon") == {"canteen.md"}

    # two commits: the refused catalog update cannot take back the committed chunk write (the next sync repairs it)
    write(docs / "canteen.md", NEW)
    refuse_catalog_updates(ws, "NEW.current_version_id IS DISTINCT FROM OLD.current_version_id")
    with pytest.raises(Exception, match="refused by the test trigger"):
        ws.sync()
    assert found(ws, "ramen eleven") == {"canteen.md"}
    allow_catalog_updates(ws)
    [report] = ws.sync()
    assert report.documents_updated == 1 and found(ws, "noon") == set()
    index_agrees_with_catalog(ws)


def test_removing_a_source_deletes_its_chunks_and_rows_in_one_transaction(tmp_path, pg_url):
    ws, _docs = make_workspace(tmp_path, pg_url)
    other = tmp_path / "other"
    write(other / "gym.md", "# Gym\n\nThe gym opens at six in the morning.\n")
    ws.sources.add_folder("other", other, acl="group:staff")
    ws.sync()
    assert found(ws, "canteen noon") == {"canteen.md"} and found(ws, "gym morning") == {"gym.md"}
    with ws.catalog.engine.begin() as conn:  # the last step of the removal fails: deleting the source row
        conn.exec_driver_sql("CREATE OR REPLACE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN RAISE EXCEPTION 'refused by the test trigger'; END $$")
        conn.exec_driver_sql("CREATE TRIGGER test_refuse BEFORE DELETE ON sources FOR EACH ROW EXECUTE FUNCTION "
                             "test_refuse()")
    with pytest.raises(Exception, match="refused by the test trigger"):
        ws.remove_source("docs", by="admin")
    # the chunk deletions were rolled back with it (two commits would have left the documents unsearchable)
    assert found(ws, "canteen noon") == {"canteen.md"} and ws.sources.get("docs").name == "docs"
    index_agrees_with_catalog(ws)

    with ws.catalog.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER test_refuse ON sources")
    removed = ws.remove_source("docs", by="admin")
    assert removed["documents"] == 2 and removed["index_commit"] == "one-transaction"
    assert found(ws, "canteen noon") == set() and found(ws, "hotel costs night") == set()
    assert found(ws, "gym morning") == {"gym.md"}  # the other source keeps its documents
    assert [s.name for s in ws.sources.list()] == ["other"]
    index_agrees_with_catalog(ws)


@pytest.mark.slow
def test_kill_minus_nine_never_leaves_index_and_catalog_disagreeing(tmp_path, pg_url):
    """kill -9 a sync of a same-database workspace just before the catalog update of a batch commits (its chunks
    are written by then): afterwards the index holds exactly the versions the catalog calls current (two
    commits would leave the new chunks beside the old catalog row), and the next sync converges to the chunks
    of a workspace that never crashed."""
    rng = random.Random(int(os.environ.get("BASTION_CRASH_SEED", "20261203")))
    rounds = int(os.environ.get("BASTION_CRASH_ROUNDS", "6"))
    assert KILLED_AT_STEP_4 != CHILD
    docs = tmp_path / "docs"
    docs.mkdir()
    names: list[str] = []
    config = "[ingest]\nbatch_chunks = 6\n[chunking]\nmax_tokens = 64\noverlap_tokens = 8\n"
    home = tmp_path / "ws"
    crashing = _workspace(home, docs, config + f'[catalog]\nurl = "{pg_url}"\n[store]\nbackend = "pgvector"\n')
    assert isinstance(crashing.store, PgVectorStore) and crashing.store.shares_database_with(crashing.catalog)
    crashing.close()
    reference = _workspace(tmp_path / "reference", docs, config)  # embedded catalog and index, never crashes
    for _ in range(4):
        _mutate(rng, docs, names)
    killed = 0
    for _ in range(rounds):
        _mutate(rng, docs, names)
        child = subprocess.Popen([sys.executable, "-c", KILLED_AT_STEP_4, str(home)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "SYNC-START"
        kill_at = rng.randint(1, 3)  # at the catalog update of the how-many-th batch
        for line in child.stdout:
            kill_at -= line.strip() == "STEP-4"
            if kill_at == 0:
                child.send_signal(signal.SIGKILL)
                break
        out, err = child.communicate()
        killed += kill_at == 0
        assert child.returncode in (0, -signal.SIGKILL), err
        after_kill = Workspace.open(home, embedder=HashEmbedder())
        _assert_one_version_per_document(after_kill.store.chunk_keys())
        index_agrees_with_catalog(after_kill)  # the killed batch's chunks went with its catalog update
        after_kill.close()
        recovered = Workspace.open(home, embedder=HashEmbedder())
        [report] = recovered.sync()
        reference.sync()
        assert report.documents_failed == 0
        assert sorted(recovered.store.chunk_keys()) == sorted(reference.store.chunk_keys())
        index_agrees_with_catalog(recovered)
        recovered.close()
    assert killed >= rounds // 2, "the kills did not land inside syncs"
