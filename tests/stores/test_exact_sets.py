"""Exact dense search from vectors held in memory (bastion.stores.exact) and LanceStore's use of it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bastion.stores.exact import ExactSets
from bastion.stores.lance import LanceStore
from bastion.testing.contract import make_chunk
from bastion.testing.fakes import HashEmbedder


class Table:
    """What a LanceStore answers for each key: its rows (row id -> chunk id, vector); counts the reads."""

    def __init__(self, rows: dict[str, dict[str, np.ndarray]]):
        self.full_reads, self.partial_reads = 0, []
        self.row_of: dict[str, int] = {}
        self.rows = rows

    def _rid(self, cid: str) -> int:
        return self.row_of.setdefault(cid, 1000 + len(self.row_of))  # a chunk keeps its row

    def list_rows(self, key):
        return np.array([self._rid(c) for c in self.rows[key]], dtype=np.int64)

    def read(self, key, rows):
        by_row = {self._rid(c): c for c in self.rows[key]}
        if rows is None:
            self.full_reads += 1
            rows = list(by_row)
        else:
            self.partial_reads.append(sorted(by_row[int(r)] for r in rows if int(r) in by_row))
            rows = [int(r) for r in rows if int(r) in by_row]
        ids = [by_row[r] for r in rows]
        return np.array(rows, dtype=np.int64), ids, np.array([self.rows[key][c] for c in ids], np.float32).reshape(len(ids), -1)


def _brute(rows: dict[str, np.ndarray], q: np.ndarray, k: int) -> list[tuple[str, float]]:
    q = q / np.linalg.norm(q)
    sims = {cid: float(v @ q / np.linalg.norm(v)) for cid, v in rows.items()}
    return sorted(sims.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def _rank(sets, table, q, keys, version, k):
    return sets.rank(q, keys, version, k, list_rows=table.list_rows, read=table.read)


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def test_ranks_the_union_of_keys_exactly_and_once(rng):
    shared = rng.normal(size=16)
    a = {f"a{i}": rng.normal(size=16) for i in range(50)} | {"both": shared}
    b = {f"b{i}": rng.normal(size=16) for i in range(50)} | {"both": shared}
    table, sets = Table({"a": a, "b": b}), ExactSets(1 << 20)
    for _ in range(5):
        q = rng.normal(size=16)
        got = _rank(sets, table, q, ["a", "b"], 1, 10)
        assert [c for c, _ in got] == [c for c, _ in _brute(a | b, q, 10)]
        assert np.allclose([s for _, s in got], [s for _, s in _brute(a | b, q, 10)], atol=1e-5)
    q = shared + 0.01 * rng.normal(size=16)
    assert [c for c, _ in _rank(sets, table, q, ["a", "b"], 1, 3)].count("both") == 1
    assert table.full_reads == 2  # one per key; the other queries used the cache


def test_a_new_version_reads_only_the_vectors_it_lacks(rng):
    rows = {f"c{i}": rng.normal(size=8) for i in range(100)}
    table, sets = Table({"g": rows}), ExactSets(1 << 20)
    q = rng.normal(size=8)
    _rank(sets, table, q, ["g"], 1, 5)
    _rank(sets, table, q, ["g"], 1, 5)  # same version: no read at all
    assert table.full_reads == 1 and table.partial_reads == []
    gone = _brute(rows, q, 1)[0][0]
    del rows[gone]  # the best chunk left the group (deleted, or its ACL changed)
    rows["new"] = q * 3  # and a chunk equal to the query joined it
    got = _rank(sets, table, q, ["g"], 2, 5)
    assert got[0][0] == "new" and gone not in {c for c, _ in got}
    assert [c for c, _ in got] == [c for c, _ in _brute(rows, q, 5)]
    assert table.full_reads == 1 and table.partial_reads == [["new"]]


def test_a_mostly_new_set_is_read_whole_again(rng):
    table = Table({"g": {f"c{i}": rng.normal(size=8) for i in range(10)}})
    sets = ExactSets(1 << 20)
    _rank(sets, table, rng.normal(size=8), ["g"], 1, 3)
    table.rows["g"] = {f"d{i}": rng.normal(size=8) for i in range(10)}  # a re-sync replaced every chunk
    q = rng.normal(size=8)
    assert [c for c, _ in _rank(sets, table, q, ["g"], 2, 3)] == [c for c, _ in _brute(table.rows["g"], q, 3)]
    assert table.full_reads == 2 and table.partial_reads == []


def test_an_emptied_key_ranks_nothing_and_refills(rng):
    table, sets = Table({"g": {"c1": rng.normal(size=4)}}), ExactSets(1 << 20)
    q = rng.normal(size=4)
    assert [c for c, _ in _rank(sets, table, q, ["g"], 1, 3)] == ["c1"]
    table.rows["g"] = {}
    assert _rank(sets, table, q, ["g"], 2, 3) == []
    table.rows["g"] = {"c2": rng.normal(size=4)}
    assert [c for c, _ in _rank(sets, table, q, ["g"], 3, 3)] == ["c2"]


def test_memory_stays_within_the_budget_least_recently_used_first(rng):
    keys = {f"k{j}": {f"k{j}-{i}": rng.normal(size=64) for i in range(100)} for j in range(4)}
    table = Table(keys)
    q = rng.normal(size=64)
    sets = ExactSets(1 << 30)
    _rank(sets, table, q, ["k0"], 1, 3)
    one = sets.nbytes  # every key holds 100 rows of 64 dimensions
    assert one >= 100 * 64 * 4
    sets = ExactSets(2 * one + 10)  # room for two entries
    table.full_reads = 0
    for key in ("k0", "k1", "k0", "k2"):  # k1 is the least recently used when k2 arrives
        _rank(sets, table, q, [key], 1, 3)
    assert sets.nbytes <= sets.budget_bytes
    reads = table.full_reads
    _rank(sets, table, q, ["k0"], 1, 3), _rank(sets, table, q, ["k2"], 1, 3)
    assert table.full_reads == reads  # both still cached
    _rank(sets, table, q, ["k1"], 1, 3)
    assert table.full_reads == reads + 1  # evicted, read again
    big = ExactSets(one // 2)  # one entry does not fit: answered, not kept
    assert [c for c, _ in _rank(big, table, q, ["k3"], 1, 3)] == [c for c, _ in _brute(keys["k3"], q, 3)]
    assert big.nbytes == 0


# -- through LanceStore -----------------------------------------------------------------------
@pytest.fixture
def embedder():
    return HashEmbedder(dimension=64)


def _corpus(embedder):
    """A big group spread over many subjects and a small group all about one subject (clustered)."""
    rng = np.random.default_rng(5)
    words = "pump valve seal motor shaft bearing gear spindle coolant sensor lathe drill press belt".split()
    big = [make_chunk(embedder, f"big{i}", " ".join(rng.choice(words, 6)), ("group:big",)) for i in range(600)]
    small = [make_chunk(embedder, f"small{i}", f"payroll bonus schedule {i}", ("group:small",)) for i in range(20)]
    return big, small


def test_a_clustered_small_group_gets_its_true_neighbours_with_an_ann_index(tmp_path, embedder):
    big, small = _corpus(embedder)
    store = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=64, ann_min_rows=256, nprobes=1)
    store.replace_documents([c.doc_id for c in big + small], big + small)
    store.optimize()
    assert "vector" in store._indexed_columns
    probes = []
    real = store._ann
    store._ann = lambda *a: probes.append(a[1]) or real(*a)
    v = embedder.embed_query("spindle coolant pump")  # a query far from the small group's subject
    want = sorted(((float(c.vector @ v), c.chunk_id) for c in small), reverse=True)[:5]
    got = store.rank_dense(v, frozenset({"group:small"}), 5)
    assert [s for _, s in got] == pytest.approx([s for s, _ in want], abs=1e-5)
    assert {c for c, _ in got} <= {c.chunk_id for c in small}
    assert probes == []  # exact from memory: the IVF probe, which can miss a clustered group, was not asked
    # positive control: the big group (600 chunks > exact_threshold) gets its neighbours through the ANN index
    store.exact_threshold = 100
    assert {c for c, _ in store.rank_dense(v, frozenset({"group:big"}), 5)} <= {c.chunk_id for c in big}
    assert len(probes) == 1


def test_another_writers_changes_show_on_the_next_exact_search(tmp_path, embedder):
    """A sync in another process adds a chunk to the small group and moves one out of it (ACL change):
    the next search by the reader sees both, reading only the new rows."""
    big, small = _corpus(embedder)
    reader = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=64)
    writer = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=64, ann_min_rows=256)
    writer.replace_documents([c.doc_id for c in big + small], big + small)
    writer.optimize()  # the writer builds the vector index; the reader, opened before, notices it
    labels = frozenset({"group:small", "user:eve"})
    v = embedder.embed_query("payroll bonus schedule 3")
    first = reader.rank_dense(v, labels, 3)
    assert first[0][0] == "small3-0"
    reads = []
    real = reader._label_vectors
    reader._label_vectors = lambda key, rows: reads.append((key, rows)) or real(key, rows)
    moved = make_chunk(embedder, "small3", "payroll bonus schedule 3", ("group:hr",))  # same text, ACL changed
    added = make_chunk(embedder, "bonus", "payroll bonus schedule 3 rules", ("group:small",))
    writer.replace_documents(["small3", "bonus"], [moved, added])
    after = [c for c, _ in reader.rank_dense(v, labels, 3)]
    assert "small3-0" not in after and "bonus-0" in after
    # user:eve holds no chunk: nothing to read; group:small: only the new chunk's row is taken
    assert [(key, len(rows)) for key, rows in reads] == [(("group:small", None), 1)]
    # positive control: group:hr now reads the moved chunk
    assert reader.rank_dense(v, frozenset({"group:hr"}), 1)[0][0] == "small3-0"
    # a compaction moves rows to new fragments: their old row ids are gone, the search stays right
    writer.optimize()
    assert [c for c, _ in reader.rank_dense(v, labels, 3)] == after


def test_a_source_filter_keeps_its_own_entries(tmp_path, embedder):
    big, small = _corpus(embedder)
    other = [replace(make_chunk(embedder, f"other{i}", f"payroll bonus schedule {i}", ("group:small",)), source="other")
             for i in range(5)]
    store = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=64, ann_min_rows=256)
    store.replace_documents([c.doc_id for c in big + small + other], big + small + other)
    store.optimize()
    v = embedder.embed_query("payroll bonus schedule 2")
    labels = frozenset({"group:small"})
    assert {c for c, _ in store.rank_dense(v, labels, 10, source="other")} == {c.chunk_id for c in other}
    assert {c for c, _ in store.rank_dense(v, labels, 30)} == {c.chunk_id for c in small + other}
    assert store.rank_dense(v, labels, 3, source=["nowhere"]) == []
