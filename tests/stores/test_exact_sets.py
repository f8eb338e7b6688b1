"""Exact dense search from vectors held in memory (bastion.stores.exact) and LanceStore's use of it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from bastion.stores.exact import ExactSets, KeyRows, RowBatch
from bastion.stores.lance import LanceStore
from bastion.testing.contract import make_chunk
from bastion.testing.fakes import HashEmbedder


class Table:
    """What a LanceStore answers: each key's rows (chunk id -> vector). Like LanceDB, a row id addresses
    immutable data: a chunk whose keys change gets a new row id. Counts the reads."""

    def __init__(self, rows: dict[str, dict[str, np.ndarray]], texts: dict[str, str] | None = None):
        self.full_reads, self.partial_reads, self.listings = 0, [], 0
        self.row_of: dict[tuple, int] = {}
        self.rows = rows
        self.texts = texts if texts is not None else {}  # chunk id -> its full-text terms

    def _keys_of(self, cid: str) -> tuple:
        return tuple(sorted(k for k, rows in self.rows.items() if cid in rows))

    def _rid(self, cid: str) -> int:
        return self.row_of.setdefault((cid, self._keys_of(cid)), 1000 + len(self.row_of))

    def _vector(self, cid: str) -> np.ndarray:
        return next(rows[cid] for rows in self.rows.values() if cid in rows)

    def list_rows(self, keys):
        self.listings += 1
        return np.array(sorted({self._rid(c) for key in keys for c in self.rows[key]}), dtype=np.int64)

    def read_key(self, key):
        self.full_reads += 1
        ids = list(self.rows[key])
        return KeyRows(np.array([self._rid(c) for c in ids], dtype=np.int64), ids,
                       np.array([self.rows[key][c] for c in ids], np.float32).reshape(len(ids), -1) if ids
                       else np.zeros((0, 0), np.float32),
                       [self.texts.get(c, "") for c in ids], self._shown(ids))

    def _shown(self, ids):
        return pa.table({"text": pa.array([self.texts.get(c, "") for c in ids], pa.string())})

    def read_rows(self, rows, keys):
        live = {self._rid(c): c for r in self.rows.values() for c in r}
        found = [int(r) for r in rows if int(r) in live]
        ids = [live[r] for r in found]
        self.partial_reads.append(sorted(ids))
        carries = np.array([[c in self.rows[k] for k in keys] for c in ids], dtype=bool).reshape(len(ids), len(keys))
        return RowBatch(np.array(found, dtype=np.int64), ids,
                        np.array([self._vector(c) for c in ids], np.float32).reshape(len(ids), -1) if ids
                        else np.zeros((0, 0), np.float32),
                        carries, [self.texts.get(c, "") for c in ids], self._shown(ids))


def _brute(rows: dict[str, np.ndarray], q: np.ndarray, k: int) -> list[tuple[str, float]]:
    q = q / np.linalg.norm(q)
    sims = {cid: float(v @ q / np.linalg.norm(v)) for cid, v in rows.items()}
    return sorted(sims.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def _rank(sets, table, q, keys, version, k, limit=None):
    return sets.rank(q, keys, version, k, source=table, limit=limit)


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


def test_a_principals_keys_refresh_with_one_listing_and_read_only_new_rows(rng):
    a = {f"a{i}": rng.normal(size=8) for i in range(40)}
    table = Table({"group:a": a, "group:b": {f"b{i}": rng.normal(size=8) for i in range(40)}, "user:u": {}})
    sets, keys = ExactSets(1 << 20), ["group:a", "group:b", "user:u"]
    q = rng.normal(size=8)
    _rank(sets, table, q, keys, 1, 5)
    assert table.full_reads == 3 and table.listings == 0  # first read: whole keys, nothing to diff against
    a["new"] = q * 2
    table.rows["user:u"]["mine"] = -q  # the user's own chunk, far from the query
    del table.rows["group:b"]["b0"]
    got = _rank(sets, table, q, keys, 2, 80)
    everything = a | table.rows["group:b"] | table.rows["user:u"]
    assert [c for c, _ in got] == [c for c, _ in _brute(everything, q, 80)]
    assert table.full_reads == 3 and table.listings == 1 and table.partial_reads == [["mine", "new"]]


def test_many_commits_each_adding_and_removing_a_few_rows_stay_exact_without_reading_the_group_again(rng):
    """As under a sync that commits every few seconds: each version adds a few chunks to the group and
    removes a few (deleted, or moved to another group). Every search stays exact, reads only the new
    rows, and the entry's pieces and dead rows stay bounded (it does not grow with the commits)."""
    rows = {f"c{i}": rng.normal(size=8) for i in range(400)}
    table, sets = Table({"group:g": rows, "user:u": {}}), ExactSets(1 << 22)
    keys = ["group:g", "user:u"]
    q = rng.normal(size=8)
    _rank(sets, table, q, keys, 1, 10)
    for version in range(2, 42):
        added = {f"v{version}-{i}": rng.normal(size=8) for i in range(3)}
        if version % 7 == 0:
            added[f"v{version}-near"] = q * 2  # one that must come first
        for cid in list(rows)[:4 if version % 5 else 20]:  # now and then more at once
            del rows[cid]
        rows.update(added)
        table.partial_reads.clear()
        got = _rank(sets, table, q, keys, version, 10)
        assert [c for c, _ in got] == [c for c, _ in _brute(rows, q, 10)], version
        assert table.partial_reads == [sorted(added)]  # only the new rows were read
        entry = sets._entries[("group:g")]
        assert len(entry.parts) <= entry.MAX_PARTS
        assert entry.size == len(rows)
        held = sum(len(p.rows) for p in entry.parts)
        assert held - entry.size <= entry.MAX_DEAD * held  # dead rows bounded
    assert table.full_reads == 2  # the first search read each key whole; none since


def test_a_key_another_principal_refreshed_still_gets_rows_it_shares(rng):
    """Two users of one group: the first refreshes the group's entry; the second's own key is older,
    and a chunk both may read (ACL ``group:g, user:bob``) arrived in between: the second user sees it,
    and reads only that row, not the whole group."""
    g = {f"g{i}": rng.normal(size=8) for i in range(30)}
    table = Table({"group:g": g, "user:ann": {}, "user:bob": {}})
    sets, q = ExactSets(1 << 20), rng.normal(size=8)
    ann, bob = ["group:g", "user:ann"], ["group:g", "user:bob"]
    _rank(sets, table, q, ann, 1, 3), _rank(sets, table, q, bob, 1, 3)
    shared = q + 0.05 * rng.normal(size=8)
    g["shared"] = table.rows["user:bob"]["shared"] = shared
    assert _rank(sets, table, q, ann, 2, 1)[0][0] == "shared"  # refreshes group:g to version 2
    table.partial_reads.clear()
    assert _rank(sets, table, q, bob, 2, 1)[0][0] == "shared"
    assert table.partial_reads == [["shared"]]
    # positive control of the membership test: a chunk only ann may read never enters bob's key
    table.rows["user:ann"]["ann-only"] = q * 3
    assert _rank(sets, table, q, ann, 3, 1)[0][0] == "ann-only"
    assert "ann-only" not in {c for c, _ in _rank(sets, table, q, bob, 3, 40)}


def test_a_set_grown_past_the_limit_is_left_to_the_ann_index(rng):
    table = Table({"group:g": {f"c{i}": rng.normal(size=4) for i in range(10)}})
    sets, q = ExactSets(1 << 20), rng.normal(size=4)
    assert len(_rank(sets, table, q, ["group:g"], 1, 3, limit=15)) == 3
    table.rows["group:g"] |= {f"d{i}": rng.normal(size=4) for i in range(10)}
    assert _rank(sets, table, q, ["group:g"], 2, 3, limit=15) is None
    assert len(_rank(sets, table, q, ["group:g"], 2, 3, limit=30)) == 3


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
    assert store.vector_index_built
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
    reads, listings = [], []
    read_rows, read_key, list_rows = reader.rows.read_rows, reader.rows.read_key, reader.rows.list_rows
    reader.rows.read_rows = lambda rows, keys: reads.append(len(rows)) or read_rows(rows, keys)
    reader.rows.read_key = lambda key: reads.append(key) or read_key(key)
    reader.rows.list_rows = lambda keys: listings.append(keys) or list_rows(keys)
    counts, count = [], reader._count
    reader._count = lambda where, version: counts.append(where) or count(where, version)
    moved = make_chunk(embedder, "small3", "payroll bonus schedule 3", ("group:hr",))  # same text, ACL changed
    added = make_chunk(embedder, "bonus", "payroll bonus schedule 3 rules", ("group:small",))
    writer.replace_documents(["small3", "bonus"], [moved, added])
    after = [c for c, _ in reader.rank_dense(v, labels, 3)]
    assert "small3-0" not in after and "bonus-0" in after
    # one listing for both labels, no count, and only the new chunk's row is read (not the whole group)
    assert len(listings) == 1 and reads == [1] and counts == []
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


def test_reading_listed_rows_skips_those_deleted_or_compacted_away_since(tmp_path, embedder):
    """The in-memory vectors' row reads: a row deleted after it was listed, or whose data file compaction
    replaced, is not returned; the others come back with their ids, vectors and labels."""
    big, small = _corpus(embedder)
    store = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=64)
    store.replace_documents([c.doc_id for c in small], small)
    store.replace_documents([c.doc_id for c in big], big)  # a second data file
    keys = (("group:small", None),)
    rows = np.sort(store.rows.list_rows(keys))
    assert len(rows) == 20
    store.replace_documents(["small3"], [])  # deleted after the listing
    got_rows, ids, vectors, carries, terms, shown = store.rows.read_rows(rows, keys)
    assert sorted(ids) == sorted(c.chunk_id for c in small if c.doc_id != "small3") and len(got_rows) == 19
    by_id = {c.chunk_id: c for c in small}
    assert all(np.allclose(vectors[i], by_id[cid].vector) for i, cid in enumerate(ids)) and carries.all()
    assert terms == [by_id[cid].terms for cid in ids]
    assert shown.column("text").to_pylist() == [by_id[cid].text for cid in ids]  # what a hit shows, aligned
    store.rows.dataset().optimize.compact_files(target_rows_per_fragment=1_000_000)  # every row moves
    assert len(store.rows.read_rows(rows, keys).rows) == 0
    assert len(store.rows.read_rows(np.sort(store.rows.list_rows(keys)), keys).rows) == 19  # read again where they are now


def test_rows_are_shown_from_memory_only_while_alive_under_the_principals_keys(rng):
    """What a hit shows comes from the entries only for rows one of the principal's keys holds alive at
    the version asked: not another group's row, not a row deleted or moved to another group since, and
    nothing at all while an entry is older than that version (the store reads the table then)."""
    texts = {f"a{i}": f"alpha {i}" for i in range(5)} | {"b0": "beta 0"}
    table = Table({"group:a": {c: rng.normal(size=4) for c in texts if c[0] == "a"},
                   "group:b": {"b0": rng.normal(size=4)}}, texts=texts)
    sets, q = ExactSets(1 << 20), rng.normal(size=4)
    kw = dict(source=table)
    rows_a, rows_b = {}, {}
    sets.rank(q, ["group:a"], 1, 5, rows_out=rows_a, **kw)
    sets.rank(q, ["group:b"], 1, 5, rows_out=rows_b, **kw)
    asked = list(rows_a.values()) + list(rows_b.values())
    shown = sets.shown(["group:a"], 1, asked)
    assert {r["chunk_id"]: r["text"] for r in shown.values()} == {c: texts[c] for c in rows_a}  # not b0
    assert {r["chunk_id"] for r in sets.shown(["group:b"], 1, asked).values()} == {"b0"}  # positive control
    assert len(sets.shown(["group:a", "group:b"], 1, asked)) == 6
    del table.rows["group:a"]["a0"]  # a commit: a0 deleted, a1 moved to group:b (a new row)
    table.rows["group:b"]["a1"] = table.rows["group:a"].pop("a1")
    assert sets.shown(["group:a"], 2, asked) is None  # the entry is of version 1: not trusted for version 2
    sets.rank(q, ["group:a"], 2, 5, **kw)
    assert {r["chunk_id"] for r in sets.shown(["group:a"], 2, asked).values()} == {"a2", "a3", "a4"}
    assert sets.shown(["group:a"], 1, asked) is not None  # a later entry answers for an earlier version
    assert sets.shown(["group:c"], 1, asked) is None  # no entry for the key: nothing from memory


def test_a_small_groups_hits_are_shown_from_memory_and_never_stale(tmp_path, embedder, monkeypatch):
    """A principal on the exact path gets its hits' text and citation from memory, as Lance's take reads
    them; after a commit, a ranked chunk moved to another group is not shown (that group sees it) and a
    chunk rewritten under the same id shows its new text."""
    import lance

    big, small = _corpus(embedder)
    reader = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=64)
    writer = LanceStore(tmp_path / "idx", embedder_id=embedder.id, dimension=64, ann_min_rows=256)
    writer.replace_documents([c.doc_id for c in big + small], big + small)
    writer.optimize()
    takes = []
    take = lance.LanceDataset._take_rows
    monkeypatch.setattr(lance.LanceDataset, "_take_rows", lambda ds, *a, **kw: takes.append(a) or take(ds, *a, **kw))
    labels = frozenset({"group:small", "user:eve"})
    v = embedder.embed_query("payroll bonus schedule 3")
    hits = reader.search_dense(v, labels, 5)
    by_id = {c.chunk_id: c for c in small}
    assert hits[0].row["chunk_id"] == "small3-0" and takes == []  # no row read from the table
    assert all(h.row["text"] == by_id[h.row["chunk_id"]].text and h.row["path"] == by_id[h.row["chunk_id"]].path
               and h.row["char_end"] == by_id[h.row["chunk_id"]].char_end for h in hits)
    reader.show_from_memory = False  # the same rows read by Lance's take
    assert [h.row for h in reader.search_dense(v, labels, 5)] == [h.row for h in hits] and takes
    reader.show_from_memory = True

    ranked = reader.rank_dense(v, labels, 20)  # every chunk of the group, ranked before the commit
    moved = make_chunk(embedder, "small3", "payroll bonus schedule 3", ("group:hr",))
    edited = make_chunk(embedder, "small4", "payroll bonus schedule 4, revised", ("group:small",))
    writer.replace_documents(["small3", "small4"], [moved, edited])
    reader.rank_dense(v, labels, 5)  # a search after the commit: the entries in memory follow it
    got = {h.row["chunk_id"]: h.row["text"] for h in reader.fetch(ranked, labels)}
    assert "small3-0" not in got  # no longer the group's
    assert got["small4-0"] == "payroll bonus schedule 4, revised"  # the current text, not the one held before
    assert set(got) == {c for c, _ in ranked} - {"small3-0"}  # positive control: the others still shown
    assert [h.row["chunk_id"] for h in reader.fetch(ranked, frozenset({"group:hr"}))] == ["small3-0"]
