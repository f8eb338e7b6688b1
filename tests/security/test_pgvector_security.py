"""Findings 2 and 6 of the security review (test_acl_text.py, test_bm25_statistics.py) on the pgvector
store: an ACL comment grants nothing end to end, and no BM25 score a user sees is computed with
statistics of chunks they may not read. Each attack is paired with a positive control."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write
from tests.pgvector_store import conftest as pg

pg_server, pg_url = pg.pg_server, pg.pg_url  # the real PostgreSQL's fixtures
pytestmark = pytest.mark.services


def _workspace(home: Path, url: str, extra: str = "") -> Workspace:
    Workspace.init(home).close()
    (home / "bastion.toml").write_text(f'[store]\nbackend = "pgvector"\nurl = "{url}"\n{extra}', encoding="utf-8")
    ws = Workspace.open(home, embedder=HashEmbedder())
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    return ws


def test_sql_acl_column_comment_with_comma_grants_nothing(tmp_path, pg_url):
    db = tmp_path / "tickets.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tickets (id INTEGER PRIMARY KEY, title TEXT, body TEXT, acl TEXT)")
        conn.executemany("INSERT INTO tickets VALUES (?, ?, ?, ?)", [
            (1, "Merger", "The zyxcorpcanary bonus pool is 3 million.", "# restricted: group:hr,everyone\ngroup:finance"),
            (2, "Canteen", "The canteencanary opens at noon.", "everyone"),
        ])
    conn.close()
    ws = _workspace(tmp_path / "ws", pg_url)
    try:
        ws.sources.add_sql("tickets", f"sqlite:///{db}", table="tickets", id_column="id",
                           template="{title}\n{body}", acl_column="acl", title_column="title")
        [report] = ws.sync()
        assert report.errors == [] and report.documents_added == 2
        for mode in ("bm25", "dense", "hybrid"):
            def found(user: str) -> dict[str, str]:
                return {h.path: h.text for h in ws.search("zyxcorpcanary canteencanary bonus pool", ws.principal(user),
                                                           50, mode=mode)}

            bob = found("bob")
            assert "1" not in bob and not any("zyxcorpcanary" in t for t in bob.values())  # the attack
            assert "canteencanary" in bob.get("2", "")  # bob's search works: he sees the public row
            assert "zyxcorpcanary" in found("alice").get("1", "")  # positive control: finance reads it
    finally:
        ws.close()


@pytest.mark.parametrize("threshold", [None, 0], ids=["readable-statistics", "whole-table-rank-scores"])
def test_bm25_scores_do_not_depend_on_chunks_the_caller_cannot_read(tmp_path, pg_url, threshold):
    """Default: everyone here reads fewer than ``exact_threshold`` chunks, so BM25 uses their own chunks'
    statistics. ``exact_threshold = 0``: everyone is ranked with whole-table statistics and sees scores
    derived from the rank alone; the denied chunks still move no number bob sees."""
    root = tmp_path / "docs"
    write(root / "finance" / ".bastion-acl", "group:finance\n")
    write(root / "hr" / "probe.md", "# Probe\n\nProbe words for the glossary: quokkaalpha and quokkabeta "
                                    "are both listed here once.\n")
    write(root / "hr" / "other.md", "# Other\n\nNothing about the probe words here, only the glossary.\n")
    ws = _workspace(tmp_path / "ws", pg_url, "" if threshold is None else f"exact_threshold = {threshold}\n")
    ws.sources.add_folder("docs", root, acl="everyone")
    ws.sync()
    bob, alice = ws.principal("bob"), ws.principal("alice")

    def scores(principal, query, mode):
        return [(h.path, h.score) for h in ws.search(query, principal, 3, mode=mode)]

    before = {m: (scores(bob, "quokkaalpha", m), scores(bob, "quokkabeta", m)) for m in ("bm25", "hybrid")}
    assert before["bm25"][0] and before["bm25"][0][0][0] == "hr/probe.md"  # positive control
    for i in range(6):
        write(root / "finance" / f"probe{i}.md",
              f"# Secret probe {i}\n\nThe quokkaalpha programme, part {i}, is confidential; quokkaalpha matters.\n")
    ws.sync()
    for mode in ("bm25", "hybrid"):
        alpha, beta = scores(bob, "quokkaalpha", mode), scores(bob, "quokkabeta", mode)
        assert (alpha, beta) == before[mode]  # nothing about the finance chunks moved bob's numbers
        assert alpha[0][1] == beta[0][1]
    # positive control: finance reads the new chunks, and its own statistics count them
    seen = {p for p, _ in scores(alice, "quokkaalpha programme", "bm25")}
    assert seen & {f"finance/probe{i}.md" for i in range(6)}
    if threshold is None:
        assert scores(alice, "quokkaalpha", "bm25")[0][1] != scores(alice, "quokkabeta", "bm25")[0][1]
    else:  # the order still sees them: the finance chunks (the word twice) outrank probe.md for alice
        top = scores(alice, "quokkaalpha", "bm25")
        assert top[0][0].startswith("finance/") and [s for _, s in top] == [1.0, 0.5, 1 / 3]
