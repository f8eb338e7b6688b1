"""Finding 6: no score returned to a user is computed with statistics of chunks they may not read.

The review's probe: two words occur once each in the same public chunk; six finance-only chunks
repeat one of them. With BM25 statistics of the whole table the two words scored differently for
a member outside finance, telling them how often restricted text uses each word.
"""
from __future__ import annotations

from pathlib import Path

from tests.server.conftest import auth


def _scores(client, key, query, mode):
    r = client.post("/api/v1/search", json={"query": query, "k": 3, "mode": mode}, headers=auth(key))
    assert r.status_code == 200, r.text
    return [(h["path"], h["score"]) for h in r.json()["hits"]]


def test_bm25_scores_do_not_depend_on_chunks_the_caller_cannot_read(client, served):
    root = Path(served.ws.sources.get("docs").config["path"])
    (root / "hr" / "probe.md").write_text("# Probe\n\nProbe words for the glossary: quokkaalpha and quokkabeta "
                                          "are both listed here once.\n")
    served.ws.sync()
    bob, alice = served.keys["bob"], served.keys["alice"]
    before = {m: (_scores(client, bob, "quokkaalpha", m), _scores(client, bob, "quokkabeta", m)) for m in ("bm25", "hybrid")}
    assert before["bm25"][0] and before["bm25"][0][0][0] == "hr/probe.md"  # positive control
    for i in range(6):
        (root / "finance" / f"probe{i}.md").write_text(
            f"# Secret probe {i}\n\nThe quokkaalpha programme, part {i}, is confidential; quokkaalpha matters.\n")
    served.ws.sync()
    for mode in ("bm25", "hybrid"):
        alpha, beta = _scores(client, bob, "quokkaalpha", mode), _scores(client, bob, "quokkabeta", mode)
        assert (alpha, beta) == before[mode]  # nothing about the finance chunks moved bob's numbers
        assert alpha[0][1] == beta[0][1]
    # positive control: finance reads the new chunks
    assert {p for p, _ in _scores(client, alice, "quokkaalpha programme", "bm25")} & {f"finance/probe{i}.md" for i in range(6)}
