"""LanceStore's two-step read: ids-only rankings on every search path, then ``fetch`` of full rows."""
from __future__ import annotations

import numpy as np
import pytest

from bastion.core.errors import StoreError
from bastion.core.types import Principal
from bastion.retrieval.analyzer import analyze
from bastion.stores.lance import LanceStore, acl_filter
from bastion.testing.contract import make_chunk
from bastion.testing.fakes import HashEmbedder

WORDS = "pump valve seal motor shaft bearing gear spindle coolant sensor".split()
QUERIES = ["spindle bearing maintenance", "coolant pump", "gear shaft seal", "sensor valve motor"]


def _corpus(embedder, n_big=400, n_small=12, seed=7):
    rng = np.random.default_rng(seed)
    chunks = [make_chunk(embedder, f"big{i}", " ".join(rng.choice(WORDS, 8)) + " maintenance", ("group:big",))
              for i in range(n_big)]
    chunks += [make_chunk(embedder, f"small{i}", " ".join(rng.choice(WORDS, 8)) + " maintenance", ("group:small",))
               for i in range(n_small)]
    return chunks


def _store(tmp_path, embedder, chunks, **kw) -> LanceStore:
    store = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=embedder.dimension, **kw)
    store.replace_documents([c.doc_id for c in chunks], chunks)
    store.optimize()
    return store


def _exact_top(chunks, embedder, query, group, k) -> list[float]:
    """Brute-force filtered cosine top-k similarities: what an exact dense path must return."""
    allowed = [c for c in chunks if group in c.acl]
    return sorted((np.stack([c.vector for c in allowed]) @ embedder.embed_query(query)).tolist(), reverse=True)[:k]


def _assert_exact(ranked, chunks, embedder, query, group, k):
    """The exact top-k up to the order of ties (the hash embedder makes many): same similarities, and each
    id's score is its true cosine and its chunk readable by ``group``."""
    by_id = {c.chunk_id: c for c in chunks}
    v = embedder.embed_query(query)
    assert np.allclose([s for _, s in ranked], _exact_top(chunks, embedder, query, group, k), atol=1e-5)
    for cid, score in ranked:
        assert group in by_id[cid].acl and abs(float(by_id[cid].vector @ v) - score) < 1e-5


@pytest.fixture
def embedder():
    return HashEmbedder(dimension=64)


def test_optimize_builds_a_chunk_id_btree_for_fetch(tmp_path, embedder):
    store = _store(tmp_path, embedder, _corpus(embedder, n_big=20, n_small=2))
    kinds = {column: index.kind for column, index in store.stats().indexes.items()}
    assert kinds["chunk_id"] == "BTree" and kinds["doc_id"] == "BTree"
    reopened = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=embedder.dimension)
    assert "chunk_id" in reopened.stats().indexes


@pytest.mark.parametrize("kw", [dict(), dict(ann_min_rows=256, exact_threshold=100_000),
                                dict(ann_min_rows=256, exact_threshold=5)],
                         ids=["no-ann-index", "ann-index-exact-path", "ann-path"])
def test_rankings_match_the_full_row_searches(tmp_path, embedder, kw):
    store = _store(tmp_path, embedder, _corpus(embedder), **kw)
    for group in ("group:big", "group:small"):
        labels = frozenset({group, "everyone"})
        for q in QUERIES:
            for k in (3, 10, 50):
                full = store.search_dense(embedder.embed_query(q), labels, k)
                assert store.rank_dense(embedder.embed_query(q), labels, k) == [(h.row["chunk_id"], h.score) for h in full]
                ranked = store.rank_terms(analyze(q), labels, k)
                full = store.fetch(ranked, labels)  # every ranked chunk is readable: fetch keeps them all, in order
                assert ranked == [(h.row["chunk_id"], h.score) for h in full] and all(h.row["text"] for h in full)


def test_exact_path_ranks_ids_exactly(tmp_path, embedder):
    chunks = _corpus(embedder)
    store = _store(tmp_path, embedder, chunks, ann_min_rows=256, exact_threshold=100)
    assert store.vector_index_built and store.exact_path(frozenset({"group:small"}))
    for q in QUERIES:
        _assert_exact(store.rank_dense(embedder.embed_query(q), frozenset({"group:small"}), 5), chunks, embedder, q,
                      "group:small", 5)


def test_ann_fallback_fills_short_id_rankings(tmp_path, embedder):
    """A one-partition probe holds fewer than k rows of a small group: the ids-only path must widen the
    probe (and go exact if still short) like the full-row path, and never return a short ranking."""
    chunks = _corpus(embedder)
    store = _store(tmp_path, embedder, chunks, ann_min_rows=256, exact_threshold=5, nprobes=1)
    labels, where = frozenset({"group:small"}), acl_filter(frozenset({"group:small"}))
    small = {c.chunk_id for c in chunks if "group:small" in c.acl}
    by_id = {c.chunk_id: c for c in chunks}
    assert not store.exact_path(labels)  # 12 authorised rows > exact_threshold: the ANN path
    short_probes = 0
    for q in QUERIES:
        v = embedder.embed_query(q)
        raw = (store.lancedb().table.search(v, vector_column_name="vector").distance_type("cosine")
               .where(where, prefilter=True).limit(10).nprobes(1).select(["chunk_id", "_distance"]).to_list())
        short_probes += len(raw) < 10
        got = store.rank_dense(v, labels, 10)
        assert len(got) == 10 and {c for c, _ in got} <= small
        assert all(abs(float(by_id[c].vector @ v) - s) < 1e-5 for c, s in got)  # refined: true cosines
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        assert got == [(h.row["chunk_id"], h.score) for h in store.search_dense(v, labels, 10)]
        everything = store.rank_dense(v, labels, len(small))  # k = every authorised row: complete, so exact
        assert {c for c, _ in everything} == small
        _assert_exact(everything, chunks, embedder, q, "group:small", len(small))
    assert short_probes  # the fallback was needed, not just available


def test_fetch_reads_rows_added_after_the_last_optimize(tmp_path, embedder):
    """Rows not yet in the chunk_id BTREE are still found (LanceDB scans unindexed fragments)."""
    chunks = _corpus(embedder, n_big=30, n_small=0)
    store = _store(tmp_path, embedder, chunks)
    late = make_chunk(embedder, "late", "late arrival pump", ("group:big",))
    store.replace_documents(["late"], [late])
    got = store.fetch([("late-0", 1.0), ("big3-0", 0.5)], frozenset({"group:big"}))
    assert [h.row["chunk_id"] for h in got] == ["late-0", "big3-0"]
    assert got[0].row["text"] == "late arrival pump" and set(got[0].row) >= {"doc_id", "path", "char_end", "version_id"}
    assert store.fetch([("late-0", 1.0)], Principal("x").labels()) == []


def test_an_index_written_before_the_packed_cite_column_still_reads_and_writes(tmp_path):
    """Indexes of earlier versions have no ``cite`` column: they read the separate columns."""
    import lancedb
    import numpy as np

    from bastion.core.types import Principal
    from bastion.stores.lance import LanceStore
    from bastion.stores.lance_schema import TABLE, schema
    from bastion.stores.protocol import StoredChunk

    lancedb.connect(str(tmp_path)).create_table(TABLE, schema=schema(4, cite=False))
    old = LanceStore(tmp_path, embedder_id="e", dimension=4)
    assert "cite" not in old.lancedb().table.schema.names

    def chunk(cid, doc, text):
        return StoredChunk(chunk_id=cid, doc_id=doc, version_id="v1", source="docs", document="Doc", path=f"{doc}.md",
                           page=2, section="S", ordinal=0, text=text, terms=text, char_start=0, char_end=len(text),
                           acl=("group:staff",), vector=np.array([1, 0, 0, 0], np.float32))

    old.replace_documents(["a"], [chunk("a-0", "a", "alpha hotel")])
    staff = Principal("bob", frozenset({"staff"})).labels()
    [hit] = old.fetch([("a-0", 1.0)], staff)
    assert hit.row["path"] == "a.md" and hit.row["page"] == 2 and hit.row["text"] == "alpha hotel"
    new = LanceStore(tmp_path / "new", embedder_id="e", dimension=4)
    new.replace_documents(["a"], [chunk("a-0", "a", "alpha hotel")])
    [hit2] = new.fetch([("a-0", 1.0)], staff)
    assert hit2.row == hit.row  # the packed column gives back exactly the same fields
    assert new.fetch([("a-0", 1.0)], Principal("eve").labels()) == []  # and the ACL still applies


def test_optimize_keeps_the_vector_index_in_one_segment(tmp_path, embedder):
    """LanceDB's optimize() indexes new rows as one more segment of the vector index each time, and a
    search probes every segment; the store's optimize() merges them, and search stays right."""
    store = _store(tmp_path, embedder, _corpus(embedder, n_big=3000, n_small=0), ann_min_rows=1000)
    rng = np.random.default_rng(2)

    def add(batch: int) -> None:
        new = [make_chunk(embedder, f"new{batch}-{i}", " ".join(rng.choice(WORDS, 8)) + f" batch{batch}", ("group:big",))
               for i in range(200)]
        store.replace_documents([c.doc_id for c in new], new)

    for b in range(2):  # positive control: LanceDB alone leaves a segment per optimize
        add(b)
        store.lancedb().table.optimize()
    assert store.stats().indexes["vector"].segments == 3
    for b in range(2, 5):
        add(b)
        store.optimize()
        stats = store.lancedb().table.index_stats("vector_idx")
        assert (stats.num_indices, stats.num_unindexed_rows, stats.num_indexed_rows) == (1, 0, 3000 + 200 * (b + 1))
    v = embedder.embed_query("batch4 spindle")
    assert any(cid.startswith("new4-") for cid, _ in store.rank_dense(v, frozenset({"group:big"}), 10))


def test_vector_index_kind_follows_configuration_and_its_refine_follows_the_index(tmp_path, embedder):
    """IVF_SQ by default (refine 2); configuring IVF_PQ rebuilds the index at the next optimize (refine 10);
    a reader opened before the rebuild picks the new kind's refine up when it loads the new index."""
    chunks = _corpus(embedder, n_big=800, n_small=0)
    store = _store(tmp_path, embedder, chunks, ann_min_rows=256, exact_threshold=5)
    assert (store.stats().indexes["vector"].kind, store.vector_index_built, store.refine) == ("IvfSq", "IVF_SQ", 2)
    big = frozenset({"group:big"})

    def check(s: LanceStore) -> None:  # the ANN path finds the true nearest chunk, with true cosines
        assert not s.exact_path(big)
        for query in QUERIES:
            ranked = s.rank_dense(embedder.embed_query(query), big, 5)
            assert len(ranked) == 5
            assert abs(ranked[0][1] - _exact_top(chunks, embedder, query, "group:big", 1)[0]) < 1e-5
            by_id = {c.chunk_id: c for c in chunks}
            assert all(abs(float(by_id[c].vector @ embedder.embed_query(query)) - sc) < 1e-5 for c, sc in ranked)

    check(store)
    reader = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=embedder.dimension, exact_threshold=5)
    reader.warm()
    assert reader.refine == 2
    pq = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=embedder.dimension, ann_min_rows=256,
                    exact_threshold=5, vector_index="ivf_pq")
    assert (pq.vector_index_built, pq.refine) == ("IVF_SQ", 2)  # what is built decides until the rebuild
    pq.optimize()
    assert (pq.vector_index_built, pq.refine) == ("IVF_PQ", 10)
    assert pq.stats().indexes["vector"].kind == "IvfPq"
    check(pq)
    assert reader.refine == 2 and reader.warm()  # the reader loads the new index and learns its kind
    assert reader.refine == 10
    check(reader)
    def vector_segments(s: LanceStore):
        return [str(seg.uuid) for i in s.lancedb().dataset().describe_indices() if i.name == "vector_idx" for seg in i.segments]

    before = vector_segments(pq)
    pq.optimize()  # the configured kind is built now: nothing rebuilt
    assert vector_segments(pq) == before
    assert LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=embedder.dimension, refine_factor=3).refine == 3
    with pytest.raises(StoreError, match="hnsw"):
        LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=embedder.dimension, vector_index="hnsw")


def _fragments(store: LanceStore) -> list[tuple[int, int]]:
    import lance

    return [(f.fragment_id, f.count_rows()) for f in lance.dataset(str(store.path / "chunks.lance")).get_fragments()]


def test_optimize_leaves_fragments_of_the_target_size_alone(tmp_path, embedder):
    """Compaction folds a sync's small writes together but never rewrites a fragment that reached
    ``fragment_rows``: LanceDB's own optimize() rewrites every fragment under 1,048,576 rows with the new
    ones, at 1M chunks the whole table for each 2,048 new chunks. The writes since the last optimize are
    merged before they are indexed; small indexed fragments only once enough have gathered."""
    base = _corpus(embedder, n_big=3000, n_small=0)
    store = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=embedder.dimension,
                       ann_min_rows=1000, fragment_rows=2000)
    store.fold_indexed_fragments = 3
    store.lancedb().table.add(store.arrow(base))  # one 3,000-row fragment, as a bulk load writes it
    store.optimize()
    [(base_id, rows)] = _fragments(store)
    assert rows == 3000
    rng = np.random.default_rng(3)
    counts = []
    for b in range(4):
        for commit in range(3):  # a sync commits a batch at a time, then optimizes
            new = [make_chunk(embedder, f"new{b}-{commit}-{i}", " ".join(rng.choice(WORDS, 8)) + f" batch{b}",
                              ("group:big",)) for i in range(50)]
            store.replace_documents([c.doc_id for c in new], new)
        store.optimize()
        frags = _fragments(store)
        assert frags[0] == (base_id, 3000)  # never rewritten
        assert sum(n for _, n in frags) == 3000 + 150 * (b + 1)
        counts.append(len(frags) - 1)
        stats = store.stats().indexes["vector"]
        assert (stats.segments, stats.unindexed_rows) == (1, 0)
    # each optimize merged its three commits into one fragment; the fourth folded the three indexed ones
    # into one (Lance merges indexed and not-yet-indexed fragments separately)
    assert counts == [1, 2, 3, 2]
    v = embedder.embed_query("batch3 spindle")
    assert any(cid.startswith("new3-") for cid, _ in store.rank_dense(v, frozenset({"group:big"}), 10))
    assert store.rank_terms(analyze("batch2"), frozenset({"group:big"}), 5)
    assert store.count() == 3600
    # positive control: LanceDB's optimize() folds the base fragment into the rewrite
    store.lancedb().table.optimize()
    assert [n for _, n in _fragments(store)] == [3600] and _fragments(store)[0][0] != base_id


def test_optimize_indexes_new_terms_as_segments_and_merges_them(tmp_path, embedder):
    """Each optimize indexes the new rows' terms as a new full-text segment (folding them into the index
    rewrote all of it at every optimize). BM25 reads every segment: a
    chunk in any segment is found, one deleted or re-ACLed after its segment was written is not (the new
    reader still finds it), and the segments are merged into one once there would be more than
    ``max_terms_segments``."""
    store = _store(tmp_path, embedder, _corpus(embedder, n_big=200, n_small=0))
    store.max_terms_segments = 3
    big = frozenset({"group:big"})

    def found(word: str, labels=big) -> set[str]:
        return {cid for cid, _ in store.rank_terms(analyze(word), labels, 50)}

    segments = []
    for b in range(4):
        new = [make_chunk(embedder, f"b{b}-{i}", f"zeta{b} " + " ".join(WORDS[i % 10:i % 10 + 3]), ("group:big",))
               for i in range(20)]
        store.replace_documents([c.doc_id for c in new], new)
        store.optimize()
        stats = store.stats().indexes["terms"]
        segments.append(stats.segments)
        assert stats.unindexed_rows == 0  # indexed, not scanned flat
        for j in range(b + 1):
            first = 2 if j == 0 and b >= 2 else 0  # b0-0 and b0-1 changed after the second optimize
            assert found(f"zeta{j}") == {f"b{j}-{i}-0" for i in range(first, 20)}, (b, j)
        assert len(found("maintenance")) == 50  # the base rows, in the first segment (or the merged one)
        if b == 1:  # three segments: change rows the second one indexed
            store.replace_documents(["b0-0"], [])
            moved = make_chunk(embedder, "b0-1", "zeta0 " + " ".join(WORDS[1:4]), ("group:other",))
            store.replace_documents(["b0-1"], [moved])
            assert found("zeta0") == {f"b0-{i}-0" for i in range(2, 20)}
            assert found("zeta0", frozenset({"group:other"})) == {"b0-1-0"}  # positive control: its new reader
    assert segments == [2, 3, 1, 2]  # the third optimize merged three segments and the new rows into one
    assert found("zeta0") == {f"b0-{i}-0" for i in range(2, 20)}


def test_replace_documents_swaps_in_one_commit_and_survives_a_racing_writer(tmp_path, embedder):
    """A replace deletes the documents' old rows and adds the new ones in one commit (its own, since it no
    longer goes through LanceDB's merge_insert: bench/write_cost.py). Two writers racing on the same
    fragment both land (they queue on the index's write lock); nothing is lost or doubled."""
    import threading

    chunks = _corpus(embedder, n_big=200, n_small=0)
    store = _store(tmp_path, embedder, chunks)
    big = frozenset({"group:big"})
    version = store.table_version()
    store.replace_documents(["big5"], [make_chunk(embedder, "big5", "zebra crossing", ("group:big",), ordinal=1)])
    assert store.table_version() == version + 1  # one commit: never the old and the new chunk, never neither
    assert {c for c, _ in store.rank_terms(analyze("zebra"), big, 5)} == {"big5-1"}
    assert "big5-0" not in {r["chunk_id"] for r in store.rows_for(["big5"])}
    with pytest.raises(StoreError, match="not being replaced"):
        store.replace_documents(["big6"], [make_chunk(embedder, "big7", "stray", ("group:big",))])

    errors = []

    def writer(first: int) -> None:
        try:
            for i in range(first, 200, 2):  # every document of the base fragment, two writers interleaved
                store.replace_documents([f"big{i}"], [make_chunk(embedder, f"big{i}", f"okapi{i} new", ("group:big",), ordinal=2)])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = store.rows_for([f"big{i}" for i in range(200)])
    assert sorted(r["chunk_id"] for r in rows) == sorted(f"big{i}-2" for i in range(200))
    assert store.count() == 200


def test_a_replace_that_loses_a_commit_race_re_reads_and_lands_without_undoing_the_winner(tmp_path, embedder, monkeypatch):
    """A writer that does not queue on the lock (here: another store object committing between this replace's
    read and its commit, on the same fragment) makes Lance reject the replace; it re-reads and commits again,
    and both changes are in the index: the winner's rewrite is kept, the loser's lands once."""
    import lance.fragment

    chunks = _corpus(embedder, n_big=20, n_small=0)
    store = _store(tmp_path, embedder, chunks)
    other = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=embedder.dimension)
    real_write, calls = lance.fragment.write_fragments, []

    def write_then_lose_the_race(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the replace below has read its rows' addresses; another writer commits now
            other._swap("doc_id IN ('big3')", other.arrow(
                [make_chunk(embedder, "big3", "winner text", ("group:big",), ordinal=5)]))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(lance.fragment, "write_fragments", write_then_lose_the_race)
    version = store.table_version()
    store.replace_documents(["big4"], [make_chunk(embedder, "big4", "loser text", ("group:big",), ordinal=6)])
    assert len(calls) == 3  # the replace, the winner's commit inside it, the replace once more after the conflict
    assert store.table_version() == version + 2
    rows = {r["chunk_id"]: r["text"] for r in store.rows_for([f"big{i}" for i in range(20)])}
    assert rows["big3-5"] == "winner text" and rows["big4-6"] == "loser text"
    assert "big3-0" not in rows and "big4-0" not in rows and len(rows) == 20


def test_fetch_reads_ranked_chunks_by_row_id_only_for_the_filter_that_ranked_them(tmp_path, embedder, monkeypatch):
    """A chunk a ranking found is read by its row id (no look-up query); only a fetch under the same labels
    uses that row id, so another principal knowing the id still gets nothing; a chunk re-ACLed, removed or
    moved by compaction since it was ranked is read by the ACL-filtered look-up instead."""
    from lance.dataset import LanceDataset

    chunks = [make_chunk(embedder, f"fin{i}", f"budget forecast {i}", ("group:finance",)) for i in range(6)]
    chunks += [make_chunk(embedder, "both", "budget forecast shared", ("group:finance", "group:hr"))]
    store = _store(tmp_path, embedder, chunks, exact_threshold=0)  # every ranking through the full-text index
    lookups = []
    to_table = LanceDataset.to_table
    monkeypatch.setattr(LanceDataset, "to_table", lambda self, *a, **kw: lookups.append(kw.get("filter")) or to_table(self, *a, **kw))
    finance, hr = Principal("f", frozenset({"finance"})).labels(), Principal("h", frozenset({"hr"})).labels()
    ranked = store.rank_terms(analyze("budget forecast"), finance, 10)
    assert len(ranked) == 7
    hits = store.fetch(ranked, finance)
    assert [h.row["chunk_id"] for h in hits] == [c for c, _ in ranked] and lookups == []  # all by row id
    assert {h.row["text"] for h in hits} == {c.text for c in chunks}
    assert store.fetch([("fin0-0", 1.0)], hr) == [] and len(lookups) == 1  # finance's row ids are not hr's
    assert [h.row["chunk_id"] for h in store.fetch([("both-0", 1.0)], hr)] == ["both-0"]  # positive control

    # re-ACLed (same chunk id, new row) and removed after the ranking: the look-up decides
    store.replace_documents(["fin1"], [make_chunk(embedder, "fin1", "budget forecast 1", ("group:board",))])
    store.replace_documents(["fin2"], [])
    lookups.clear()
    got = [h.row["chunk_id"] for h in store.fetch(ranked, finance)]
    assert got == [c for c, _ in ranked if c not in ("fin1-0", "fin2-0")] and len(lookups) == 1
    board = Principal("b", frozenset({"board"})).labels()
    assert [h.row["chunk_id"] for h in store.fetch([("fin1-0", 1.0)], board)] == ["fin1-0"]

    # compaction moves the rows to a new data file: the remembered row ids point nowhere
    ranked = store.rank_terms(analyze("budget forecast"), finance, 10)
    ranked_files = {row >> 32 for (key, _), row in store._hints.items() if key[0] == finance}
    store.lancedb().dataset().optimize.compact_files(target_rows_per_fragment=1_000_000)
    assert not ranked_files & {f.fragment_id for f in store.lancedb().dataset().get_fragments()}
    lookups.clear()
    assert [h.row["chunk_id"] for h in store.fetch(ranked, finance)] == [c for c, _ in ranked] and len(lookups) == 1
