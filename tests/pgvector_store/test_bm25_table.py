"""BM25 for principals who read many chunks (above ``exact_threshold``): whole-table statistics kept by
``replace_documents``, MaxScore pruning that returns the same top-k as scoring every candidate, and
rank-derived scores, so that chunks a principal may not read never move a number it sees."""
from __future__ import annotations

import numpy as np
import pytest

from bastion.retrieval.analyzer import analyze
from bastion.stores.pgvector_schema import STATS, stats_backfill_sql
from bastion.stores.protocol import StoredChunk
from tests.pgvector_store.conftest import open_store

pytestmark = pytest.mark.services


class _Dim:
    id, dimension = "random-8", 8


def _chunk(i: int, text: str, acl: tuple[str, ...]) -> StoredChunk:
    v = np.ones(8, np.float32) / np.sqrt(8)
    return StoredChunk(chunk_id=f"c{i:05d}", doc_id=f"d{i // 5}", version_id="v1", source="s", document=f"d{i // 5}",
                       path=f"d{i // 5}.txt", page=None, section=None, ordinal=i % 5, text=text,
                       terms=" ".join(analyze(text)), char_start=0, char_end=len(text), acl=acl, vector=v)


def _corpus(n: int, seed: int = 5) -> list[StoredChunk]:
    """Chunks of Zipf-drawn words: a few words are in most chunks, most in a handful."""
    rng = np.random.default_rng(seed)
    words = [f"w{j}x" for j in range(400)]
    p = 1.0 / np.arange(1, 401) ** 1.1
    p /= p.sum()
    return [_chunk(i, " ".join(rng.choice(words, rng.integers(5, 30), p=p)), ("group:all",) if i % 3 else
                   ("group:all", "group:third")) for i in range(n)]


def _stats(store) -> dict[str, tuple[int, int]]:
    with store._tx() as cur:
        cur.execute(f"SELECT term, df, total FROM {STATS} WHERE df <> 0 OR total <> 0")
        return {t: (int(d), int(s)) for t, d, s in cur.fetchall()}


def _recomputed(store) -> dict[str, tuple[int, int]]:
    with store._tx() as cur:
        cur.execute(f"CREATE TEMP TABLE fresh (LIKE {STATS} INCLUDING ALL)")
        cur.execute(stats_backfill_sql().replace(f"INSERT INTO {STATS}", "INSERT INTO fresh"))
        cur.execute("SELECT term, df, total FROM fresh WHERE df <> 0 OR total <> 0")
        out = {t: (int(d), int(s)) for t, d, s in cur.fetchall()}
        cur.execute("DROP TABLE fresh")
    return out


def test_statistics_follow_replaces_and_deletes(pg_url):
    store = open_store(pg_url, _Dim())
    chunks = _corpus(300)
    store.replace_documents(sorted({c.doc_id for c in chunks}), chunks)
    assert _stats(store) == _recomputed(store) and _stats(store)[""] == (300, sum(len(c.terms.split()) for c in chunks))
    # replace some documents with new text, delete others: the kept statistics equal a full recount
    new = [_chunk(i, "zebraword w0x w0x quokkaword", ("group:all",)) for i in range(0, 20)]
    store.replace_documents([f"d{i}" for i in range(4)], new)
    store.replace_documents([f"d{i}" for i in range(10, 30)], [])
    assert _stats(store) == _recomputed(store)
    assert _stats(store)["zebraword"][0] == 20 and _stats(store)[""][0] == 300 - 100
    store.close()


@pytest.mark.parametrize("ratio", [0, 10**9], ids=["terms-first", "indexes-intersected"])
def test_pruned_ranking_matches_exact_bm25_and_scores_are_rank_derived(pg_url, ratio):
    """For a principal reading every chunk the whole-table statistics are its own: the pruned top-k equals the
    exact per-principal BM25 top-k (real scores) id for id, and its scores are 1/(rank + 1); whichever way the
    candidates are read (the terms index first, or intersected with the ACL index)."""
    store = open_store(pg_url, _Dim(), exact_threshold=10)
    store.acl_bitmap_ratio = ratio
    chunks = _corpus(1500)
    store.replace_documents(sorted({c.doc_id for c in chunks}), chunks)
    store.optimize()
    everyone = frozenset({"group:all"})
    rng = np.random.default_rng(9)
    for _ in range(25):
        terms = [f"w{j}x" for j in rng.choice(400, rng.integers(1, 5), replace=False)] + ["w0x"]  # + the commonest
        for k in (1, 10, 50):
            fast = store.rank_terms(terms, everyone, k)
            exact = store.rank_terms(terms, everyone, k, exact=True)
            assert [r.chunk_id for r in fast] == [r.chunk_id for r in exact]
            assert [r.score for r in fast] == [1.0 / (i + 1) for i in range(len(fast))]
            assert not exact or exact[0].score != 1.0  # the exact path: real BM25 scores
    store.close()


def test_chunks_a_principal_cannot_read_move_no_score_above_the_threshold(pg_url):
    """Large principals get rank-derived scores: adding denied chunks full of a query word leaves every
    number they see as it was; a principal of the denied group does see the new chunks (positive control)."""
    store = open_store(pg_url, _Dim(), exact_threshold=10)
    chunks = [_chunk(i, f"common word{i % 7}x quokkaalpha" if i == 3 else f"common word{i % 7}x", ("group:all",))
              for i in range(200)]
    store.replace_documents(sorted({c.doc_id for c in chunks}), chunks)
    reader = frozenset({"group:all"})
    before = [(r.chunk_id, r.score) for r in store.rank_terms(["quokkaalpha", "word3x"], reader, 5)]
    assert before[0] == ("c00003", 1.0)
    secret = [_chunk(1000 + i, "quokkaalpha quokkaalpha secret", ("group:finance",)) for i in range(50)]
    store.replace_documents(sorted({c.doc_id for c in secret}), secret)
    after = [(r.chunk_id, r.score) for r in store.rank_terms(["quokkaalpha", "word3x"], reader, 5)]
    assert [s for _, s in after] == [s for _, s in before] and after[0] == ("c00003", 1.0)
    finance = store.rank_terms(["quokkaalpha"], frozenset({"group:finance"}), 5)
    assert finance and all(r.chunk_id >= "c01000" for r in finance)  # positive control
    store.close()


def test_both_ways_of_reading_candidates_rank_a_partial_reader_alike(pg_url):
    """A principal reading a third of the chunks: reading the term's chunks first and testing the ACL on each
    ranks exactly as intersecting the terms and ACL indexes, returns only that principal's chunks, and k of them
    (positive control); a principal of another group gets none of them."""
    store = open_store(pg_url, _Dim(), exact_threshold=10)
    chunks = _corpus(1500)
    store.replace_documents(sorted({c.doc_id for c in chunks}), chunks)
    store.optimize()
    third = frozenset({"group:third"})
    readable = {c.chunk_id for c in chunks if "group:third" in c.acl}
    rng = np.random.default_rng(11)
    for _ in range(15):
        terms = [f"w{j}x" for j in rng.choice(60, rng.integers(1, 4), replace=False)] + ["w0x"]
        ranked = {}
        for ratio in (0, 10**9):
            store.acl_bitmap_ratio = ratio
            ranked[ratio] = [r.chunk_id for r in store.rank_terms(terms, third, 20)]
        assert ranked[0] == ranked[10**9]
        assert len(ranked[0]) == 20 and set(ranked[0]) <= readable
    assert store.rank_terms(["w0x"], frozenset({"group:nobody"}), 20) == []
    store.close()


def test_rounds_that_add_terms_rank_as_one_pass(pg_url, monkeypatch):
    """With a budget of one term, the pruning adds the next rarest term round by round, each round reading only
    the chunks holding it and none read before: the top-k is still the exact BM25 top-k, id for id."""
    import bastion.stores.pgvector as pgvector_module

    rounds: list[bool] = []
    original = pgvector_module.bm25_table_sql

    def counting(where, nterms, **kw):
        rounds.append(kw.get("exclude", False))
        return original(where, nterms, **kw)

    monkeypatch.setattr(pgvector_module, "bm25_table_sql", counting)
    store = open_store(pg_url, _Dim(), exact_threshold=10)
    store.terms_budget = 1
    chunks = _corpus(1500)
    store.replace_documents(sorted({c.doc_id for c in chunks}), chunks)
    everyone = frozenset({"group:all"})
    rng = np.random.default_rng(21)
    for _ in range(20):
        terms = [f"w{j}x" for j in rng.choice(range(100, 400), rng.integers(2, 5), replace=False)]
        for k in (10, 50):
            fast = [r.chunk_id for r in store.rank_terms(terms, everyone, k)]
            assert fast == [r.chunk_id for r in store.rank_terms(terms, everyone, k, exact=True)]
    assert sum(rounds) > 10  # later rounds ran (and excluded the chunks read before)
    store.close()
