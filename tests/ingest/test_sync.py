"""Incremental sync: what changes in the source is what changes in search, nothing more."""
from __future__ import annotations

import os

from conftest import paths_seen, write


def _sync(ws):
    [report] = ws.sync()
    return report


def test_first_sync_then_unchanged_resync_writes_nothing(make_ws, tmp_path):
    write(tmp_path / "docs/travel.md", "# Travel\nThe hotel cap is EUR 180 per night.")
    write(tmp_path / "docs/leave.txt", "Annual leave is 28 working days.")
    ws = make_ws()
    first = _sync(ws)
    assert (first.documents_added, first.documents_failed) == (2, 0)
    version = ws.store._table.version
    again = _sync(ws)
    assert again.documents_unchanged == 2
    assert again.chunks_embedded == again.chunks_written == again.documents_added == 0
    assert ws.store._table.version == version  # the index was not written at all
    assert paths_seen(ws, "hotel cap", "bob") >= {"travel.md"}


def test_changed_file_replaces_old_version(make_ws, tmp_path):
    doc = write(tmp_path / "docs/travel.md", "# Travel\nThe hotel cap is EUR 180 per night.")
    ws = make_ws()
    _sync(ws)
    write(doc, "# Travel\nThe hotel cap is EUR 210 per night in capitals.")
    os.utime(doc, (1, 2_000_000_000))
    report = _sync(ws)
    assert report.documents_updated == 1
    hits = ws.search("hotel cap", ws.principal("bob"))
    assert [h.text for h in hits] == ["# Travel\nThe hotel cap is EUR 210 per night in capitals."]
    assert len({h.version_id for h in hits}) == 1


def test_deleted_and_moved_files(make_ws, tmp_path):
    a = write(tmp_path / "docs/a.txt", "Canteen opens at 11:30.")
    b = write(tmp_path / "docs/b.txt", "Parking garage closes at 22:00.")
    ws = make_ws()
    _sync(ws)
    a.unlink()
    b.rename(tmp_path / "docs/archive_b.txt")
    report = _sync(ws)
    assert report.documents_deleted == 2 and report.documents_added == 1
    seen = paths_seen(ws, "canteen parking garage", "bob")
    assert seen == {"archive_b.txt"}


def test_acl_change_is_reflected_without_reembedding(make_ws, tmp_path):
    write(tmp_path / "docs/fin/q3.txt", "Q3 revenue was EUR 48.2 million.")
    ws = make_ws()
    _sync(ws)
    assert paths_seen(ws, "Q3 revenue", "bob") == {"fin/q3.txt"}  # everyone, for now
    write(tmp_path / "docs/fin/.bastion-acl", "group:finance\n")
    calls = ws.embedder.calls
    report = _sync(ws)
    assert report.documents_acl_changed == 1 and report.chunks_embedded == 0
    assert ws.embedder.calls == calls
    assert paths_seen(ws, "Q3 revenue", "bob") == set()
    assert paths_seen(ws, "Q3 revenue", "alice") == {"fin/q3.txt"}  # positive control


def test_nearest_acl_file_wins(make_ws, tmp_path):
    write(tmp_path / "docs/hr/.bastion-acl", "group:hr")
    write(tmp_path / "docs/hr/pay/.bastion-acl", "user:bob")
    write(tmp_path / "docs/hr/leave.txt", "Leave policy: 28 days.")
    write(tmp_path / "docs/hr/pay/bob_salary.txt", "Bob's salary letter for 2026.")
    ws = make_ws()
    _sync(ws)
    assert paths_seen(ws, "salary letter leave policy", "bob") == {"hr/pay/bob_salary.txt"}
    assert paths_seen(ws, "salary letter leave policy", "alice") == set()
    ws.directory.add_user("hana", groups=["hr"])
    assert paths_seen(ws, "salary letter leave policy", "hana") == {"hr/leave.txt"}


def test_invalid_acl_file_fails_closed(make_ws, tmp_path):
    write(tmp_path / "docs/secret/.bastion-acl", "finance team\n")
    write(tmp_path / "docs/secret/plan.txt", "Acquisition plan for 2027.")
    write(tmp_path / "docs/open.txt", "Acquisition rumours are not to be discussed.")
    ws = make_ws()
    report = _sync(ws)
    assert report.documents_failed == 1 and "bastion-acl" in report.errors[0]["reason"]
    assert paths_seen(ws, "acquisition plan", "alice") == {"open.txt"}


def test_bad_files_are_reported_and_the_rest_completes(make_ws, tmp_path):
    good = write(tmp_path / "docs/good.md", "# Safety\nWear gloves at the lathe.")
    write(tmp_path / "docs/broken.pdf", b"%PDF-1.7\n this is not really a pdf")
    write(tmp_path / "docs/empty.txt", b"")
    write(tmp_path / "docs/huge.txt", "x" * (2 * 2**20))
    ws = make_ws()
    ws.sources.ingest.max_file_mb = 1
    report = _sync(ws)
    reasons = {e["file"]: e["reason"] for e in report.errors}
    assert set(reasons) == {"broken.pdf", "huge.txt"}
    assert "limit" in reasons["huge.txt"]
    assert report.skipped == [{"file": "empty.txt", "reason": "empty file"}]  # nothing to index: not a failure
    assert report.documents_added == 1 and report.documents_failed == 2
    assert paths_seen(ws, "gloves lathe", "bob") == {"good.md"}
    # a later corrupt edit keeps the good version searchable
    write(good, b"\x00\x01\x02 binary garbage")
    os.utime(good, (1, 2_000_000_000))
    report = _sync(ws)
    assert "good.md" in {e["file"] for e in report.errors}
    assert paths_seen(ws, "gloves lathe", "bob") == {"good.md"}


def test_symlink_out_of_root_is_not_followed(make_ws, tmp_path):
    write(tmp_path / "outside/secret.txt", "Root password is hunter2.")
    write(tmp_path / "docs/inside.txt", "The wifi password is on the wall.")
    os.symlink(tmp_path / "outside/secret.txt", tmp_path / "docs/link.txt")
    os.symlink(tmp_path / "outside", tmp_path / "docs/outdir")
    ws = make_ws()
    _sync(ws)
    assert paths_seen(ws, "password", "bob") == {"inside.txt"}


def test_include_and_exclude_globs(make_ws, tmp_path):
    write(tmp_path / "docs/keep/a.md", "Alpha procedure.")
    write(tmp_path / "docs/drafts/b.md", "Alpha draft procedure.")
    write(tmp_path / "docs/keep/c.txt", "Alpha notes.")
    ws = make_ws(include=["*.md"], exclude=["drafts/*"])
    _sync(ws)
    assert paths_seen(ws, "alpha procedure notes", "bob") == {"keep/a.md"}


def test_group_removal_applies_to_next_query(make_ws, tmp_path):
    write(tmp_path / "docs/fin/.bastion-acl", "group:finance")
    write(tmp_path / "docs/fin/budget.csv", "cost centre,amount\nR&D,1200000\n")
    ws = make_ws()
    _sync(ws)
    assert paths_seen(ws, "R&D cost centre amount", "alice") == {"fin/budget.csv"}
    ws.directory.remove_from_group("alice", "finance")
    assert paths_seen(ws, "R&D cost centre amount", "alice") == set()


def test_runs_are_recorded(make_ws, tmp_path):
    from sqlalchemy import select

    from bastion.catalog.models import IngestRunRow

    write(tmp_path / "docs/a.txt", "Some text.")
    ws = make_ws()
    _sync(ws)
    with ws.catalog.session() as s:
        run = s.scalars(select(IngestRunRow)).one()
    assert run.status == "completed" and run.finished_at and run.embedder_id == ws.embedder.id
    assert run.counts["documents_added"] == 1


def test_rebuild_reindexes_everything_with_a_new_embedder(make_ws, tmp_path):
    import pytest

    from bastion.core.errors import EmbedderMismatch
    from bastion.testing import HashEmbedder
    from bastion.workspace import Workspace

    write(tmp_path / "docs/a.md", "# Safety\nWear gloves at the lathe.")
    write(tmp_path / "docs/fin/.bastion-acl", "group:finance")
    write(tmp_path / "docs/fin/q3.txt", "Q3 revenue was EUR 48.2 million.")
    ws = make_ws()
    _sync(ws)
    other = Workspace.open(ws.home, embedder=HashEmbedder(dimension=32))
    with pytest.raises(EmbedderMismatch, match="bastion rebuild"):
        other.store
    [report] = other.rebuild_index()
    assert report.documents_added == 2 and other.embedder.calls > 0
    assert paths_seen(other, "gloves lathe revenue", "alice") == {"a.md", "fin/q3.txt"}
    assert paths_seen(other, "gloves lathe revenue", "bob") == {"a.md"}
    assert other.sync()[0].documents_unchanged == 2


def test_a_long_sync_folds_new_chunks_into_the_indexes_as_it_goes(make_ws, tmp_path):
    """Index small and often: with optimize_every_chunks, the index is optimized during the sync, not only at its end."""
    for i in range(12):
        write(tmp_path / "docs" / f"d{i:02d}.md", f"# Doc {i}\n\n" + f"Paragraph about topic {i}. " * 20)
    ws = make_ws()
    ws.config.ingest.batch_chunks = 2
    ws.config.index.optimize_every_chunks = 4
    calls = []
    original = ws.store.optimize
    ws.store.optimize = lambda: (calls.append(ws.store.count()), original())[1]
    report = ws.sync()[0]
    assert report.documents_added == 12
    assert len(calls) >= 3 and calls[0] < report.chunks_written  # at least one optimize before the last batch
    assert {h.path for h in ws.search("topic 11", ws.principal("bob"))} >= {"d11.md"}
    ws.config.index.optimize_every_chunks = 0
    calls.clear()
    write(tmp_path / "docs" / "d99.md", "# Doc 99\n\nlate addition.\n")
    ws.sync()
    assert len(calls) == 1  # only at the end
