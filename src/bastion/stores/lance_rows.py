"""Row reads through the Lance engine at the chunk table's latest version.

:class:`LanceRows` holds the snapshot (the latest version as a Lance dataset and its fragment ids)
that :meth:`LanceStore.fetch <bastion.stores.lance.LanceStore.fetch>` reads, and is the
:class:`~bastion.stores.exact.RowSource` of the in-memory entries (:mod:`.exact`). These reads go
through the Lance engine directly rather than LanceDB's query layer, which is markedly slower for
listings and takes by row id, and a refresh after each commit runs on the query path
(figures: docs/benchmarks.md, 'Search latency').
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pyarrow as pa

from bastion.stores.exact import KeyRows, RowBatch
from bastion.stores.lance_schema import acl_filter

__all__ = ["LanceRows", "RowKey"]

# An in-memory entry's key: (ACL label, the filter's source part: one, several sorted, or None for any)
RowKey = tuple[str, str | tuple[str, ...] | None]


class LanceRows:
    """The table's latest version as a Lance dataset, and the in-memory entries' reads from it.

    Args:
        reader: the LanceDB async table behind the store's table.
        run: runs a LanceDB coroutine on LanceDB's background loop and returns its result.
        dimension: the vectors' dimension.
        read_columns: the columns a hit shows (chunk id included), as the store reads them.
    """

    def __init__(self, reader: Any, run: Callable[[Awaitable[Any]], Any], dimension: int,
                 read_columns: list[str]) -> None:
        self._reader, self._run = reader, run
        self.dimension, self.read_columns = dimension, read_columns
        self._snap: tuple[Any, frozenset[int]] | None = None  # (Lance dataset at one version, its fragment ids)

    def dataset(self) -> Any:
        """The table's latest version, opened anew as a ``lance.LanceDataset`` (for what LanceDB does not expose)."""
        import lance

        return lance.dataset(self._run(self._reader.uri()))

    def snapshot(self) -> tuple[Any, frozenset[int]]:
        """(the table's latest version as a Lance dataset, the ids of its data files); the dataset
        is opened once and moved to each new version."""
        snap = self._snap
        if snap is None:
            ds = self.dataset()
        else:
            ds = snap[0]
            latest = ds.latest_version
            if latest == ds.version:
                return snap
            ds = ds.checkout_version(latest)
        snap = (ds, frozenset(f.fragment_id for f in ds.get_fragments()))
        self._snap = snap
        return snap

    # -- RowSource (:mod:`.exact`) ------------------------------------------------------------
    def list_rows(self, keys: tuple[RowKey, ...]) -> np.ndarray:
        """Row ids the union of (label, source) keys admits: the LABEL_LIST index answers without reading a column."""
        where = acl_filter(frozenset(label for label, _ in keys), keys[0][1])
        ids: np.ndarray = self.snapshot()[0].to_table(columns=[], filter=where, with_row_id=True).column("_rowid").to_numpy()
        return ids

    def read_key(self, key: RowKey) -> KeyRows:
        """Every row of one (label, source) key."""
        label, src = key
        t = self.snapshot()[0].to_table(columns=list(dict.fromkeys(["chunk_id", "vector", "terms", *self.read_columns])),
                                        filter=acl_filter(frozenset({label}), src), with_row_id=True)
        return KeyRows(t.column("_rowid").to_numpy(), t.column("chunk_id").to_pylist(), self._vectors(t),
                       t.column("terms"), self._shown(t))

    def read_rows(self, rows: np.ndarray, keys: tuple[RowKey, ...]) -> RowBatch:
        """The given rows, and which keys each is under; rows deleted or compacted away since they were
        listed are not returned."""
        columns = list(dict.fromkeys(["chunk_id", "vector", "acl", "source", "terms", *self.read_columns]))
        ds, fragments = self.snapshot()
        alive = [int(r) for r in rows if int(r) >> 32 in fragments]
        try:  # asking for the row ids makes a take of a deleted row fail instead of skipping it
            t = ds._take_rows(alive, columns=columns + ["_rowid"]) if alive else None
        except OSError:  # one was deleted since the listing: LanceDB's take skips it and still gives row ids
            t = self._run(self._reader.take_row_ids(alive).with_row_id().select(columns).to_arrow())
        if t is None:
            return RowBatch(np.zeros(0, np.int64), [], np.zeros((0, self.dimension), np.float32),
                            np.zeros((0, len(keys)), bool), [], None)
        acls, sources = t.column("acl").to_pylist(), t.column("source").to_pylist()
        carries = np.array([[label in acl and (src is None or (source == src if isinstance(src, str) else source in src))
                             for label, src in keys] for acl, source in zip(acls, sources)], dtype=bool)
        return RowBatch(t.column("_rowid").to_numpy(), t.column("chunk_id").to_pylist(), self._vectors(t),
                        carries.reshape(len(acls), len(keys)), t.column("terms").to_pylist(), self._shown(t))

    def _vectors(self, t: pa.Table) -> np.ndarray:
        flat: np.ndarray = t.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(-1, self.dimension)

    def _shown(self, t: pa.Table) -> pa.Table:
        """The columns a hit shows besides its chunk id, compact, to hold beside the vectors."""
        return pa.table({c: t.column(c).combine_chunks() for c in self.read_columns if c != "chunk_id"})
