"""Exact search for principals who may read few chunks, from vectors (and terms) held in memory.

**Why.** An ANN index probes the partitions nearest the query. When the chunks a principal may read
are few and sit elsewhere (a small group whose documents are all about one subject), the probed
partitions hold none or the wrong ones and recall collapses; scanning those chunks inside LanceDB
reads each authorised vector by row id, which is slow. This module keeps the vectors of small
authorised sets in memory instead, so an exact search is one matrix-vector product. The entries
also hold their chunks' terms, for BM25 over the principal's chunks (:mod:`.postings`), and what a
hit shows (text and packed citation), so the store's ``fetch`` for such a principal reads nothing
from the table (:meth:`ExactSets.shown`). (figures: docs/benchmarks.md, 'Search latency')

**Entries.** A principal's authorised chunks are the union of the chunks carrying each of its
labels, so the cache holds one entry per key, ``(label, source)`` in the store, and users who share
a group share its entry. An entry is tagged with the table version it was read at, and is a few
immutable parts, each with a mask of its live rows: a refresh that adds or drops a few rows copies
no vector, and membership tests are binary searches in a sorted listing.

**Refresh.** A query at a later version refreshes its principal's stale entries together through
one :class:`RowSource`: one listing of the row ids the principal's filter admits now
(:meth:`RowSource.list_rows`), then one read of only the rows no entry could already account for
(:meth:`RowSource.read_rows`); a key with no entry, or a refresh that lacks most of its rows, reads
the key whole (:meth:`RowSource.read_key`). A row that left the listing left every entry (deleted,
or rewritten with another ACL).

**Soundness.** A row id addresses immutable data: a row's labels and vector never change under its
id (an update, an ACL change included, deletes the row and writes a new one; compaction writes new
fragments, so moved rows read as new ones), and a chunk id names one vector for ever (it hashes the
document version, the ordinal and the text, ``bastion.chunking``; an index refuses a second
embedder). So a row some entry already held at a version no later than a key's own, still alive now,
existed at that key's version too: had it carried the key, the key's entry would hold it. Every
entry remembers since which version it holds each row for that test. Rows are shown only from
entries at the fetch's version or later and only while alive there; a stale entry shows nothing (the
store reads the table then), so it can reorder hits but never reveal or resurrect one.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
import pyarrow as pa

from bastion.stores import postings
from bastion.stores.postings import Postings

__all__ = ["ExactSets", "KeyRows", "RowBatch", "RowSource"]

Key = Hashable  # one entry's key: a (label, source) pair in the store
K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


class KeyRows(NamedTuple):
    """Every row of one key, as :meth:`RowSource.read_key` reads them; fields aligned with ``rows``."""

    rows: np.ndarray  # int64 row ids
    ids: Sequence[str]  # chunk ids
    vectors: np.ndarray  # (n, dim)
    terms: Sequence[str | None] | pa.Array | pa.ChunkedArray  # the rows' full-text terms
    shown: pa.Table | None = None  # the columns a hit shows, or None when they are read at fetch time


class RowBatch(NamedTuple):
    """Some rows, as :meth:`RowSource.read_rows` reads them; fields aligned with ``rows``."""

    rows: np.ndarray  # int64 row ids found (rows deleted since the listing are left out)
    ids: Sequence[str]  # chunk ids
    vectors: np.ndarray  # (n, dim)
    carries: np.ndarray  # bool (n, len(keys)): which of the asked keys each row is under
    terms: Sequence[str | None]  # the rows' full-text terms
    shown: pa.Table | None = None  # the columns a hit shows, or None

    @classmethod
    def empty(cls, keys: int) -> RowBatch:
        """No rows, for ``keys`` keys."""
        return cls(np.zeros(0, np.int64), [], np.zeros((0, 0), np.float32), np.zeros((0, keys), bool), [], None)


class RowSource(Protocol[K_contra]):
    """Where :class:`ExactSets` reads the rows of its keys (of type ``K_contra``), at the table's latest version."""

    def list_rows(self, keys: tuple[K_contra, ...]) -> np.ndarray:
        """The row ids the union of the keys' filters admits now."""
        ...

    def read_key(self, key: K_contra) -> KeyRows:
        """Every row of one key."""
        ...

    def read_rows(self, rows: np.ndarray, keys: tuple[K_contra, ...]) -> RowBatch:
        """The given rows that still exist, and which of ``keys`` each is under."""
        ...


@dataclass(frozen=True)
class _Part:
    """Rows read together. Never changed once made: the entries of later versions share it, so a refresh
    that drops or adds a few rows copies no vector (copying a large group's vectors on every commit
    showed on the query path)."""
    rows: np.ndarray  # int64 row ids
    since: np.ndarray  # int64, aligned with rows: the version at which the entry first held the row (it existed then)
    ids: np.ndarray  # chunk ids (object array), aligned with rows
    vectors: np.ndarray  # (n, dim) float32, unit length, aligned with rows
    terms: Postings  # the rows' full-text terms, aligned with rows (:mod:`.postings`)
    shown: pa.Table | None = None  # the columns a hit shows (text, citation), aligned with rows, if held

    @classmethod
    def of(cls, rows: np.ndarray | Sequence[int], since: int | np.ndarray, ids: Sequence[str] | np.ndarray,
           vectors: np.ndarray, terms: Sequence[str | None] | pa.Array | pa.ChunkedArray,
           shown: pa.Table | None = None) -> _Part:
        """A part from rows in any order; ``vectors`` must be unit length already; ``terms`` as the
        ``terms`` column holds them; ``shown`` a table aligned with the rows, or None."""
        row_ids = np.asarray(rows, dtype=np.int64)
        first = np.broadcast_to(np.asarray(since, dtype=np.int64), row_ids.shape).copy()
        chunk_ids = np.asarray(ids, dtype=object) if len(row_ids) else np.array([], object)
        vecs = np.asarray(vectors, dtype=np.float32)
        vecs = (vecs.reshape(len(row_ids), -1) if len(row_ids) else
                vecs.reshape(0, vecs.shape[-1] if vecs.ndim == 2 else 0))
        if shown is not None and shown.num_rows != len(row_ids):
            raise ValueError(f"{shown.num_rows} shown rows for {len(row_ids)} rows")
        return cls(row_ids, first, chunk_ids, vecs, Postings.of(terms), shown)

    @property
    def nbytes(self) -> int:
        return (int(self.vectors.nbytes) + 80 * len(self.ids) + self.terms.nbytes
                + (int(self.shown.nbytes) if self.shown is not None else 0))

    def take(self, mask: np.ndarray) -> _Part:
        return _Part(self.rows[mask], self.since[mask], self.ids[mask], self.vectors[mask], postings.take(self.terms, mask),
                     self.shown.filter(pa.array(mask)) if self.shown is not None else None)

    @staticmethod
    def join(parts: Sequence[_Part]) -> _Part:
        dim = max((p.vectors.shape[1] for p in parts if p.vectors.ndim == 2 and len(p.rows)), default=0)
        shown = None
        if parts and all(p.shown is not None for p in parts):
            shown = pa.concat_tables([p.shown for p in parts if p.shown is not None]).combine_chunks()
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
    def of(cls, version: int, part: _Part) -> _Entry:
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

    def refreshed(self, now: np.ndarray, add: _Part | None, version: int) -> _Entry:
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

    def top(self, q: np.ndarray, k: int) -> Iterator[tuple[str, float, int]]:
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
                    yield str(part.ids[i]), float(sims[i]), int(part.rows[i])


def _positions(values: np.ndarray, sorted_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``values``, its position in ``sorted_rows`` (ascending, unique, not empty) by binary
    search, and whether it is there (numpy's isin / setdiff1d sort or hash both arrays on every call,
    which dominated a refresh of a large group)."""
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

    Args:
        budget_bytes: memory the entries may take together; the least recently used go first.

    >>> class Rows:  # a RowSource over one key's two rows
    ...     def list_rows(self, keys): return np.array([7, 9])
    ...     def read_key(self, key):
    ...         return KeyRows(np.array([7, 9]), ["c1", "c2"], np.array([[1.0, 0.0], [0.0, 1.0]]), ["pump", "valve"])
    ...     def read_rows(self, rows, keys): return RowBatch.empty(len(keys))
    >>> sets = ExactSets(budget_bytes=1 << 20)
    >>> sets.rank(np.array([1.0, 0.1]), ["group:a"], 1, k=1, source=Rows())  # doctest: +ELLIPSIS
    [('c1', 0.995...)]
    >>> sets.rank_terms(["valve"], ["group:a"], 1, k=1, source=Rows())  # doctest: +ELLIPSIS
    [('c2', 0.693...)]
    """

    # a refresh that lacks more than this share of the listed rows reads its keys whole again
    # instead of taking the missing rows by id
    REREAD_SHARE = 0.5

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # guards the dict; entries are immutable and replaced whole
        self._stripes = [threading.Lock() for _ in range(64)]  # one refresh of a set of keys at a time

    def holds(self, keys: Sequence[Key]) -> bool:
        """Whether every key has an entry (of any version): then a refresh lists the keys' rows, and the
        listing tells how many there are, so no count is needed first."""
        with self._lock:
            return all(key in self._entries for key in keys)

    def rank(self, vector: np.ndarray, keys: Sequence[K], version: int, k: int, *, source: RowSource[K],
             limit: int | None = None, rows_out: dict[str, int] | None = None) -> list[tuple[str, float]] | None:
        """The top-k (chunk id, cosine similarity) over the union of ``keys``' chunks at ``version``;
        None when a refresh finds the union holds more than ``limit`` rows (search another way).
        ``rows_out`` receives each returned chunk id's row id."""
        entries = self._current(tuple(dict.fromkeys(keys)), version, source, limit)
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

    def rank_terms(self, terms: Sequence[str], keys: Sequence[K], version: int, k: int, *, source: RowSource[K],
                   limit: int | None = None, rows_out: dict[str, int] | None = None) -> list[tuple[str, float]] | None:
        """The top-k (chunk id, BM25 score) over the union of ``keys``' chunks at ``version``, scored with
        that union's statistics (:mod:`.postings`); None as for :meth:`rank`."""
        entries = self._current(tuple(dict.fromkeys(keys)), version, source, limit)
        if entries is None:
            return None
        parts = [(p.rows, p.ids, a, p.terms) for e in entries for p, a in zip(e.parts, e.alive)]
        # one entry's parts hold distinct rows; a row can repeat only across entries (a chunk under two keys)
        ranked = postings.bm25(terms, parts, k, shared=sum(1 for e in entries if e.size) > 1)
        if rows_out is not None:
            rows_out.update((cid, row) for cid, _, row in ranked)
        return [(cid, score) for cid, score, _ in ranked]

    def _held(self, keys: tuple[K, ...]) -> dict[K, _Entry | None]:
        with self._lock:
            held = {key: self._entries.get(key) for key in keys}
            for key, entry in held.items():
                if entry is not None:
                    self._entries.move_to_end(key)
        return held

    def _current(self, keys: tuple[K, ...], version: int, source: RowSource[K], limit: int | None) -> list[_Entry] | None:
        held = self._held(keys)
        current = [e for e in held.values() if e is not None and e.version >= version]
        if len(current) == len(held):
            return current
        # a hybrid search's two legs ask at once: one refreshes, the other waits for it and finds it done
        with self._stripes[hash(keys) % len(self._stripes)]:
            held = self._held(keys)
            if all(e is not None and e.version >= version for e in held.values()):
                return [_held_entry(held, key) for key in keys]
            return self._store(keys, held, self._refresh(keys, held, version, source, limit))

    def _store(self, keys: tuple[K, ...], held: dict[K, _Entry | None],
               fresh: dict[K, _Entry] | None) -> list[_Entry] | None:
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
        return [fresh[key] if key in fresh else _held_entry(held, key) for key in keys]

    def _refresh(self, keys: tuple[K, ...], held: dict[K, _Entry | None], version: int, source: RowSource[K],
                 limit: int | None) -> dict[K, _Entry] | None:
        """New entries for the stale keys (the caller read ``version`` before any row, so an entry's rows
        are never older than its tag)."""
        stale = [key for key in keys if (entry := held[key]) is None or entry.version < version]
        known = [key for key in stale if held[key] is not None]
        fresh: dict[K, _Entry] = {}
        if known:
            now = np.asarray(source.list_rows(keys), dtype=np.int64)
            if len(now) > 1 and not bool(np.all(now[1:] > now[:-1])):  # Lance lists them in order already
                now = np.unique(now)
            if limit is not None and len(now) > limit:
                return None
            # the rows each known key may lack: listed now, not in its entry, and not held by any entry
            # since a version no later than the key's own (see the module docstring)
            held_now: dict[K, np.ndarray] = {}
            lacking = np.zeros(len(now), bool)
            for key in known:
                entry = _held_entry(held, key)
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
                found = source.read_rows(wanted, tuple(known)) if len(wanted) else RowBatch.empty(len(known))
                rows = np.asarray(found.rows, dtype=np.int64)
                ids = np.array(list(found.ids), dtype=object)
                vectors = (_unit(np.asarray(found.vectors, dtype=np.float32).reshape(len(rows), -1)) if len(rows)
                           else np.zeros((0, 0), np.float32))
                carries = np.asarray(found.carries, dtype=bool).reshape(len(rows), len(known))
                terms = np.asarray(list(found.terms), dtype=object)
                shown = found.shown
                at = np.searchsorted(now, rows)  # the rows read are among those listed
                for j, key in enumerate(known):
                    add = carries[:, j] & ~held_now[key][at]
                    part = None
                    if add.any():
                        part = _Part.of(rows[add], version, ids[add], vectors[add], list(terms[add]),
                                        shown.filter(pa.array(add)) if shown is not None else None)
                    fresh[key] = _held_entry(held, key).refreshed(now, part, version)
        for key in stale:
            if key in fresh:
                continue
            got = source.read_key(key)
            vectors = np.asarray(got.vectors, dtype=np.float32)
            fresh[key] = _Entry.of(version, _Part.of(got.rows, version, list(got.ids),
                                                     _unit(vectors.reshape(len(got.ids), -1)) if len(got.ids) else vectors,
                                                     got.terms, got.shown))
        return fresh

    def shown(self, keys: Sequence[Key], version: int, rows: Sequence[int]) -> dict[int, dict[str, Any]] | None:
        """The shown columns (:class:`_Part`) of those of ``rows`` that one of the keys' entries holds
        alive, by row id; None unless every key's entry is held, at ``version`` or later, with its shown
        columns (read the rows another way then). ``rows`` must have existed at ``version`` (a ranking at
        it or earlier found them): a row id never comes back once deleted, so a row alive in an entry of
        a later version was alive at ``version`` too, and one no entry holds alive is deleted or no
        longer under the keys, as Lance's ``take`` at ``version`` would find it."""
        held = self._held(tuple(dict.fromkeys(keys)))
        entries = [e for e in held.values() if e is not None and e.version >= version
                   and all(p.shown is not None for p in e.parts)]
        if len(entries) < len(held):
            return None
        want = np.unique(np.asarray(list(rows), dtype=np.int64))
        out: dict[int, dict[str, Any]] = {}
        for entry in entries:
            for part, alive in zip(entry.parts, entry.alive):
                at = np.flatnonzero(_found(part.rows, want) & alive)
                if len(at) and part.shown is not None:
                    got = part.shown.take(pa.array(at)).to_pylist()
                    out.update((int(part.rows[i]), dict(row, chunk_id=part.ids[i])) for i, row in zip(at, got))
        return out

    @property
    def nbytes(self) -> int:
        """Memory the held entries take."""
        return self._bytes

    @property
    def entries(self) -> int:
        """How many keys have an entry held."""
        with self._lock:
            return len(self._entries)


def _held_entry(held: dict[K, _Entry | None], key: K) -> _Entry:
    """``held[key]``, which the caller knows to be there."""
    entry = held[key]
    assert entry is not None
    return entry
