"""Exact dense search for principals who may read few chunks, from vectors held in memory.

An ANN index probes the partitions nearest the query; when the chunks a principal may read are
few and sit elsewhere (a small group whose documents are all about one subject), the probed
partitions hold none or the wrong ones, and recall collapses (measured at 1M chunks: 0.29 for a
1 % group clustered in 1 % of the topics). Scanning those chunks exactly inside LanceDB reads
each authorised vector by row id, ~12 us a row at 1M (10k rows: ~130 ms). This module keeps
the vectors of small authorised sets in memory instead, so an exact search over 10k chunks is
one matrix-vector product (well under a millisecond of arithmetic).

A principal's authorised chunks are the union of the chunks carrying each of its labels, so the
cache holds one entry per ``(label, source)`` and users who share a group share its entry. An
entry is tagged with the table version it was read at. A query at a later version refreshes it:
it lists the key's row ids again (answered from the LABEL_LIST index without reading a column:
~5 ms for 10k rows at 1M, where listing the chunk ids takes ~40 ms) and reads chunk id and vector
only for rows it did not hold. That is sound because a LanceDB row id addresses immutable data
(a fragment is never rewritten in place; compaction writes new fragments, so moved rows read as
new ones), and because a chunk id names one vector for ever (it hashes the document version, the
ordinal and the text, ``bastion.chunking``; an index refuses a second embedder), so even a row id
kept across an in-place update (stable row ids) still holds the same vector. Results are ranked
chunk ids only; rows are read by the store's ACL-filtered ``fetch``, so a stale entry could never
yield a chunk the principal may not read.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

# list_rows(key) -> the row ids the key's filter admits now
ListRows = Callable[[Hashable], np.ndarray]
# read(key, rows) -> (row ids found, their chunk ids, their vectors (n, dim)); rows=None: every row of the key
ReadRows = Callable[[Hashable, "np.ndarray | None"], "tuple[np.ndarray, list[str], np.ndarray]"]


@dataclass(frozen=True)
class _Entry:
    version: int
    rows: np.ndarray  # int64 row ids, sorted
    ids: np.ndarray  # chunk ids (object array), aligned with rows
    vectors: np.ndarray  # (n, dim) float32, unit length, aligned with rows

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes) + 72 * len(self.ids)

    @classmethod
    def of(cls, version: int, rows: np.ndarray, ids, vectors: np.ndarray) -> "_Entry":
        """An entry from rows in any order; ``vectors`` must be unit length already."""
        rows = np.asarray(rows, dtype=np.int64)
        ids = np.asarray(ids, dtype=object) if len(rows) else np.array([], object)
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = vectors.reshape(len(rows), -1) if len(rows) else vectors.reshape(0, vectors.shape[-1] if vectors.ndim == 2 else 0)
        if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):  # appended rows usually sort last already
            order = np.argsort(rows, kind="stable")
            rows, ids, vectors = rows[order], ids[order], vectors[order]
        return cls(version, rows, ids, vectors)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


class ExactSets:
    """Per-label vectors for exact search, refreshed by table version, bounded by ``budget_bytes`` (LRU).

    >>> sets = ExactSets(budget_bytes=1 << 20)
    >>> table = {"group:a": (np.array([7, 9]), ["c1", "c2"], np.array([[1.0, 0.0], [0.0, 1.0]]))}
    >>> sets.rank(np.array([1.0, 0.1]), ["group:a"], 1, k=1,
    ...           list_rows=lambda key: table[key][0], read=lambda key, rows: table[key])[0][0]
    'c1'
    """

    # a refresh that lacks more than this share of the key's rows reads the key whole again
    # instead of taking the missing rows by id
    REREAD_SHARE = 0.5

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # guards the dict; entries are immutable and replaced whole

    def rank(self, vector: np.ndarray, keys: Sequence[Hashable], version: int, k: int, *,
             list_rows: ListRows, read: ReadRows) -> list[tuple[str, float]]:
        """The top-k (chunk id, cosine similarity) over the union of ``keys``' chunks at ``version``."""
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        q = q / (np.linalg.norm(q) or 1.0)
        best: dict[str, float] = {}
        for key in dict.fromkeys(keys):
            entry = self._current(key, version, list_rows, read)
            if not len(entry.ids):
                continue
            sims = entry.vectors @ q
            top = np.argpartition(-sims, k - 1)[:k] if len(sims) > k else np.arange(len(sims))
            for i in top:
                best[entry.ids[i]] = float(sims[i])  # a chunk under two keys has one vector: same score
        return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    def _current(self, key: Hashable, version: int, list_rows: ListRows, read: ReadRows) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is not None and entry.version >= version:
            return entry
        entry = self._refresh(key, version, entry, list_rows, read)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes <= self.budget_bytes:
                self._entries[key] = entry
                self._bytes += entry.nbytes
                while self._bytes > self.budget_bytes:
                    _, evicted = self._entries.popitem(last=False)
                    self._bytes -= evicted.nbytes
        return entry

    def _refresh(self, key: Hashable, version: int, old: _Entry | None, list_rows: ListRows, read: ReadRows) -> _Entry:
        # The caller read ``version`` before any row, so an entry's rows are never older than its tag.
        if old is not None:
            now = np.unique(np.asarray(list_rows(key), dtype=np.int64))
            kept = np.isin(now, old.rows, assume_unique=True)
            missing = now[~kept]
            if len(missing) <= self.REREAD_SHARE * max(1, len(now)):
                if int(kept.sum()) == len(old.rows):  # no row left the key: keep its arrays as they are
                    rows, ids, vectors = [old.rows], [old.ids], [old.vectors]
                else:
                    at = np.searchsorted(old.rows, now[kept])
                    rows, ids, vectors = [old.rows[at]], [old.ids[at]], [old.vectors[at]]
                if len(missing):
                    found, found_ids, found_vectors = read(key, missing)
                    rows.append(np.asarray(found, dtype=np.int64))
                    ids.append(np.array(list(found_ids), dtype=object))
                    vectors.append(_unit(np.asarray(found_vectors, dtype=np.float32).reshape(len(found_ids), -1)))
                dim = max((v.shape[1] for v in vectors if v.ndim == 2 and len(v)), default=0)
                return _Entry.of(version, np.concatenate(rows), np.concatenate(ids),
                                 np.concatenate([v.reshape(len(v), dim) for v in vectors]))
        rows, ids, vectors = read(key, None)
        vectors = np.asarray(vectors, dtype=np.float32)
        return _Entry.of(version, rows, list(ids), _unit(vectors.reshape(len(ids), -1)) if len(ids) else vectors)

    @property
    def nbytes(self) -> int:
        return self._bytes

