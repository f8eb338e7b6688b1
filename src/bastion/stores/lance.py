"""Embedded chunk index on LanceDB: writes and reads.

One table ``chunks`` (:mod:`.lance_schema`): vector, text, analysed BM25 terms (FTS index, whitespace
tokenizer), ACL labels (LABEL_LIST index), ``doc_id`` and ``chunk_id`` (BTREE indexes) and citation
fields. ``replace_documents`` swaps the old chunks of a set of documents for the new ones in one
Lance commit (:meth:`LanceStore._swap`): readers see either the old version or the new, never
both. Readers use a zero read-consistency interval and see each commit at once. Searches rank ids
first (``rank_dense`` / ``rank_terms`` read no text) and ``fetch`` reads full rows only for the
hits kept. A principal who may read few chunks is ranked from its vectors and terms held in memory
(:mod:`.exact`, :mod:`.postings`, read through :mod:`.lance_rows`); everyone else through the vector
and full-text indexes, with the ACL filter applied inside the query. Index maintenance lives in
:mod:`.lance_maintenance`.
"""
from __future__ import annotations

import fcntl
import json
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from bastion.core.errors import EmbedderMismatch, MissingExtraError, StoreError
from bastion.events import log
from bastion.stores.exact import ExactSets
from bastion.stores.lance_maintenance import IndexMaintainer
from bastion.stores.lance_rows import LanceRows, RowKey
from bastion.stores.lance_schema import (
    CITE,
    COLUMNS,
    META_FILE,
    TABLE,
    WRITE_LOCK,
    IndexStats,
    LanceHandles,
    StoreStats,
    acl_filter,
    expand,
    pack_cite,
    quote,
    rank_score,
    schema,
)
from bastion.stores.protocol import Ranked, SourceFilter, StoredChunk, StoreHit

__all__ = ["IndexStats", "LanceHandles", "LanceStore", "StoreStats", "acl_filter", "pack_cite"]

# Lance scores a filtered full-text query one of two ways: every document the filter admits (when it
# admits at most this percent of the index), or WAND over the posting lists skipping the others. Its
# default, 10 %, put a mid-sized ACL group on the first, slower way, while a group of about 1 % is
# faster that way than by WAND (figures: docs/benchmarks.md, 'Search latency'). Read once per
# process, at the first full-text query; the environment overrides.
os.environ.setdefault("LANCE_FLAT_SEARCH_PERCENT_THRESHOLD", "2")
# LanceDB and Lance log warnings to stderr that say nothing a user can act on ("KMeans: more than 10 % of
# clusters are empty" on every small index build, "partition N is empty, skipping" on every optimize);
# errors still show, and LANCEDB_LOG / LANCE_LOG set in the environment win.
os.environ.setdefault("LANCEDB_LOG", "error")
os.environ.setdefault("LANCE_LOG", "error")

FilterKey = tuple[frozenset[str], str | tuple[str, ...] | None]  # (labels, source) as hints and entries key them


class LanceStore:
    """LanceDB-backed :class:`~bastion.stores.protocol.ChunkStore`.

    Args:
        path: the index directory (created if missing).
        embedder_id: the embedder the vectors come from; an index refuses another (:class:`EmbedderMismatch`).
        dimension: the vectors' dimension.
        exact_threshold: a principal who may read at most this many chunks is ranked from memory (:mod:`.exact`).
        nprobes: IVF partitions a dense search probes.
        refine_factor: full vectors re-read per hit to re-rank what the vector index found
            (None: :attr:`default_refine` of the index's kind).
        ann_min_rows: rows from which :meth:`optimize` builds the vector index.
        exact_cache_mb: memory for the exact path's entries.
        fragment_rows: the data-file size compaction aims at (:mod:`.lance_maintenance`).
        vector_index: "IVF_SQ" or "IVF_PQ".

    >>> store = LanceStore("/tmp/idx", embedder_id="hash-64", dimension=64)   # doctest: +SKIP
    >>> store.stats().rows, store.exact_path(frozenset({"group:hr"}))   # doctest: +SKIP
    (0, False)
    """

    fold_indexed_fragments = 16  # small indexed fragments that make compaction fold them too (IndexMaintainer.compact)
    max_terms_segments = 8  # full-text index segments before optimize() merges them (IndexMaintainer.update_terms_index)
    commit_attempts = 20  # replace_documents() retries a commit that lost a race with another writer
    # full vectors re-read per hit to re-rank what the index found, by the index's kind, when not configured:
    # IVF_SQ's 8-bit codes rank closely enough with 2, IVF_PQ's need ~10 (figures: docs/benchmarks.md, 'Search latency')
    default_refine = {"IVF_SQ": 2, "IVF_PQ": 10}
    min_refine_rows = 20  # full vectors a search re-ranks at the least, whatever its k
    max_row_hints = 16_384  # ranked chunks whose row ids fetch() remembers (:meth:`_hint`)
    # fetch() shows a principal's hits from its in-memory entries when they hold them (False: always read
    # the table; for benchmarks and tests comparing the two)
    show_from_memory = True

    def __init__(self, path: str | Path, *, embedder_id: str, dimension: int,
                 exact_threshold: int = 50_000, nprobes: int = 20, refine_factor: int | None = None,
                 ann_min_rows: int = 100_000, exact_cache_mb: int = 512, fragment_rows: int = 262_144,
                 vector_index: str = "IVF_SQ") -> None:
        try:
            import lancedb
        except ImportError as exc:  # pragma: no cover - base dependency
            raise MissingExtraError("LanceDB is missing: pip install lancedb") from exc
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.embedder_id, self.dimension = embedder_id, dimension
        self.exact_threshold, self.nprobes, self.refine_factor = exact_threshold, nprobes, refine_factor
        self.ann_min_rows, self.fragment_rows = ann_min_rows, fragment_rows
        self.vector_index = vector_index.upper()
        if self.vector_index not in self.default_refine:
            raise StoreError(f"unknown vector index type {vector_index!r} (choose one of: "
                             f"{', '.join(k.lower() for k in self.default_refine)})")
        self._exact_sets = ExactSets(exact_cache_mb << 20)
        self._counts: dict[str, tuple[int, int]] = {}  # filter -> (table version, rows it admits)
        self._counts_lock = threading.Lock()
        self._check_meta()
        self._db = lancedb.connect(str(self.path), read_consistency_interval=timedelta(0))
        if TABLE in self._db.list_tables().tables:
            self._table = self._db.open_table(TABLE)
        else:
            self._table = self._db.create_table(TABLE, schema=schema(dimension), exist_ok=True)
        self._index_names: dict[str, str] = {}
        self._indexed_columns: set[str] = set()
        self.vector_index_built: str | None = None
        self._note_indexes(self._table.list_indices())
        self._seen_version = self._table.version
        # (labels, source, chunk id) -> the row id a ranking under that filter found it at (:meth:`fetch`)
        self._hints: OrderedDict[tuple[FilterKey, str], int] = OrderedDict()
        self._hints_lock = threading.Lock()
        # an index written before the packed ``cite`` column reads the separate columns (`bastion rebuild` adds it)
        self._cite = "cite" in self._table.schema.names
        # the columns a hit reads: chunk id, text and the packed citation
        self.read_columns = ["chunk_id", "text", "cite"] if self._cite else list(COLUMNS)
        # Searches go through the async table behind the sync one (same connection, caches and
        # consistency), run on LanceDB's own background loop: LanceDB's sync query builders fetch the
        # table schema several times per query, each a round trip to that loop with a consistency
        # check (figures: docs/benchmarks.md, 'Search latency'). Writes and index builds keep the sync API.
        from lancedb.background_loop import LOOP
        from lancedb.table import AsyncTable

        # LanceTable keeps its AsyncTable private; the type is checked just below
        self._reader: Any = self._table._table  # type: ignore[attr-defined]
        self._run: Callable[[Awaitable[Any]], Any] = LOOP.run
        if not isinstance(self._reader, AsyncTable):  # pragma: no cover - guards a LanceDB upgrade
            raise StoreError(f"unsupported LanceDB table type {type(self._reader).__name__} behind LanceTable")
        # the Lance snapshot fetch() reads, and the in-memory entries' row reads (:mod:`.lance_rows`)
        self.rows = LanceRows(self._reader, self._run, dimension, self.read_columns)
        self.maintenance = IndexMaintainer(self)

    def _check_meta(self) -> None:
        meta_path = self.path / META_FILE
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta["embedder_id"] != self.embedder_id or meta["dimension"] != self.dimension:
                raise EmbedderMismatch(
                    f"index {self.path} was built with embedder {meta['embedder_id']!r} "
                    f"({meta['dimension']} dimensions); the workspace now uses {self.embedder_id!r} "
                    f"({self.dimension} dimensions). Restore the old embedder setting, or run "
                    "`bastion rebuild` to re-embed everything with the new one."
                )
            return
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"embedder_id": self.embedder_id, "dimension": self.dimension}))
        os.replace(tmp, meta_path)

    # -- writes ---------------------------------------------------------------------------
    def arrow(self, chunks: list[StoredChunk]) -> pa.Table:
        """``chunks`` as the rows :meth:`replace_documents` writes (also for bulk loads through :meth:`lancedb`)."""
        table_schema = schema(self.dimension, self._cite)
        cols: dict[str, list[Any]] = {f.name: [] for f in table_schema}
        for c in chunks:
            for name in COLUMNS + ["terms"]:
                cols[name].append(getattr(c, name))
            cols["acl"].append(list(c.acl))
            cols["vector"].append(np.asarray(c.vector, dtype=np.float32))
            if self._cite:
                cols["cite"].append(pack_cite({name: getattr(c, name) for name in CITE}))
        vectors = np.stack(cols.pop("vector")) if chunks else np.zeros((0, self.dimension), np.float32)
        arrays = {k: pa.array(v, type=table_schema.field(k).type) for k, v in cols.items()}
        arrays["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), self.dimension)
        return pa.table(arrays, schema=table_schema)

    def replace_documents(self, doc_ids: list[str], chunks: list[StoredChunk]) -> None:
        """Atomically make ``chunks`` the only chunks of ``doc_ids`` (none: delete them), in one commit."""
        if not doc_ids:
            return
        for c in chunks:
            if c.vector.shape != (self.dimension,):
                raise EmbedderMismatch(f"vector of chunk {c.chunk_id} has shape {c.vector.shape}, index expects ({self.dimension},)")
        stray = sorted({c.doc_id for c in chunks} - set(doc_ids))
        if stray:
            raise StoreError(f"chunks of documents not being replaced: {', '.join(stray[:5])}")
        scope = f"doc_id IN ({', '.join(quote(d) for d in sorted(set(doc_ids)))})"
        data = self.arrow(chunks)
        from lance.commit import CommitConflictError

        for attempt in range(self.commit_attempts):
            try:
                with self._writing():
                    self._swap(scope, data)
                    return
            except CommitConflictError:  # a writer that does not take the lock (compaction) changed the same fragments
                if attempt == self.commit_attempts - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))  # let the other commit land, then re-read

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One replace at a time on this index, across threads and processes.

        Two replaces that touch the same fragment cannot both commit against the version they read;
        Lance rejects the second, which must re-read and try again. Retrying alone let a writer lose
        every round to one that never paused (20 conflicts in a row in a CI run of two threads
        rewriting one fragment), so writers queue on an advisory lock held for one short swap;
        the kernel drops it when its process dies, so a killed sync never blocks the next.
        """
        with open(self.path / WRITE_LOCK, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _swap(self, scope: str, data: pa.Table) -> None:
        """One commit that deletes every row ``scope`` selects and adds ``data``.

        LanceDB's ``merge_insert(...).when_not_matched_by_source_delete(scope)`` did this by a full outer
        join of the new rows with the whole table: it read ``chunk_id`` and ``doc_id`` of every row, for
        every batch a sync writes, so the cost of a batch grew with the index. Here the rows to delete
        are found through the ``doc_id`` BTREE index, marked deleted in their fragments' deletion files
        (``LanceFragment.delete_rows``, which Lance calls internal: pylance is pinned to 13.0.x, and
        tests/stores/test_lance_fetch.py and tests/ingest/test_crash.py check this path), the new rows
        written as a new fragment, and both committed as one Lance ``Update`` against the version read:
        readers see the old chunks or the new ones, never both or neither. A crash before the commit leaves
        only files no version references (Lance's clean-up in ``optimize()`` removes them once they are
        7 days old). A batch's cost stays flat as the index grows, where merge_insert's grew with it
        (figures: docs/benchmarks.md, 'Write cost'; bench/write_cost.py).
        """
        import lance
        from lance.fragment import write_fragments

        dataset = self.rows.dataset()
        addresses = dataset.to_table(columns=[], filter=scope, with_row_address=True).column("_rowaddr").to_numpy()
        fragments, offsets = addresses >> 32, addresses & 0xFFFFFFFF
        updated, removed = [], []
        for fragment_id in np.unique(fragments).tolist():
            kept = dataset.get_fragment(fragment_id).delete_rows(offsets[fragments == fragment_id].tolist())
            if kept is None:  # every row of that fragment deleted
                removed.append(fragment_id)
            else:
                updated.append(kept)
        new = write_fragments(data, dataset, schema=dataset.schema) if data.num_rows else []
        if not (updated or removed or new):
            return
        lance.LanceDataset.commit(dataset.uri, lance.LanceOperation.Update(
            removed_fragment_ids=removed, updated_fragments=updated, new_fragments=new), read_version=dataset.version)

    # -- index maintenance (:mod:`.lance_maintenance`) --------------------------------------
    def optimize(self) -> None:
        """Build missing indexes, fold new rows into existing ones, compact small files."""
        self.maintenance.optimize()

    def build_vector_index(self, num_partitions: int | None = None, num_sub_vectors: int | None = None) -> None:
        """Train and build the vector index of kind ``vector_index``, replacing any
        (:meth:`IndexMaintainer.build_vector_index <bastion.stores.lance_maintenance.IndexMaintainer.build_vector_index>`)."""
        self.maintenance.build_vector_index(num_partitions, num_sub_vectors)

    def warm(self) -> list[str]:
        """Load every index whose files changed since the last call into this process's cache; their names
        (:meth:`IndexMaintainer.warm <bastion.stores.lance_maintenance.IndexMaintainer.warm>`)."""
        return self.maintenance.warm()

    def _list_indexes(self) -> None:
        self._note_indexes(self._run(self._reader.list_indices()))

    def _note_indexes(self, indexes: Iterable[Any]) -> None:
        self._index_names = {tuple(i.columns)[0]: i.name for i in indexes}
        self._indexed_columns = set(self._index_names)
        # LanceDB names the kinds "IvfSq", "IvfPq": the vector index's as "IVF_SQ", "IVF_PQ"
        kinds = {tuple(i.columns)[0]: re.sub(r"(?<=[a-z])(?=[A-Z])", "_", i.index_type).upper() for i in indexes}
        self.vector_index_built = kinds.get("vector")

    # -- probes -------------------------------------------------------------------------------
    def stats(self) -> StoreStats:
        """Rows, the latest table version, the indexes (kind, segments, unindexed rows) and the exact
        path's entries in memory. Lists the indexes and reads each one's statistics: for checks,
        benchmarks and tests, not for the query path."""
        listed = self._run(self._reader.list_indices())
        self._note_indexes(listed)
        indexes = {}
        for index in listed:
            s = self._table.index_stats(index.name)
            indexes[tuple(index.columns)[0]] = IndexStats(
                index.name, index.index_type, int(s.num_indices) if s is not None and s.num_indices is not None else 0,
                int(s.num_unindexed_rows) if s is not None else 0)
        return StoreStats(rows=self.count(), version=self.table_version(), indexes=indexes,
                          vector_index=self.vector_index_built, exact_entries=self._exact_sets.entries,
                          exact_bytes=self._exact_sets.nbytes)

    def exact_path(self, labels: frozenset[str], source: SourceFilter = None,
                   kind: Literal["dense", "terms"] = "dense") -> bool:
        """Whether a ``kind`` search as ``labels`` (and ``source``) now ranks from memory (:mod:`.exact`)
        rather than through the indexes; may count the rows the filter admits."""
        return self._exact(acl_filter(labels, source), kind=kind)

    def authorised(self, labels: frozenset[str], source: SourceFilter = None) -> int:
        """Rows ``labels`` (and ``source``) may read at the latest version (counted once per version)."""
        return self._count(acl_filter(labels, source), self.table_version())

    def lancedb(self) -> LanceHandles:
        """The LanceDB table, its async table and the Lance dataset under this store (:class:`LanceHandles`):
        for benchmarks and tools that measure LanceDB itself. Bypasses the store's lock, filters and caches."""
        return LanceHandles(self._table, self._reader, self._run, self.rows.dataset)

    @property
    def exact_sets(self) -> ExactSets:
        """The exact path's in-memory entries (:mod:`.exact`)."""
        return self._exact_sets

    # -- reads --------------------------------------------------------------------------------
    @property
    def refine(self) -> int:
        """The refine factor searches use: the configured one, else the default of the vector index's kind."""
        return self.refine_factor or self.default_refine.get(self.vector_index_built or self.vector_index, 10)

    def table_version(self) -> int:
        """The table's latest version (moves with every commit, another process's included). Read by the
        Lance engine directly, which is much cheaper than through LanceDB's background loop, and every
        search asks first."""
        version: int = self.rows.snapshot()[0].version
        return version

    def _version(self) -> int:
        """The table's latest version. Until a vector index is known, a moved version lists the indexes
        again: another process (a sync beside a server) may have built it since this one opened the
        table. Once known it stays (an index is only replaced, never dropped), so a commit costs no listing."""
        version = self.table_version()
        if version != self._seen_version and "vector" not in self._indexed_columns:
            self._list_indexes()
        self._seen_version = version
        return version

    def _counted(self, where: str) -> tuple[int, int] | None:
        """(table version, rows ``where`` admitted then) of the last count, if any."""
        with self._counts_lock:
            return self._counts.get(where)

    def _count(self, where: str, version: int) -> int:
        """Rows ``where`` admits (``count_rows`` on the LABEL_LIST index), kept per filter until the
        table's version moves."""
        known = self._counted(where)
        if known is None or known[0] != version:
            known = (version, int(self._run(self._reader.count_rows(where))))
            with self._counts_lock:
                self._counts[where] = known
                if len(self._counts) > 4096:
                    self._counts.pop(next(iter(self._counts)))
        return known[1]

    def _exact(self, where: str, version: int | None = None, keys: tuple[RowKey, ...] | None = None,
               kind: str = "dense") -> bool:
        """Whether a search under ``where`` ranks from what is held in memory (:mod:`.exact`): when the
        filter admits at most ``exact_threshold`` chunks, and, for dense search, there is an ANN index
        (without one, LanceDB's scan is exact already). BM25 takes this path at any table size: the
        full-text index scores with statistics of the whole table, chunks the filter refuses included,
        while memory scores over the principal's own chunks (docs/security.md). When the in-memory
        entries of every one of the filter's ``keys`` are held, and the filter was not over the
        threshold when last counted, the entries' refresh lists the rows and checks the threshold
        itself, so no count is run first."""
        version = self._version() if version is None else version
        if kind == "dense" and "vector" not in self._indexed_columns:
            return False
        known = self._counted(where)
        if known is not None and known[0] == version:
            return known[1] <= self.exact_threshold
        if keys is not None and (known is None or known[1] <= self.exact_threshold) and self._exact_sets.holds(keys):
            return True
        return self._count(where, version) <= self.exact_threshold

    def _exact_rank(self, query: np.ndarray | list[str], labels: frozenset[str], source: SourceFilter,
                    k: int, version: int, kind: str = "dense") -> list[Ranked] | None:
        """Exact top-k from the in-memory vectors (``query`` a vector) or terms (``kind="terms"``, ``query``
        the analysed terms), or None when the principal may read too many chunks for that (search the
        indexes). ``version`` was read before any row, so what the cache reads is never older than its tag."""
        keys = self._exact_keys(labels, source)
        where = acl_filter(labels, source)
        if not self._exact(where, version, keys, kind):
            return None
        rows: dict[str, int] = {}
        if kind == "dense":
            ranked = self._exact_sets.rank(np.asarray(query), keys, version, k, limit=self.exact_threshold,
                                           rows_out=rows, source=self.rows)
        else:
            ranked = self._exact_sets.rank_terms(list(query), keys, version, k, limit=self.exact_threshold,
                                                 rows_out=rows, source=self.rows)
        if ranked is None:  # the set grew past the threshold since its entries were read
            self._count(where, version)  # remembered, so the next queries go to the ANN index directly
            return None
        self._hint(labels, source, list(rows), list(rows.values()))
        return [Ranked(c, s) for c, s in ranked]

    @staticmethod
    def _exact_keys(labels: frozenset[str], source: SourceFilter) -> tuple[RowKey, ...]:
        """The (label, source) keys of the in-memory entries (:mod:`.exact`) a principal's filter unites."""
        src = LanceStore._filter_key(labels, source)[1]
        return tuple((label, src) for label in sorted(labels))

    def _ann(self, vector: np.ndarray, where: str, k: int, columns: list[str]) -> pa.Table:
        """Dense search in LanceDB: the vector index when there is one, else a scan of the filtered rows."""
        query = (self._reader.vector_search(np.asarray(vector, dtype=np.float32)).column("vector")
                 .distance_type("cosine").where(where).limit(k)  # async queries prefilter by default
                 .with_row_id().select(columns + ["_distance"]))
        if "vector" not in self._indexed_columns:
            scanned: pa.Table = self._run(query.bypass_vector_index().to_arrow())
            return scanned
        # Refinement re-reads k * refine_factor full vectors: at least ~min_refine_rows (a search for the
        # top 1 re-ranks more than 2 candidates), at most ~200 for deep k.
        factor = max(self.refine, -(-self.min_refine_rows // k))
        query = query.nprobes(self.nprobes).refine_factor(min(factor, max(2, 200 // k)))
        rows: pa.Table = self._run(query.to_arrow())
        if rows.num_rows < k:  # the probed partitions hold too few authorised rows: probe wider
            rows = self._run(query.nprobes(self.nprobes * 10).to_arrow())
            if rows.num_rows < k:  # still short: scan them all
                rows = self._run(query.bypass_vector_index().to_arrow())
        # equal distances (identical chunks) in one order whatever the query's depth, as on the exact path
        return rows.sort_by([("_distance", "ascending"), ("chunk_id", "ascending")])

    def _terms(self, terms: list[str], where: str, k: int, columns: list[str]) -> pa.Table:
        found: pa.Table = self._run(self._reader.query().nearest_to_text(" ".join(terms), columns="terms")
                                    .where(where).limit(k).with_row_id().select(columns + ["_score"]).to_arrow())
        return found

    def rank_dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: SourceFilter = None, *,
                   exact: bool = True) -> list[Ranked]:
        """Ids and cosine similarities only: no text or citation column is read (see :meth:`fetch`).
        ``exact=False`` searches the indexes even for a principal on the exact path (to compare the two)."""
        where, version = acl_filter(labels, source), self._version()
        ranked = self._exact_rank(vector, labels, source, k, version) if exact else None
        if ranked is not None:
            return ranked
        t = self._ann(vector, where, k, ["chunk_id"])
        ids = t.column("chunk_id").to_pylist()
        self._hint(labels, source, ids, t.column("_rowid").to_pylist())
        return [Ranked(c, 1.0 - float(d)) for c, d in zip(ids, t.column("_distance").to_pylist())]

    def rank_terms(self, terms: list[str], labels: frozenset[str], k: int, source: SourceFilter = None, *,
                   exact: bool = True) -> list[Ranked]:
        """Ids and BM25 scores only: no text or citation column is read (see :meth:`fetch`). For a principal
        on the exact path, from the terms held in memory with its vectors (:mod:`.postings`);
        ``exact=False`` asks the full-text index even then (to compare the two)."""
        if not terms:
            return []
        ranked = self._exact_rank(terms, labels, source, k, self._version(), kind="terms") if exact else None
        if ranked is not None:
            return ranked
        t = self._terms(terms, acl_filter(labels, source), k, ["chunk_id"])
        ids = t.column("chunk_id").to_pylist()
        self._hint(labels, source, ids, t.column("_rowid").to_pylist())
        return [Ranked(c, rank_score(i)) for i, c in enumerate(ids)]

    @staticmethod
    def _filter_key(labels: frozenset[str], source: SourceFilter) -> FilterKey:
        return labels, source if source is None or isinstance(source, str) else tuple(sorted(set(source)))

    def _hint(self, labels: frozenset[str], source: SourceFilter, ids: list[str], rows: list[int]) -> None:
        """Remember the row id at which a ranking under (labels, source) found each chunk, for :meth:`fetch`."""
        key = self._filter_key(labels, source)
        with self._hints_lock:
            for cid, row in zip(ids, rows):
                self._hints[(key, cid)] = int(row)
                self._hints.move_to_end((key, cid))
            while len(self._hints) > self.max_row_hints:
                self._hints.popitem(last=False)

    def fetch(self, ranked: Sequence[tuple[str, float]], labels: frozenset[str], source: SourceFilter = None) -> list[StoreHit]:
        """Full rows of ``ranked`` ids, in order, read at the table's latest version, and only those
        ``labels`` (and ``source``) admit.

        A principal on the exact path reads nothing: its entries in memory (:mod:`.exact`) hold the
        shown columns beside the vectors, and give the rows they hold alive at this version (a take,
        however small, wakes Lance's I/O threads many times, and a search beside a busy core waited
        for the scheduler at each wake-up). A chunk that a ranking under the same labels and source
        found is otherwise read by its row id (Lance ``take``, much cheaper than the look-up below).
        That is access-controlled without reading the ACL: a row id addresses immutable data (an ACL
        change deletes the row and writes a new one), the ranking query admitted that row under this
        very filter, and ``take`` returns a row only while it is not deleted. The rest (ids from
        elsewhere, rows a sync replaced or compaction moved since) are read by one query
        ``chunk_id IN (...) AND <ACL filter>`` on the same version (BTREE look-ups), so a chunk whose
        ACL changed since it was ranked is left out like one a sync removed, and all hits come from
        one version of the table. (figures: docs/benchmarks.md, 'Search latency')
        """
        if not ranked:
            return []
        ids = sorted({cid for cid, _ in ranked})
        ds, fragments = self.rows.snapshot()
        rows: dict[str, dict[str, Any]] = {}
        by_row = self._hinted_rows(ids, labels, source, fragments)
        if by_row and self.show_from_memory:  # rows the principal's in-memory entries hold alive at this version
            rows = self._rows_from_memory(by_row, labels, source, ds.version)
            by_row = {row: cid for row, cid in by_row.items() if cid not in rows}
        if by_row:
            taken = self._take(ds, by_row)
            if taken is not None:
                rows = taken
        missing = [cid for cid in ids if cid not in rows]
        if missing:
            rows.update(self._look_up(ds, missing, labels, source))
        return [StoreHit(row=expand(dict(rows[cid])), score=score) for cid, score in ranked if cid in rows]

    def _look_up(self, ds: Any, ids: list[str], labels: frozenset[str], source: SourceFilter) -> dict[str, dict[str, Any]]:
        """The rows of ``ids`` that ``labels`` (and ``source``) admit in ``ds``, by chunk id (BTREE look-ups)."""
        where = f"chunk_id IN ({', '.join(quote(c) for c in ids)}) AND {acl_filter(labels, source)}"
        return {r["chunk_id"]: r for r in ds.to_table(columns=self.read_columns, filter=where).to_pylist()}

    def _hinted_rows(self, ids: list[str], labels: frozenset[str], source: SourceFilter,
                     fragments: frozenset[int]) -> dict[int, str]:
        """Row id -> chunk id of the ``ids`` a ranking under this filter found in a data file that still exists."""
        key = self._filter_key(labels, source)
        with self._hints_lock:
            hinted = {cid: self._hints.get((key, cid)) for cid in ids}
        return {row: cid for cid, row in hinted.items() if row is not None and row >> 32 in fragments}

    def _rows_from_memory(self, by_row: dict[int, str], labels: frozenset[str], source: SourceFilter,
                          version: int) -> dict[str, dict[str, Any]]:
        """The rows of ``by_row`` the principal's in-memory entries hold alive at ``version``, by chunk id."""
        held = self._exact_sets.shown(self._exact_keys(labels, source), version, list(by_row))
        if held is None:
            return {}
        return {r["chunk_id"]: r for row, r in held.items() if by_row[row] == r["chunk_id"]}

    def _take(self, ds: Any, by_row: dict[int, str]) -> dict[str, dict[str, Any]] | None:
        """The rows of ``by_row`` read by row id, by chunk id; None when the take fails (fetch reads them by id)."""
        try:
            taken = ds._take_rows(sorted(by_row), columns=self.read_columns)
        except Exception as exc:  # noqa: BLE001 - read them by id instead
            log("store.fetch_take_failed", rows=len(by_row), error=str(exc))
            return None
        wanted = set(by_row.values())
        return {r["chunk_id"]: r for r in taken.to_pylist() if r["chunk_id"] in wanted}

    def search_dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: SourceFilter = None) -> list[StoreHit]:
        """Top-k full rows by cosine similarity (the retriever uses rank_dense + fetch)."""
        where, version = acl_filter(labels, source), self._version()
        ranked = self._exact_rank(vector, labels, source, k, version)
        if ranked is not None:
            return self.fetch(ranked, labels, source)
        rows = self._ann(vector, where, k, self.read_columns).drop_columns(["_rowid"]).to_pylist()
        return [StoreHit(row=expand(r), score=1.0 - float(r.pop("_distance"))) for r in rows]

    def chunk_keys(self) -> list[tuple[str, str, str]]:
        """(chunk_id, doc_id, version_id) of every stored chunk (for checks and rebuilds)."""
        t = self._table.to_arrow().select(["chunk_id", "doc_id", "version_id"]) if self.count() else None
        if t is None:
            return []
        return list(zip(*(t.column(c).to_pylist() for c in ("chunk_id", "doc_id", "version_id"))))

    def rows_for(self, doc_ids: list[str]) -> list[dict[str, Any]]:
        """Every row of ``doc_ids`` (citation fields and ACL, no vector)."""
        if not doc_ids:
            return []
        scope = f"doc_id IN ({', '.join(quote(d) for d in doc_ids)})"
        found: list[dict[str, Any]] = self._table.search().where(scope).limit(None).select(COLUMNS + ["acl"]).to_list()
        return found

    def count(self) -> int:
        """Rows in the table."""
        return int(self._table.count_rows())
