"""BM25 from terms held in memory for principals on the exact path (bastion.stores.postings)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bastion.core.types import Principal
from bastion.retrieval.analyzer import analyze
from bastion.retrieval.hybrid import HybridRetriever
from bastion.stores import postings
from bastion.stores.exact import ExactSets
from bastion.stores.lance import LanceStore, acl_filter
from bastion.stores.postings import Postings
from bastion.testing.contract import make_chunk
from bastion.testing.fakes import HashEmbedder
from tests.stores.test_exact_sets import Table

WORDS = "pump valve seal motor shaft bearing gear spindle coolant sensor lathe drill press belt".split()


def _brute_bm25(texts: dict[str, str], terms: list[str], k: int) -> list[tuple[str, float]]:
    """BM25 as LanceDB scores it (k1 1.2, b 0.75, idf ln(1 + (N - df + .5) / (df + .5))), over ``texts`` only."""
    docs = {cid: t.split() for cid, t in texts.items()}
    n = len(docs)
    avgdl = sum(len(d) for d in docs.values()) / n
    scores: dict[str, float] = {}
    for term in dict.fromkeys(terms):
        df = sum(term in d for d in docs.values())
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for cid, d in docs.items():
            tf = d.count(term)
            if tf:
                scores[cid] = scores.get(cid, 0.0) + idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(d) / avgdl))
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def _same(got, want) -> bool:
    return [c for c, _ in got] == [c for c, _ in want] and np.allclose([s for _, s in got], [s for _, s in want])


def _texts(rng, n, prefix, words=WORDS):
    return {f"{prefix}{i}": " ".join(rng.choice(words, rng.integers(1, 25))) for i in range(n)}


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def test_postings_rank_as_bm25_over_the_live_chunks_only(rng):
    texts = _texts(rng, 60, "c") | {"blank": "", "spaced": "  pump   pump "}
    ids = np.array(list(texts), dtype=object)
    p = Postings.of(list(texts.values()))
    assert p.lengths[list(texts).index("spaced")] == 2 and p.lengths[list(texts).index("blank")] == 0
    rows = np.arange(len(ids), dtype=np.int64) + 100
    alive = np.ones(len(ids), bool)
    for query in (["pump"], ["spindle", "coolant", "lathe"], ["belt", "belt", "drill"], ["nowhere"]):
        got = [(c, s) for c, s, _ in postings.bm25(query, [(rows, ids, alive, p)], 10)]
        assert _same(got, _brute_bm25(texts, query, 10))
    alive[:30] = False  # dead rows neither match nor count in the statistics
    live = {c: t for c, t, a in zip(ids, texts.values(), alive) if a}
    got = postings.bm25(["pump", "gear"], [(rows, ids, alive, p)], 10)
    assert [c for c, _, _ in got] == [c for c, _ in _brute_bm25(live, ["pump", "gear"], 10)]
    # the same chunks taken out and joined in another order rank the same
    mask = np.zeros(len(ids), bool)
    mask[::3] = True
    parts = [(rows[mask], ids[mask], np.ones(mask.sum(), bool), postings.take(p, mask)),
             (rows[~mask], ids[~mask], np.ones((~mask).sum(), bool), postings.take(p, ~mask))]
    joined = postings.join([parts[1][3], parts[0][3]])
    order = np.concatenate([np.flatnonzero(~mask), np.flatnonzero(mask)])
    one = [(rows[order], ids[order], np.ones(len(ids), bool), joined)]
    for query in (["pump", "seal"], ["press"]):
        want = postings.bm25(query, [(rows, ids, np.ones(len(ids), bool), p)], 15)
        assert postings.bm25(query, parts, 15) == want and postings.bm25(query, one, 15) == want
        assert postings.bm25(query, parts, 15, shared=False) == want  # distinct rows: no de-duplication needed


def test_a_chunk_under_two_keys_counts_once_and_refreshes_follow_commits(rng):
    a, b = _texts(rng, 40, "a"), _texts(rng, 40, "b")
    shared = {"both": "pump pump pump valve"}
    vec = {c: rng.normal(size=4) for c in a | b | shared}
    table = Table({"group:a": {c: vec[c] for c in a | shared}, "group:b": {c: vec[c] for c in b | shared},
                   "user:u": {}}, texts=a | b | shared)
    sets, keys = ExactSets(1 << 22), ["group:a", "group:b", "user:u"]

    def rank(query, version):
        return sets.rank_terms(query, keys, version, 10, source=table)

    everything = a | b | shared
    got = rank(["pump", "valve"], 1)
    assert _same(got, _brute_bm25(everything, ["pump", "valve"], 10)) and got[0][0] == "both"
    # a commit: a new chunk in group:a, one of group:b's removed; one listing, only the new row read
    table.texts["new"] = "lathe lathe coolant"
    table.rows["group:a"]["new"] = rng.normal(size=4)
    gone = next(iter(b))
    del table.rows["group:b"][gone]
    table.partial_reads.clear()
    everything = {c: t for c, t in (a | b | shared | {"new": table.texts["new"]}).items() if c != gone}
    for query in (["lathe", "coolant"], WORDS[:4]):
        assert _same(rank(query, 2), _brute_bm25(everything, query, 10))
    assert table.partial_reads == [["new"]] and table.full_reads == 3


@pytest.fixture
def embedder():
    return HashEmbedder(dimension=64)


def _store(tmp_path, embedder, chunks, **kw):
    store = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=64, ann_min_rows=256, **kw)
    store.replace_documents([c.doc_id for c in chunks], chunks)
    store.optimize()
    assert store.vector_index_built  # the exact path exists only beside an ANN index
    return store


def test_in_memory_bm25_scores_as_the_full_text_index_when_the_set_is_the_whole_table(tmp_path, embedder):
    rng = np.random.default_rng(7)
    chunks = [make_chunk(embedder, f"d{i}", " ".join(rng.choice(WORDS, rng.integers(3, 30))), ("group:all",))
              for i in range(300)]
    chunks += [make_chunk(embedder, f"zh{i}", text, ("group:all",))
               for i, text in enumerate(["报销流程需要部门经理审批", "差旅报销标准按城市分级", "年度预算由财务部编制"])]
    store = _store(tmp_path, embedder, chunks)
    labels = frozenset({"group:all"})
    assert store.exact_path(labels)
    for q in ("spindle bearing", "coolant pump lathe", "belt", "gear shaft seal drill", "报销审批"):
        terms = analyze(q)
        memory = store.rank_terms(terms, labels, 10)
        lance = store.lancedb()  # the full-text index's own BM25 scores
        index = lance.run(lance.async_table.query().nearest_to_text(" ".join(terms), columns="terms")
                          .where(acl_filter(labels)).limit(10).select(["chunk_id", "_score"]).to_arrow())
        scores = index.column("_score").to_pylist()
        assert [r.score for r in memory] == pytest.approx(scores, rel=1e-5), q
        # the same chunks, up to the order of equal scores (the index breaks ties its own way)
        above = {c for c, s in zip(index.column("chunk_id").to_pylist(), scores) if s > scores[-1] * (1 + 1e-5)}
        assert above <= {r.chunk_id for r in memory}, q
    assert store.rank_terms(analyze("报销审批"), labels, 1)[0].chunk_id == "zh0-0"


def test_a_small_groups_bm25_from_memory_sees_its_own_chunks_and_no_others(tmp_path, embedder):
    """Denial with a positive control: the other group's chunk that matches the query best is not in the
    small group's ranking, and its own group gets it first; the small group still gets k of its own."""
    rng = np.random.default_rng(3)
    big = [make_chunk(embedder, f"big{i}", " ".join(rng.choice(WORDS, 8)), ("group:big",)) for i in range(400)]
    small = [make_chunk(embedder, f"small{i}", " ".join(rng.choice(WORDS, 8)), ("group:small",)) for i in range(12)]
    secret = make_chunk(embedder, "secret", "payroll payroll bonus", ("group:big",))
    store = _store(tmp_path, embedder, big + small + [secret], exact_threshold=50)
    terms = analyze("payroll bonus pump")
    calls = []
    real = store._terms
    store._terms = lambda *a: calls.append(a[1]) or real(*a)
    mine = store.rank_terms(terms, frozenset({"group:small"}), 10)
    assert calls == []  # from memory: the full-text index was not asked
    assert "secret-0" not in {r.chunk_id for r in mine}
    assert {r.chunk_id for r in mine} <= {c.chunk_id for c in small}
    assert len(mine) == min(10, sum(bool(set(terms) & set(c.terms.split())) for c in small))
    assert store.rank_terms(terms, frozenset({"group:big"}), 1)[0].chunk_id == "secret-0"  # big: the index
    assert len(calls) == 1
    # through the retriever, hybrid: the same, with fetch's rows
    retriever = HybridRetriever(store, embedder.embed_query)
    hits = retriever.search("payroll bonus pump", Principal("eve", frozenset({"small"})), 5)
    assert hits and all(h.chunk_id.startswith("small") for h in hits)
    assert retriever.search("payroll bonus", Principal("bob", frozenset({"big"})), 1)[0].chunk_id == "secret-0"


def test_a_hybrid_searchs_two_legs_refresh_the_entries_once(rng):
    """Both legs of a hybrid search ask for the same principal's entries at once after a commit: one
    lists and reads the new rows, the other waits for it and uses what it read."""
    import threading
    import time

    texts = _texts(rng, 50, "c")
    table = Table({"group:g": {c: rng.normal(size=4) for c in texts}, "user:u": {}}, texts=texts)
    sets, keys = ExactSets(1 << 22), ["group:g", "user:u"]
    q = rng.normal(size=4)
    sets.rank(q, keys, 1, 5, source=table)
    table.texts["new"] = "spindle spindle spindle"
    table.rows["group:g"]["new"] = q * 3

    class Slow:  # the same table, slow to read rows
        list_rows, read_key = table.list_rows, table.read_key

        def read_rows(self, rows, keys_):
            time.sleep(0.2)  # long enough for the other leg to arrive meanwhile
            return table.read_rows(rows, keys_)

    slow = Slow()

    out = {}
    legs = [threading.Thread(target=lambda: out.__setitem__("dense", sets.rank(q, keys, 2, 1, source=slow))),
            threading.Thread(target=lambda: out.__setitem__("bm25", sets.rank_terms(["spindle"], keys, 2, 1,
                                                                                    source=slow)))]
    for leg in legs:
        leg.start()
    for leg in legs:
        leg.join()
    assert out["dense"][0][0] == "new" and out["bm25"][0][0] == "new"
    assert table.listings == 1 and table.partial_reads == [["new"]]
