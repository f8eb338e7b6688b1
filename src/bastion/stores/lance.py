"""Embedded chunk index on LanceDB.

One table ``chunks``: vector, text, analysed BM25 terms (FTS index, whitespace tokenizer),
ACL labels (LABEL_LIST index), ``doc_id`` and ``chunk_id`` (BTREE indexes) and citation
fields. ``replace_documents`` swaps the old chunks of a set of documents for the new ones in one
Lance commit (:meth:`LanceStore._swap`): readers see either the old version or the new, never
both. Readers use a zero read-consistency interval and see each commit at once. Searches rank ids
first (``rank_dense`` / ``rank_terms`` read no text) and ``fetch`` reads full rows only for the
hits kept. A principal who may read few chunks is ranked from its vectors and terms held in memory
(:mod:`.exact`, :mod:`.postings`); everyone else through the vector and full-text indexes, with the
ACL filter applied inside the query.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from bastion.core.errors import EmbedderMismatch, MissingExtraError, StoreError
from bastion.logging import log
from bastion.stores.exact import ExactSets
from bastion.stores.protocol import Ranked, StoreHit, StoredChunk

# Lance scores a filtered full-text query one of two ways: every document the filter admits (when it
# admits at most this percent of the index), or WAND over the posting lists skipping the others. Its
# default, 10 %, put a 10 % ACL group on the first way: 49 / 58 ms (p50 / p95) at 1M chunks, against
# 10 / 18 ms by WAND, while a 1 % group is faster the first way (17 / 22 ms, WAND 21 / 48 ms);
# docs/benchmarks.md. Read once per process, at the first full-text query; the environment overrides.
os.environ.setdefault("LANCE_FLAT_SEARCH_PERCENT_THRESHOLD", "2")
# LanceDB and Lance log warnings to stderr that say nothing a user can act on ("KMeans: more than 10 % of
# clusters are empty" on every small index build, "partition N is empty, skipping" on every optimize);
# errors still show, and LANCEDB_LOG / LANCE_LOG set in the environment win.
os.environ.setdefault("LANCEDB_LOG", "error")
os.environ.setdefault("LANCE_LOG", "error")

TABLE = "chunks"
META_FILE = "bastion-index.json"
WRITE_LOCK = "bastion-write.lock"  # held by replace_documents() while it reads, writes and commits
_COLUMNS = ["chunk_id", "doc_id", "version_id", "source", "document", "path", "page", "section",
            "ordinal", "text", "char_start", "char_end"]
# A row's citation fields are also kept packed in one JSON column, ``cite``: reading a row costs
# ~2-6 ms per column at 1M chunks (docs/benchmarks.md), so a hit is read as chunk_id + text + cite.
# The separate columns stay for filters (source, doc_id) and for indexes written before ``cite``.
_CITE = [c for c in _COLUMNS if c not in ("chunk_id", "text")]


def _schema(dim: int, cite: bool = True) -> pa.Schema:
    return pa.schema([
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("version_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("document", pa.string()),
        pa.field("path", pa.string()),
        pa.field("page", pa.int32()),
        pa.field("section", pa.string()),
        pa.field("ordinal", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("terms", pa.string()),
        pa.field("char_start", pa.int32()),
        pa.field("char_end", pa.int32()),
        pa.field("acl", pa.list_(pa.string())),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ] + ([pa.field("cite", pa.string())] if cite else []))


def pack_cite(row: dict) -> str:
    """The ``cite`` column's value for a row holding the citation fields."""
    return json.dumps([row[name] for name in _CITE], ensure_ascii=False, separators=(",", ":"))


def _expand(row: dict) -> dict:
    """A row as read (chunk_id, text, cite, ...) with its citation fields unpacked."""
    packed = row.pop("cite", None)
    if packed is not None:
        row.update(zip(_CITE, json.loads(packed)))
    return row


def _rank_score(rank: int) -> float:
    """The score of the ``rank``-th (from 0) hit of a full-text-index query: its reciprocal rank.

    The full-text index scores BM25 with term statistics of the whole table, the chunks the
    filter refuses included, so its raw scores would tell a principal how often the query's
    words occur in text it may not read. Only the order leaves the store; what the order itself
    still carries is measured in docs/benchmarks.md and described in docs/security.md. The exact
    path scores BM25 over the principal's own chunks (:mod:`.postings`) and keeps real scores.
    """
    return 1.0 / (rank + 1)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def acl_filter(labels: frozenset[str], source: "str | Sequence[str] | None" = None) -> str:
    """The SQL predicate that admits only chunks whose ACL shares a label with the principal."""
    if not labels:
        raise StoreError("a query needs at least one principal label")
    where = f"array_has_any(acl, [{', '.join(_quote(l) for l in sorted(labels))}])"
    if isinstance(source, str):
        where += f" AND source = {_quote(source)}"
    elif source is not None:  # several sources (an assistant's); an empty list admits none
        where += f" AND source IN ({', '.join(_quote(s) for s in sorted(set(source))) or 'NULL'})"
    return where


class LanceStore:
    """LanceDB-backed :class:`ChunkStore`.

    >>> store = LanceStore("/tmp/idx", embedder_id="hash-64", dimension=64)   # doctest: +SKIP
    """

    fold_indexed_fragments = 16  # small indexed fragments that make compaction fold them too (:meth:`_compact`)
    max_terms_segments = 8  # full-text index segments before optimize() merges them (:meth:`_update_terms_index`)
    commit_attempts = 20  # replace_documents() retries a commit that lost a race with another writer
    # full vectors re-read per hit to re-rank what the index found, by the index's kind, when not configured:
    # IVF_SQ's 8-bit codes rank closely enough that 2 pass recall 1.000 at 1M, IVF_PQ's need ~10 (docs/benchmarks.md)
    default_refine = {"IVF_SQ": 2, "IVF_PQ": 10}
    min_refine_rows = 20  # full vectors a search re-ranks at the least, whatever its k
    max_row_hints = 16_384  # ranked chunks whose row ids fetch() remembers (:meth:`_hint`)

    def __init__(self, path: str | Path, *, embedder_id: str, dimension: int,
                 exact_threshold: int = 50_000, nprobes: int = 20, refine_factor: int | None = None,
                 ann_min_rows: int = 100_000, exact_cache_mb: int = 512, fragment_rows: int = 262_144,
                 vector_index: str = "IVF_SQ"):
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
            self._table = self._db.create_table(TABLE, schema=_schema(dimension), exist_ok=True)
        self._note_indexes(self._table.list_indices())
        self._seen_version = self._table.version
        self._warmed: dict[str, tuple] = {}  # index name -> its segments when warm() last loaded it
        # (labels, source, chunk id) -> the row id a ranking under that filter found it at (:meth:`fetch`)
        self._hints: OrderedDict[tuple, int] = OrderedDict()
        self._hints_lock = threading.Lock()
        self._snap = None  # (Lance dataset at one version, its fragment ids) for fetch()
        # an index written before the packed ``cite`` column reads the separate columns (`bastion rebuild` adds it)
        self._cite = "cite" in self._table.schema.names
        self._read = ["chunk_id", "text", "cite"] if self._cite else list(_COLUMNS)
        # Searches go through the async table behind the sync one (same connection, caches and
        # consistency), run on LanceDB's own background loop. LanceDB 0.40's sync query builders
        # fetch the table schema three times per query, each a round trip to that loop with a
        # consistency check; measured at 100k chunks: FTS top-50 ids 6.1 -> 3.8 ms, dense 10.3 ->
        # 8.8 ms, fetch of 10 rows 5.1 -> 3.9 ms. Writes and index builds keep the sync API.
        from lancedb.background_loop import LOOP
        from lancedb.table import AsyncTable

        self._reader, self._run = self._table._table, LOOP.run
        if not isinstance(self._reader, AsyncTable):  # pragma: no cover - guards a LanceDB upgrade
            raise StoreError(f"unsupported LanceDB table type {type(self._reader).__name__} behind LanceTable")

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
    def _to_arrow(self, chunks: list[StoredChunk]) -> pa.Table:
        schema = _schema(self.dimension, self._cite)
        cols: dict[str, list] = {f.name: [] for f in schema}
        for c in chunks:
            for name in _COLUMNS + ["terms"]:
                cols[name].append(getattr(c, name))
            cols["acl"].append(list(c.acl))
            cols["vector"].append(np.asarray(c.vector, dtype=np.float32))
            if self._cite:
                cols["cite"].append(pack_cite({name: getattr(c, name) for name in _CITE}))
        vectors = np.stack(cols.pop("vector")) if chunks else np.zeros((0, self.dimension), np.float32)
        arrays = {k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()}
        arrays["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), self.dimension)
        return pa.table(arrays, schema=schema)

    def replace_documents(self, doc_ids: list[str], chunks: list[StoredChunk]) -> None:
        if not doc_ids:
            return
        for c in chunks:
            if c.vector.shape != (self.dimension,):
                raise EmbedderMismatch(f"vector of chunk {c.chunk_id} has shape {c.vector.shape}, index expects ({self.dimension},)")
        stray = sorted({c.doc_id for c in chunks} - set(doc_ids))
        if stray:
            raise StoreError(f"chunks of documents not being replaced: {', '.join(stray[:5])}")
        scope = f"doc_id IN ({', '.join(_quote(d) for d in sorted(set(doc_ids)))})"
        data = self._to_arrow(chunks)
        from lance.commit import CommitConflictError

        for attempt in range(self.commit_attempts):
            try:
                with self._writing():
                    return self._swap(scope, data)
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
        rewriting one fragment), so writers queue on an advisory lock held for one ~20 ms swap;
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
        7 days old). Measured per 256-chunk batch (bench/write_cost.py): ~21 ms at 10k, 100k and 1M
        chunks, against merge_insert's 45, 150 and 797 ms.
        """
        import lance
        from lance.fragment import write_fragments

        dataset = self._dataset()
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

    def optimize(self) -> None:
        """Build missing indexes, fold new rows into existing ones, compact small files."""
        from lancedb.index import FTS, BTree, LabelList

        rows = self._table.count_rows()
        if rows == 0:
            return
        self._list_indexes()  # another process may have built some since this one looked
        made = False
        wanted = {
            "terms": FTS(base_tokenizer="whitespace", lower_case=False, stem=False, remove_stop_words=False,
                         ascii_folding=False, with_position=False),
            "acl": LabelList(),
            "doc_id": BTree(),
            "chunk_id": BTree(),  # fetch(): chunk_id IN (...) look-ups of the hits a search keeps
        }
        for column, config in wanted.items():
            if column not in self._indexed_columns:
                self._table.create_index(column, config=config, replace=True)
                made = True
        if rows >= self.ann_min_rows and self.vector_index_built != self.vector_index:
            if self.vector_index_built is not None:  # the configured kind changed: rebuild (readers keep the old one meanwhile)
                log("store.vector_index_rebuild", was=self.vector_index_built, now=self.vector_index, rows=rows)
            self.build_vector_index()
            made = True
        if made:
            self._list_indexes()
        dataset = self._dataset()
        self._compact(dataset)
        # new rows into the existing indexes (no retraining); the full-text index on its own, below
        others = [name for column, name in self._index_names.items() if column != "terms"]
        if others:
            dataset.optimize.optimize_indices(index_names=others)
        self._update_terms_index(dataset)
        self._merge_vector_segments(dataset)
        dataset.cleanup_old_versions(older_than=timedelta(hours=1), error_if_tagged_old_versions=False)

    def _compact(self, dataset) -> None:
        """Merge small data files into fragments of about ``fragment_rows`` rows; larger ones stay.

        LanceDB's ``optimize()`` compacts toward 1,048,576 rows per fragment, so every fragment below
        that is rewritten with the new rows at each optimize: at 1M chunks the whole table (1M rows, ~20 s)
        to fold in 2,048 new ones (bench/compaction.py). With a smaller target a fragment that reached it
        is never touched again (only if a tenth of its rows are deleted), so one compaction rewrites at
        most about ``fragment_rows`` rows. Rewriting a fragment some index covers also rewrites that
        index's row addresses (3-4 s at 1M chunks), so the fragments written since the last optimize
        are merged on their own, before they are indexed, and the small indexed ones only once
        ``fold_indexed_fragments`` of them have gathered. Readers see the old files or the new.
        """
        covered: set[int] = set()
        for index in dataset.describe_indices():
            for segment in index.segments:
                covered.update(segment.fragment_ids or ())
        small = sum(1 for f in dataset.get_fragments()
                    if f.fragment_id in covered and f.metadata.physical_rows < self.fragment_rows)
        exclude = sorted(covered) if small < self.fold_indexed_fragments else None
        if exclude is None:  # Lance merges only fragments the same index segments cover: one full-text segment first
            self._update_terms_index(dataset, merge=True)
        dataset.optimize.compact_files(target_rows_per_fragment=self.fragment_rows, excluded_fragment_ids=exclude)

    def _update_terms_index(self, dataset, merge: bool = False) -> None:
        """Index the new rows' terms as a new segment of the full-text index; merge the segments into one
        once there would be more than ``max_terms_segments``.

        Folding new rows into the full-text index rewrites the whole index: at 1M chunks 2.3-2.8 s of
        an optimize that otherwise takes ~0.5 s, for every 2,048 new chunks (index.optimize_every_chunks).
        A new segment holding only the new rows takes ~0.06 s, and a search reads every segment and
        scores BM25 over them together: measured at 1M chunks with seven segments against the same rows
        in one index, top-10 overlap 0.99 for the whole table and 0.89 for a 10 % group (many of its
        synthetic chunks tie at the cut), scores within 1.7 %, no measurable latency cost (docs/benchmarks.md).
        ``merge`` merges them now (compaction folds only fragments that the same segments cover).
        """
        name = self._index_names.get("terms")
        stats = self._table.index_stats(name) if name else None
        if stats is None or (stats.num_unindexed_rows == 0 and (not merge or stats.num_indices <= 1)):
            return
        segments = stats.num_indices
        merge = merge or segments + 1 > self.max_terms_segments
        dataset.optimize.optimize_indices(num_indices_to_merge=segments if merge else 0, index_names=[name])

    def _merge_vector_segments(self, dataset) -> None:
        """Fold the vector index's delta segments into one.

        LanceDB's ``optimize()`` indexes new rows as a new segment of the vector index each time, and a
        search probes every segment on its own: after six optimizes of 2,048 rows at 100k chunks the index
        had six segments and dense p50 went 5.5 -> 10.9 ms. Lance merges segments with the same centroids
        and codebook (no retraining, so recall is unchanged) in 0.2 s at 100k and 0.6 s at 1M chunks; LanceDB
        does not expose it, so this calls the Lance engine it runs on (``pylance``, the same version).
        """
        name = self._index_names.get("vector")  # listed at the start of optimize(); one built since has one segment
        stats = self._table.index_stats(name) if name else None
        if stats is None or stats.num_indices <= 1:
            return
        try:
            dataset.optimize.optimize_indices(num_indices_to_merge=stats.num_indices, index_names=[name])
        except Exception as exc:  # noqa: BLE001 - the segments stay as they were: searches are right, only slower
            log("store.merge_segments_failed", segments=stats.num_indices, error=str(exc))

    def build_vector_index(self, num_partitions: int | None = None, num_sub_vectors: int | None = None) -> None:
        """Train and build the vector index (``vector_index``: IVF_SQ by default, or IVF_PQ), replacing any.

        IVF_SQ keeps each vector as 8-bit scalar codes inside the index (384 bytes a chunk at 384
        dimensions: ~390 MB at 1M chunks, held in memory once loaded), IVF_PQ as 48 product-quantized
        bytes (~54 MB). PQ codes rank so coarsely that a search must re-read ~10 full vectors per hit
        from the data files; SQ codes need 2. Measured at 1M chunks, alternating per query in one
        process (bench/vector_index.py): dense p95 10.3-10.7 ms with recall@10 1.000 (IVF_SQ, refine 2)
        against 14.1-16.9 ms and 0.994-1.000 (IVF_PQ, refine 10); 20.6-25.8 against 32.2-41.7 ms when the
        OS had dropped the data files' pages; built in 95-117 s against 270-285 s.
        ``num_sub_vectors`` applies to IVF_PQ only.
        """
        rows = self._table.count_rows()
        parts = num_partitions or max(1, min(4096, int(rows ** 0.5)))
        subs = num_sub_vectors or (self.dimension // 8 if self.dimension % 8 == 0 else 1)
        from lancedb.index import IvfPq, IvfSq

        # Give LanceDB the partition *size*, not the count: an index built with num_partitions alone is
        # re-partitioned by the next table.optimize() toward LanceDB's default size (measured: 1000
        # partitions at 1M rows became ~100 of ~10k rows, 316 at 100k became 4), so nprobes=20 scanned a
        # fifth of the table or all of it. With target_partition_size the partitioning survives optimize().
        size = max(1, rows // parts)
        config = (IvfSq(distance_type="cosine", target_partition_size=size) if self.vector_index == "IVF_SQ" else
                  IvfPq(distance_type="cosine", target_partition_size=size, num_sub_vectors=subs))
        self._table.create_index("vector", config=config, replace=True)
        self._list_indexes()

    # -- reads ----------------------------------------------------------------------------
    def warm(self) -> list[str]:
        """Load into this process's index cache every index whose files changed since the last call (all
        of them the first time); the names of those loaded.

        A search loads the parts of an index it needs the first time, and after a sync's optimize()
        wrote new index files (a new full-text segment, the merged vector index) those are loaded
        again. One-off timing at 1M chunks, after another process synced 2,048 chunks: the first dense
        search took 18-32 ms without this against 11-13 ms with it, the median of the next 19 9.5-17.1
        against 7.7-12.8 ms (docs/benchmarks.md). Loading all of them costs ~1 s and ~600 MB of memory at
        1M chunks with the IVF_SQ vector index (~0.7 s and ~300 MB with IVF_PQ), the changed ones after
        a sync ~0.3 s; ``bastion serve`` does it at start and whenever the table version moved
        (``search.warm_check_s``, :mod:`bastion.server.warm`). The chunk id index is also loaded for
        :meth:`fetch`'s look-ups, which read through the Lance engine directly.
        """
        dataset = self._snapshot()[0]  # the latest version, without opening the dataset again
        now = {i.name: tuple(sorted(str(seg.uuid) for seg in i.segments)) for i in dataset.describe_indices()}
        changed = [name for name, segments in now.items() if self._warmed.get(name) != segments]
        for name in changed:
            self._run(self._reader.prewarm_index(name))
            if name == self._index_names.get("chunk_id"):
                dataset.prewarm_index(name)
        if changed:  # another process may have rebuilt the vector index as another kind (its refine differs)
            self._list_indexes()
        self._warmed = now
        return changed

    @property
    def refine(self) -> int:
        """The refine factor searches use: the configured one, else the default of the vector index's kind."""
        return self.refine_factor or self.default_refine.get(self.vector_index_built or self.vector_index, 10)

    def table_version(self) -> int:
        """The table's latest version (moves with every commit, another process's included). Read by the
        Lance engine directly: ~0.1 ms, against 0.5-1.1 ms p50 (up to 5 ms p95) through LanceDB's
        background loop at 1M chunks, and every search asks first."""
        return self._snapshot()[0].version

    def _dataset(self):
        """The table's latest version as a Lance dataset, for what LanceDB does not expose."""
        import lance

        return lance.dataset(self._run(self._reader.uri()))

    def _list_indexes(self) -> None:
        self._note_indexes(self._run(self._reader.list_indices()))

    def _note_indexes(self, indexes) -> None:
        self._index_names = {tuple(i.columns)[0]: i.name for i in indexes}
        self._indexed_columns = set(self._index_names)
        # LanceDB names the kinds "IvfSq", "IvfPq": the vector index's as "IVF_SQ", "IVF_PQ"
        kinds = {tuple(i.columns)[0]: re.sub(r"(?<=[a-z])(?=[A-Z])", "_", i.index_type).upper() for i in indexes}
        self.vector_index_built = kinds.get("vector")

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
        """Rows ``where`` admits (``count_rows`` on the LABEL_LIST index, 2-3 ms at 1M chunks), kept per
        filter until the table's version moves."""
        known = self._counted(where)
        if known is None or known[0] != version:
            known = (version, self._run(self._reader.count_rows(where)))
            with self._counts_lock:
                self._counts[where] = known
                if len(self._counts) > 4096:
                    self._counts.pop(next(iter(self._counts)))
        return known[1]

    def _exact(self, where: str, version: int | None = None, keys: tuple | None = None, kind: str = "dense") -> bool:
        """Whether a search under ``where`` ranks from what is held in memory (:mod:`.exact`): when the
        filter admits at most ``exact_threshold`` chunks, and, for dense search, there is an ANN index
        (without one, LanceDB's scan is exact already). BM25 takes this path at any table size: the
        full-text index scores with statistics of the whole table, chunks the filter refuses included,
        while memory scores over the principal's own chunks (docs/security.md). When the in-memory entries of every one of the filter's
        ``keys`` are held, and the filter was not over the threshold when last counted, the entries'
        refresh lists the rows and checks the threshold itself, so no count is run first."""
        version = self._version() if version is None else version
        if kind == "dense" and "vector" not in self._indexed_columns:
            return False
        known = self._counted(where)
        if known is not None and known[0] == version:
            return known[1] <= self.exact_threshold
        if keys is not None and (known is None or known[1] <= self.exact_threshold) and self._exact_sets.holds(keys):
            return True
        return self._count(where, version) <= self.exact_threshold

    def _exact_rank(self, query, labels: frozenset[str], source, k: int, version: int, kind: str = "dense") -> list[Ranked] | None:
        """Exact top-k from the in-memory vectors (``query`` a vector) or terms (``kind="terms"``, ``query``
        the analysed terms), or None when the principal may read too many chunks for that (search the
        indexes). ``version`` was read before any row, so what the cache reads is never older than its tag."""
        keys = self._exact_keys(labels, source)
        where = acl_filter(labels, source)
        if not self._exact(where, version, keys, kind):
            return None
        rows: dict[str, int] = {}
        rank = self._exact_sets.rank if kind == "dense" else self._exact_sets.rank_terms
        ranked = rank(query, keys, version, k, limit=self.exact_threshold, rows_out=rows,
                      list_rows=self._list_rows, read_key=self._read_key, read_rows=self._read_rows)
        if ranked is None:  # the set grew past the threshold since its entries were read
            self._count(where, version)  # remembered, so the next queries go to the ANN index directly
            return None
        self._hint(labels, source, list(rows), list(rows.values()))
        return [Ranked(c, s) for c, s in ranked]

    # The in-memory vectors' reads (:mod:`.exact`) go through the Lance engine at the latest version
    # directly: at 1M chunks listing a 10k-chunk group's row ids 3.3 ms and taking 5 rows 3.2 ms, against
    # 7.3 and 8.0 ms through LanceDB's query layer, and a refresh after each commit runs on the query path.
    def _list_rows(self, keys: tuple) -> np.ndarray:
        """Row ids the union of (label, source) keys admits: the LABEL_LIST index answers without reading a column."""
        where = acl_filter(frozenset(label for label, _ in keys), keys[0][1])
        return self._snapshot()[0].to_table(columns=[], filter=where, with_row_id=True).column("_rowid").to_numpy()

    def _vectors(self, t: pa.Table) -> np.ndarray:
        return t.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dimension)

    @staticmethod
    def _exact_keys(labels: frozenset[str], source) -> tuple:
        """The (label, source) keys of the in-memory entries (:mod:`.exact`) a principal's filter unites."""
        src = LanceStore._filter_key(labels, source)[1]
        return tuple((label, src) for label in sorted(labels))

    def _shown(self, t: pa.Table) -> pa.Table:
        """The columns a hit shows besides its chunk id (:meth:`fetch`), compact, to hold beside the vectors."""
        return pa.table({c: t.column(c).combine_chunks() for c in self._read if c != "chunk_id"})

    def _read_key(self, key: tuple) -> tuple[np.ndarray, list[str], np.ndarray, pa.Array, pa.Table]:
        """(row ids, chunk ids, vectors, full-text terms, shown columns) of every row of one (label, source) key."""
        label, src = key
        t = self._snapshot()[0].to_table(columns=list(dict.fromkeys(["chunk_id", "vector", "terms", *self._read])),
                                         filter=acl_filter(frozenset({label}), src), with_row_id=True)
        return (t.column("_rowid").to_numpy(), t.column("chunk_id").to_pylist(), self._vectors(t), t.column("terms"),
                self._shown(t))

    def _read_rows(self, rows: np.ndarray, keys: tuple) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, list, pa.Table | None]:
        """(row ids, chunk ids, vectors, which keys each row is under, full-text terms, shown columns) of the
        given rows; rows deleted or compacted away since they were listed are not returned."""
        columns = list(dict.fromkeys(["chunk_id", "vector", "acl", "source", "terms", *self._read]))
        ds, fragments = self._snapshot()
        alive = [int(r) for r in rows if int(r) >> 32 in fragments]
        try:  # asking for the row ids makes a take of a deleted row fail instead of skipping it
            t = ds._take_rows(alive, columns=columns + ["_rowid"]) if alive else None
        except OSError:  # one was deleted since the listing: LanceDB's take skips it and still gives row ids
            t = self._run(self._reader.take_row_ids(alive).with_row_id().select(columns).to_arrow())
        if t is None:
            return (np.zeros(0, np.int64), [], np.zeros((0, self.dimension), np.float32), np.zeros((0, len(keys)), bool),
                    [], None)
        acls, sources = t.column("acl").to_pylist(), t.column("source").to_pylist()
        carries = np.array([[label in acl and (src is None or (source == src if isinstance(src, str) else source in src))
                             for label, src in keys] for acl, source in zip(acls, sources)], dtype=bool)
        return (t.column("_rowid").to_numpy(), t.column("chunk_id").to_pylist(), self._vectors(t),
                carries.reshape(len(acls), len(keys)), t.column("terms").to_pylist(), self._shown(t))

    def _ann(self, vector: np.ndarray, where: str, k: int, columns: list[str]) -> pa.Table:
        """Dense search in LanceDB: the vector index when there is one, else a scan of the filtered rows."""
        query = (self._reader.vector_search(np.asarray(vector, dtype=np.float32)).column("vector")
                 .distance_type("cosine").where(where).limit(k)  # async queries prefilter by default
                 .with_row_id().select(columns + ["_distance"]))
        if "vector" not in self._indexed_columns:
            return self._run(query.bypass_vector_index().to_arrow())
        # Refinement re-reads k * refine_factor full vectors: at least ~min_refine_rows (a search for the
        # top 1 re-ranks more than 2 candidates), at most ~200 for deep k.
        factor = max(self.refine, -(-self.min_refine_rows // k))
        query = query.nprobes(self.nprobes).refine_factor(min(factor, max(2, 200 // k)))
        rows = self._run(query.to_arrow())
        if rows.num_rows < k:  # the probed partitions hold too few authorised rows: probe wider
            rows = self._run(query.nprobes(self.nprobes * 10).to_arrow())
            if rows.num_rows < k:  # still short: scan them all
                rows = self._run(query.bypass_vector_index().to_arrow())
        # equal distances (identical chunks) in one order whatever the query's depth, as on the exact path
        return rows.sort_by([("_distance", "ascending"), ("chunk_id", "ascending")])

    def _terms(self, terms: list[str], where: str, k: int, columns: list[str]) -> pa.Table:
        return self._run(self._reader.query().nearest_to_text(" ".join(terms), columns="terms")
                         .where(where).limit(k).with_row_id().select(columns + ["_score"]).to_arrow())

    def rank_dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: str | None = None) -> list[Ranked]:
        """Ids and cosine similarities only: no text or citation column is read (see :meth:`fetch`)."""
        where, version = acl_filter(labels, source), self._version()
        ranked = self._exact_rank(vector, labels, source, k, version)
        if ranked is not None:
            return ranked
        t = self._ann(vector, where, k, ["chunk_id"])
        ids = t.column("chunk_id").to_pylist()
        self._hint(labels, source, ids, t.column("_rowid").to_pylist())
        return [Ranked(c, 1.0 - float(d)) for c, d in zip(ids, t.column("_distance").to_pylist())]

    def rank_terms(self, terms: list[str], labels: frozenset[str], k: int, source: str | None = None) -> list[Ranked]:
        """Ids and BM25 scores only: no text or citation column is read (see :meth:`fetch`). For a principal
        on the exact path, from the terms held in memory with its vectors (:mod:`.postings`)."""
        if not terms:
            return []
        ranked = self._exact_rank(terms, labels, source, k, self._version(), kind="terms")
        if ranked is not None:
            return ranked
        t = self._terms(terms, acl_filter(labels, source), k, ["chunk_id"])
        ids = t.column("chunk_id").to_pylist()
        self._hint(labels, source, ids, t.column("_rowid").to_pylist())
        return [Ranked(c, _rank_score(i)) for i, c in enumerate(ids)]

    @staticmethod
    def _filter_key(labels: frozenset[str], source) -> tuple:
        return labels, source if source is None or isinstance(source, str) else tuple(sorted(set(source)))

    def _hint(self, labels: frozenset[str], source, ids: list[str], rows: list[int]) -> None:
        """Remember the row id at which a ranking under (labels, source) found each chunk, for :meth:`fetch`."""
        key = self._filter_key(labels, source)
        with self._hints_lock:
            for cid, row in zip(ids, rows):
                self._hints[(key, cid)] = int(row)
                self._hints.move_to_end((key, cid))
            while len(self._hints) > self.max_row_hints:
                self._hints.popitem(last=False)

    def _snapshot(self):
        """(the table's latest version as a Lance dataset, the ids of its data files)."""
        snap = self._snap
        if snap is None:
            ds = self._dataset()
        else:
            ds = snap[0]
            latest = ds.latest_version
            if latest == ds.version:
                return snap
            ds = ds.checkout_version(latest)
        snap = (ds, frozenset(f.fragment_id for f in ds.get_fragments()))
        self._snap = snap
        return snap

    def fetch(self, ranked: Sequence[tuple[str, float]], labels: frozenset[str], source: str | None = None) -> list[StoreHit]:
        """Full rows of ``ranked`` ids, in order, read at the table's latest version, and only those
        ``labels`` (and ``source``) admit.

        A chunk that a ranking under the same labels and source found is read by its row id (Lance
        ``take``: 2.5 ms for 10 rows at 1M chunks against ~10 ms for the look-up below). That is
        access-controlled without reading the ACL: a row id addresses immutable data (an ACL change
        deletes the row and writes a new one), the ranking query admitted that row under this very
        filter, and ``take`` returns a row only while it is not deleted. The rest (ids from elsewhere,
        rows a sync replaced or compaction moved since) are read by one query ``chunk_id IN (...) AND
        <ACL filter>`` on the same version (BTREE look-ups), so a chunk whose ACL changed since it was
        ranked is left out like one a sync removed, and all hits come from one version of the table.

        A principal on the exact path reads nothing: its entries in memory (:mod:`.exact`) hold the
        shown columns beside the vectors, and give the rows they hold alive at this version (at 1M
        chunks a take of 10 rows woke Lance's I/O threads ~100 times, so a search beside a busy core
        waited for the scheduler at each wake-up: docs/benchmarks.md).
        """
        if not ranked:
            return []
        ids = sorted({cid for cid, _ in ranked})
        key = self._filter_key(labels, source)
        with self._hints_lock:
            hinted = {cid: self._hints.get((key, cid)) for cid in ids}
        ds, fragments = self._snapshot()
        rows: dict[str, dict] = {}
        by_row = {row: cid for cid, row in hinted.items() if row is not None and row >> 32 in fragments}
        if by_row:  # rows the principal's in-memory entries hold alive at this version: no read at all
            held = self._exact_sets.shown(self._exact_keys(labels, source), ds.version, list(by_row))
            if held is not None:
                rows = {r["chunk_id"]: r for row, r in held.items() if by_row[row] == r["chunk_id"]}
                by_row = {row: cid for row, cid in by_row.items() if cid not in rows}
        if by_row:
            try:
                taken = ds._take_rows(sorted(by_row), columns=self._read)
            except Exception as exc:  # noqa: BLE001 - read them by id below instead
                log("store.fetch_take_failed", rows=len(by_row), error=str(exc))
            else:
                wanted = set(by_row.values())
                rows = {r["chunk_id"]: r for r in taken.to_pylist() if r["chunk_id"] in wanted}
        missing = [cid for cid in ids if cid not in rows]
        if missing:
            where = f"chunk_id IN ({', '.join(_quote(c) for c in missing)}) AND {acl_filter(labels, source)}"
            rows.update((r["chunk_id"], r) for r in ds.to_table(columns=self._read, filter=where).to_pylist())
        return [StoreHit(row=_expand(dict(rows[cid])), score=score) for cid, score in ranked if cid in rows]

    def search_dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: str | None = None) -> list[StoreHit]:
        """Top-k full rows by cosine similarity (the retriever uses rank_dense + fetch)."""
        where, version = acl_filter(labels, source), self._version()
        ranked = self._exact_rank(vector, labels, source, k, version)
        if ranked is not None:
            return self.fetch(ranked, labels, source)
        rows = self._ann(vector, where, k, self._read).drop_columns(["_rowid"]).to_pylist()
        return [StoreHit(row=_expand(r), score=1.0 - float(r.pop("_distance"))) for r in rows]

    def search_terms(self, terms: list[str], labels: frozenset[str], k: int, source: str | None = None) -> list[StoreHit]:
        """Top-k full rows by BM25 in one query, or from memory on the exact path (the retriever uses
        rank_terms + fetch)."""
        if not terms:
            return []
        ranked = self._exact_rank(terms, labels, source, k, self._version(), kind="terms")
        if ranked is not None:  # ranked from memory as rank_terms ranks
            return self.fetch(ranked, labels, source)
        rows = self._terms(terms, acl_filter(labels, source), k, self._read).drop_columns(["_rowid", "_score"]).to_pylist()
        return [StoreHit(row=_expand(r), score=_rank_score(i)) for i, r in enumerate(rows)]

    def chunk_keys(self) -> list[tuple[str, str, str]]:
        t = self._table.to_arrow().select(["chunk_id", "doc_id", "version_id"]) if self.count() else None
        if t is None:
            return []
        return list(zip(*(t.column(c).to_pylist() for c in ("chunk_id", "doc_id", "version_id"))))

    def rows_for(self, doc_ids: list[str]) -> list[dict]:
        if not doc_ids:
            return []
        scope = f"doc_id IN ({', '.join(_quote(d) for d in doc_ids)})"
        return self._table.search().where(scope).limit(None).select(_COLUMNS + ["acl"]).to_list()

    def count(self) -> int:
        return self._table.count_rows()
