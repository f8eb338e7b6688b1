"""Exact search for principals who may read few chunks, from vectors (and terms) held in memory.

An ANN index probes the partitions nearest the query; when the chunks a principal may read are
few and sit elsewhere (a small group whose documents are all about one subject), the probed
partitions hold none or the wrong ones, and recall collapses (measured at 1M chunks: 0.29 for a
1 % group clustered in 1 % of the topics). Scanning those chunks exactly inside LanceDB reads
each authorised vector by row id, ~12 us a row at 1M (10k rows: ~130 ms). This module keeps
the vectors of small authorised sets in memory instead, so an exact search over 10k chunks is
one matrix-vector product (well under a millisecond of arithmetic).

A principal's authorised chunks are the union of the chunks carrying each of its labels, so the
cache holds one entry per ``(label, source)`` and users who share a group share its entry. An
entry is tagged with the table version it was read at. A query at a later version refreshes its
principal's stale entries together: one listing of the row ids the principal's filter admits now
(answered from the LABEL_LIST index without reading a column: ~2 ms for 1k rows at 100k chunks,
~5 ms for 10k at 1M; listing each label on its own cost ~2 ms a label, the count before it 2 ms
more), then one read of chunk id, vector and ACL for only the rows no entry could already account
for. A row that left the listing left every entry (deleted, or rewritten with another ACL). An entry
is a few immutable parts, each with a mask of its live rows, so a refresh that adds or drops a few
rows copies no vector, and the membership tests are binary searches in the sorted listing: at 1M
chunks a 1 % group's first search after a 500-chunk commit takes ~8-10 ms p50 (listing 3-5, reading
the new rows ~1.3, the rest ~1.2), against ~23 ms when each refresh copied the vectors and ran
numpy's set operations (bench/refresh_cost.py). The entries also hold their chunks' terms, for
BM25 over the principal's chunks (:mod:`.postings`).

That is sound because a LanceDB row id addresses immutable data: a row's labels and vector never
change under its id (an update, an ACL change included, deletes the row and writes a new one;
compaction writes new fragments, so moved rows read as new ones), and a chunk id names one vector
for ever (it hashes the document version, the ordinal and the text, ``bastion.chunking``; an index
refuses a second embedder). So a row some entry already held at a version no later than a key's
own, still alive now, existed at that key's version too: had it carried the key, the key's entry
would hold it. Every entry remembers since which version it holds each row for that test.

The entries also hold what a hit shows (text and packed citation), so the store's ``fetch`` of a
principal on this path reads nothing from the table (:meth:`ExactSets.shown`): a take of 10 rows at
1M chunks cost ~3 ms and woke Lance's I/O threads ~100 times, each wake-up a wait for a core while
a sync's embedder held the other one. Rows are shown only from entries at the fetch's version or
later and only while alive there; a stale entry shows nothing (the store reads the table then), so
it can reorder hits but never reveal or resurrect one.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from bastion.stores import postings
from bastion.stores.postings import Postings

# list_rows(keys) -> the row ids the union of the keys' filters admits now
ListRows = Callable[[tuple], np.ndarray]
# read_key(key) -> (row ids, chunk ids, vectors (n, dim), terms, shown) of every row of one key; ``shown``: the
# columns a hit shows (a table aligned with the rows), or None when they are to be read at fetch time
ReadKey = Callable[[Hashable], "tuple[np.ndarray, list[str], np.ndarray, Sequence[str], pa.Table | None]"]
# read_rows(rows, keys) -> (row ids found, chunk ids, vectors, carries: bool (found, len(keys)), which keys a row
# is under, terms, shown)
ReadRows = Callable[[np.ndarray, tuple],
                    "tuple[np.ndarray, list[str], np.ndarray, np.ndarray, Sequence[str], pa.Table | None]"]


@dataclass(frozen=True)
class _Part:
    """Rows read together. Never changed once made: the entries of later versions share it, so a refresh
    that drops or adds a few rows copies no vector (copying a 10k-row group's vectors twice cost ~20 ms
    per commit on the query path, measured at 1M chunks)."""
    rows: np.ndarray  # int64 row ids
    since: np.ndarray  # int64, aligned with rows: the version at which the entry first held the row (it existed then)
    ids: np.ndarray  # chunk ids (object array), aligned with rows
    vectors: np.ndarray  # (n, dim) float32, unit length, aligned with rows
    terms: Postings  # the rows' full-text terms, aligned with rows (:mod:`.postings`)
    shown: pa.Table | None = None  # the columns a hit shows (text, citation), aligned with rows, if held

    @classmethod
    def of(cls, rows, since, ids, vectors: np.ndarray, terms, shown: pa.Table | None = None) -> "_Part":
        """A part from rows in any order; ``vectors`` must be unit length already; ``terms`` as the
        ``terms`` column holds them; ``shown`` a table aligned with the rows, or None."""
        rows = np.asarray(rows, dtype=np.int64)
        since = np.broadcast_to(np.asarray(since, dtype=np.int64), rows.shape).copy()
        ids = np.asarray(ids, dtype=object) if len(rows) else np.array([], object)
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = vectors.reshape(len(rows), -1) if len(rows) else vectors.reshape(0, vectors.shape[-1] if vectors.ndim == 2 else 0)
        if shown is not None and shown.num_rows != len(rows):
            raise ValueError(f"{shown.num_rows} shown rows for {len(rows)} rows")
        return cls(rows, since, ids, vectors, Postings.of(terms), shown)

    @property
    def nbytes(self) -> int:
        return (int(self.vectors.nbytes) + 80 * len(self.ids) + self.terms.nbytes
                + (self.shown.nbytes if self.shown is not None else 0))

    def take(self, mask: np.ndarray) -> "_Part":
        return _Part(self.rows[mask], self.since[mask], self.ids[mask], self.vectors[mask], postings.take(self.terms, mask),
                     self.shown.filter(pa.array(mask)) if self.shown is not None else None)

    @staticmethod
    def join(parts: "Sequence[_Part]") -> "_Part":
        dim = max((p.vectors.shape[1] for p in parts if p.vectors.ndim == 2 and len(p.rows)), default=0)
        shown = None
        if parts and all(p.shown is not None for p in parts):
            shown = pa.concat_tables([p.shown for p in parts]).combine_chunks()
        return _Part(np.concatenate([p.rows for p in parts]), np.concatenate([p.since for p in parts]),
                     np.concatenate([p.ids for p in parts]),
                     np.concatenate([p.vectors.reshape(len(p.rows), dim) for p in parts]) if dim else
                     np.zeros((0, 0), np.float32), postings.join([p.terms for p in parts]), shown)


@dataclass(frozen=True)
class _Entry:
    """One key's rows at one table version: parts, each with a mask of the rows still under the key."""
    version: int
    parts: tuple[_Part, ...]
    alive: tuple[np.ndarray, ...]  # bool per part, aligned with its rows

    # a refresh appends a small part; past this many the appended ones are joined into one (copying only them)
    MAX_PARTS = 8
    # a part whose dead rows exceed this share of it is copied without them
    MAX_DEAD = 0.25

    @classmethod
    def of(cls, version: int, part: _Part) -> "_Entry":
        return cls(version, (part,), (np.ones(len(part.rows), bool),))

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate([p.rows[a] for p, a in zip(self.parts, self.alive)]) if self.parts else np.zeros(0, np.int64)

    @property
    def since(self) -> np.ndarray:
        return np.concatenate([p.since[a] for p, a in zip(self.parts, self.alive)]) if self.parts else np.zeros(0, np.int64)

    @property
    def size(self) -> int:
        return int(sum(int(a.sum()) for a in self.alive))

    @property
    def nbytes(self) -> int:  # dead rows still take their memory until their part is copied
        return sum(p.nbytes for p in self.parts)

    def refreshed(self, now: np.ndarray, add: "_Part | None", version: int) -> "_Entry":
        """Tagged ``version``: only the rows listed ``now`` (ascending) kept (a row that left the listing is gone), ``add`` appended."""
        parts = list(self.parts)
        alive = [a & _found(p.rows, now) for p, a in zip(parts, self.alive)]
        if add is not None and len(add.rows):
            parts.append(add)
            alive.append(np.ones(len(add.rows), bool))
        for i, (p, a) in enumerate(zip(parts, alive)):
            if len(a) and (len(a) - int(a.sum())) > self.MAX_DEAD * len(a):
                parts[i], alive[i] = p.take(a), np.ones(int(a.sum()), bool)
        if len(parts) > self.MAX_PARTS:  # join the appended parts (the first, usually the big one, stays)
            tail = _Part.join([p.take(a) for p, a in zip(parts[1:], alive[1:])])
            parts, alive = [parts[0], tail], [alive[0], np.ones(len(tail.rows), bool)]
        kept = [(p, a) for p, a in zip(parts, alive) if a.any()]
        return _Entry(version, tuple(p for p, _ in kept), tuple(a for _, a in kept))

    def top(self, q: np.ndarray, k: int):
        """(chunk id, similarity, row id) of up to k best rows of each part."""
        for part, alive in zip(self.parts, self.alive):
            if not len(part.rows):
                continue
            sims = part.vectors @ q
            if not alive.all():
                sims = np.where(alive, sims, -np.inf)
            top = np.argpartition(-sims, k - 1)[:k] if len(sims) > k else np.arange(len(sims))
            for i in top:
                if alive[i]:
                    yield part.ids[i], float(sims[i]), int(part.rows[i])


def _positions(values: np.ndarray, sorted_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``values``, its position in ``sorted_rows`` (ascending, unique, not empty) by binary
    search, and whether it is there. numpy's isin / setdiff1d sort or hash both arrays on every call:
    ~14 ms of each refresh of a 10k-row group."""
    idx = np.minimum(np.searchsorted(sorted_rows, values), len(sorted_rows) - 1)
    return idx, sorted_rows[idx] == values


def _found(values: np.ndarray, sorted_rows: np.ndarray) -> np.ndarray:
    """Which of ``values`` are in ``sorted_rows`` (ascending, unique)."""
    return _positions(values, sorted_rows)[1] if len(sorted_rows) else np.zeros(len(values), bool)


def _marks(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which of ``sorted_rows`` (ascending, unique) are among ``values``."""
    out = np.zeros(len(sorted_rows), bool)
    if len(values) and len(sorted_rows):
        idx, hit = _positions(values, sorted_rows)
        out[idx[hit]] = True
    return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


class ExactSets:
    """Per-key vectors for exact search, refreshed by table version, bounded by ``budget_bytes`` (LRU).

    >>> sets = ExactSets(budget_bytes=1 << 20)
    >>> table = {"group:a": (np.array([7, 9]), ["c1", "c2"], np.array([[1.0, 0.0], [0.0, 1.0]]), ["pump", "valve"])}
    >>> sets.rank(np.array([1.0, 0.1]), ["group:a"], 1, k=1, list_rows=lambda keys: table["group:a"][0],
    ...           read_key=lambda key: table[key], read_rows=None)[0][0]
    'c1'
    """

    # a refresh that lacks more than this share of the listed rows reads its keys whole again
    # instead of taking the missing rows by id
    REREAD_SHARE = 0.5

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # guards the dict; entries are immutable and replaced whole
        self._stripes = [threading.Lock() for _ in range(64)]  # one refresh of a set of keys at a time

    def holds(self, keys: Sequence[Hashable]) -> bool:
        """Whether every key has an entry (of any version): then a refresh lists the keys' rows, and the
        listing tells how many there are, so no count is needed first."""
        with self._lock:
            return all(key in self._entries for key in keys)

    def rank(self, vector: np.ndarray, keys: Sequence[Hashable], version: int, k: int, *,
             list_rows: ListRows, read_key: ReadKey, read_rows: ReadRows,
             limit: int | None = None, rows_out: dict | None = None) -> list[tuple[str, float]] | None:
        """The top-k (chunk id, cosine similarity) over the union of ``keys``' chunks at ``version``;
        None when a refresh finds the union holds more than ``limit`` rows (search another way).
        ``rows_out`` receives each returned chunk id's row id."""
        keys = tuple(dict.fromkeys(keys))
        entries = self._current(keys, version, list_rows, read_key, read_rows, limit)
        if entries is None:
            return None
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        q = q / (np.linalg.norm(q) or 1.0)
        best: dict[str, float] = {}
        rows: dict[str, int] = {}
        for entry in entries:
            for cid, sim, row in entry.top(q, k):
                best[cid] = sim  # a chunk under two keys has one vector: same score
                rows[cid] = row
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        if rows_out is not None:
            rows_out.update((cid, rows[cid]) for cid, _ in ranked)
        return ranked

    def rank_terms(self, terms: Sequence[str], keys: Sequence[Hashable], version: int, k: int, *,
                   list_rows: ListRows, read_key: ReadKey, read_rows: ReadRows,
                   limit: int | None = None, rows_out: dict | None = None) -> list[tuple[str, float]] | None:
        """The top-k (chunk id, BM25 score) over the union of ``keys``' chunks at ``version``, scored with
        that union's statistics (:mod:`.postings`); None as for :meth:`rank`."""
        keys = tuple(dict.fromkeys(keys))
        entries = self._current(keys, version, list_rows, read_key, read_rows, limit)
        if entries is None:
            return None
        parts = [(p.rows, p.ids, a, p.terms) for e in entries for p, a in zip(e.parts, e.alive)]
        # one entry's parts hold distinct rows; a row can repeat only across entries (a chunk under two keys)
        ranked = postings.bm25(terms, parts, k, shared=sum(1 for e in entries if e.size) > 1)
        if rows_out is not None:
            rows_out.update((cid, row) for cid, _, row in ranked)
        return [(cid, score) for cid, score, _ in ranked]

    def _held(self, keys: tuple) -> dict:
        with self._lock:
            held = {key: self._entries.get(key) for key in keys}
            for key, entry in held.items():
                if entry is not None:
                    self._entries.move_to_end(key)
        return held

    def _current(self, keys: tuple, version: int, list_rows: ListRows, read_key: ReadKey, read_rows: ReadRows,
                 limit: int | None) -> list[_Entry] | None:
        held = self._held(keys)
        if all(e is not None and e.version >= version for e in held.values()):
            return list(held.values())
        # a hybrid search's two legs ask at once: one refreshes, the other waits for it and finds it done
        with self._stripes[hash(keys) % len(self._stripes)]:
            held = self._held(keys)
            if all(e is not None and e.version >= version for e in held.values()):
                return list(held.values())
            return self._store(keys, held, self._refresh(keys, held, version, list_rows, read_key, read_rows, limit))

    def _store(self, keys: tuple, held: dict, fresh: dict | None) -> list[_Entry] | None:
        if fresh is None:
            return None
        with self._lock:
            for key, entry in fresh.items():
                old = self._entries.get(key)
                if old is not None and old.version > entry.version:
                    continue  # another query stored a newer one meanwhile
                if old is not None:
                    del self._entries[key]
                    self._bytes -= old.nbytes
                if entry.nbytes <= self.budget_bytes:
                    self._entries[key] = entry
                    self._bytes += entry.nbytes
            while self._bytes > self.budget_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
        return [fresh.get(key, held[key]) for key in keys]

    def _refresh(self, keys: tuple, held: dict, version: int, list_rows: ListRows, read_key: ReadKey,
                 read_rows: ReadRows, limit: int | None) -> dict | None:
        """New entries for the stale keys (the caller read ``version`` before any row, so an entry's rows
        are never older than its tag)."""
        stale = [key for key in keys if held[key] is None or held[key].version < version]
        known = [key for key in stale if held[key] is not None]
        fresh: dict[Hashable, _Entry] = {}
        if known:
            now = np.asarray(list_rows(keys), dtype=np.int64)
            if len(now) > 1 and not bool(np.all(now[1:] > now[:-1])):  # Lance lists them in order already
                now = np.unique(now)
            if limit is not None and len(now) > limit:
                return None
            # the rows each known key may lack: listed now, not in its entry, and not held by any entry
            # since a version no later than the key's own (see the module docstring)
            held_now, lacking = {}, np.zeros(len(now), bool)
            for key in known:
                entry = held[key]
                held_now[key] = _marks(now, entry.rows)
                accounted = held_now[key].copy()
                for e in held.values():
                    if e is not None and e is not entry:
                        accounted |= _marks(now, e.rows[e.since <= entry.version])
                lacking |= ~accounted
            wanted = now[lacking]
            if len(wanted) > self.REREAD_SHARE * max(1, len(now)):
                known = []  # mostly new (a compaction moved the rows, a re-sync replaced them): read whole
            else:
                found = (np.zeros(0, np.int64), [], np.zeros((0, 0), np.float32), np.zeros((0, len(known)), bool), [], None)
                if len(wanted):
                    found = read_rows(wanted, tuple(known))
                rows = np.asarray(found[0], dtype=np.int64)
                ids = np.array(list(found[1]), dtype=object)
                vectors = _unit(np.asarray(found[2], dtype=np.float32).reshape(len(rows), -1)) if len(rows) else None
                carries = np.asarray(found[3], dtype=bool).reshape(len(rows), len(known))
                terms = np.asarray(list(found[4]), dtype=object)
                shown = found[5]
                at = np.searchsorted(now, rows)  # the rows read are among those listed
                for j, key in enumerate(known):
                    entry = held[key]
                    add = carries[:, j] & ~held_now[key][at]
                    part = None
                    if add.any():
                        part = _Part.of(rows[add], version, ids[add], vectors[add], terms[add],
                                        shown.filter(pa.array(add)) if shown is not None else None)
                    fresh[key] = entry.refreshed(now, part, version)
        for key in stale:
            if key in fresh:
                continue
            rows, ids, vectors, terms, shown = read_key(key)
            vectors = np.asarray(vectors, dtype=np.float32)
            fresh[key] = _Entry.of(version, _Part.of(rows, version, list(ids),
                                                     _unit(vectors.reshape(len(ids), -1)) if len(ids) else vectors,
                                                     terms, shown))
        return fresh

    def shown(self, keys: Sequence[Hashable], version: int, rows: Sequence[int]) -> dict[int, dict] | None:
        """The shown columns (:class:`_Part`) of those of ``rows`` that one of the keys' entries holds
        alive, by row id; None unless every key's entry is held, at ``version`` or later, with its shown
        columns (read the rows another way then). ``rows`` must have existed at ``version`` (a ranking at
        it or earlier found them): a row id never comes back once deleted, so a row alive in an entry of
        a later version was alive at ``version`` too, and one no entry holds alive is deleted or no
        longer under the keys, as Lance's ``take`` at ``version`` would find it."""
        held = self._held(tuple(dict.fromkeys(keys)))
        if any(e is None or e.version < version or any(p.shown is None for p in e.parts) for e in held.values()):
            return None
        want = np.unique(np.asarray(list(rows), dtype=np.int64))
        out: dict[int, dict] = {}
        for entry in held.values():
            for part, alive in zip(entry.parts, entry.alive):
                at = np.flatnonzero(_found(part.rows, want) & alive)
                if len(at):
                    got = part.shown.take(pa.array(at)).to_pylist()
                    out.update((int(part.rows[i]), dict(row, chunk_id=part.ids[i])) for i, row in zip(at, got))
        return out

    @property
    def nbytes(self) -> int:
        return self._bytes
