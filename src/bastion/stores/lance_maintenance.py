"""Index maintenance of the LanceDB chunk table: building, folding in and merging indexes,
compacting data files, and loading indexes into the process's cache.

:class:`IndexMaintainer` does the work behind :meth:`LanceStore.optimize
<bastion.stores.lance.LanceStore.optimize>`, :meth:`~bastion.stores.lance.LanceStore.build_vector_index`
and :meth:`~bastion.stores.lance.LanceStore.warm`; the store holds one and delegates to it. The
tunables (``fragment_rows``, ``fold_indexed_fragments``, ``max_terms_segments``, ``ann_min_rows``,
``vector_index``) stay on the store, where configuration sets them.
"""
from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bastion.events import log

if TYPE_CHECKING:
    from bastion.stores.lance import LanceStore

__all__ = ["IndexMaintainer"]


class IndexMaintainer:
    """Keeps a :class:`~bastion.stores.lance.LanceStore`'s indexes and data files in shape.

    Args:
        store: the store whose table this maintains; its tunables are read at each call.
    """

    def __init__(self, store: LanceStore) -> None:
        self.store = store
        self._warmed: dict[str, tuple[str, ...]] = {}  # index name -> its segments when warm() last loaded it

    def optimize(self) -> None:
        """Build missing indexes, fold new rows into existing ones, compact small files."""
        from lancedb.index import FTS, BTree, LabelList

        store = self.store
        rows = store._table.count_rows()
        if rows == 0:
            return
        store._list_indexes()  # another process may have built some since this one looked
        made = False
        wanted: dict[str, FTS | LabelList | BTree] = {
            "terms": FTS(base_tokenizer="whitespace", lower_case=False, stem=False, remove_stop_words=False,
                         ascii_folding=False, with_position=False),
            "acl": LabelList(),
            "doc_id": BTree(),
            "chunk_id": BTree(),  # fetch(): chunk_id IN (...) look-ups of the hits a search keeps
        }
        for column, config in wanted.items():
            if column not in store._indexed_columns:
                store._table.create_index(column, config=config, replace=True)
                made = True
        if rows >= store.ann_min_rows and store.vector_index_built != store.vector_index:
            if store.vector_index_built is not None:  # the configured kind changed: rebuild (readers keep the old one meanwhile)
                log("store.vector_index_rebuild", was=store.vector_index_built, now=store.vector_index, rows=rows)
            self.build_vector_index()
            made = True
        if made:
            store._list_indexes()
        dataset = store.rows.dataset()
        self.compact(dataset)
        # new rows into the existing indexes (no retraining); the full-text index on its own, below
        others = [name for column, name in store._index_names.items() if column != "terms"]
        if others:
            dataset.optimize.optimize_indices(index_names=others)
        self.update_terms_index(dataset)
        self.merge_vector_segments(dataset)
        dataset.cleanup_old_versions(older_than=timedelta(hours=1), error_if_tagged_old_versions=False)

    def compact(self, dataset: Any) -> None:
        """Merge small data files into fragments of about ``fragment_rows`` rows; larger ones stay.

        LanceDB's ``optimize()`` compacts toward 1,048,576 rows per fragment, so every fragment below
        that is rewritten with the new rows at each optimize: at scale, the whole table to fold in a
        few thousand new rows. With a smaller target a fragment that reached it is never touched again
        (only if a tenth of its rows are deleted), so one compaction rewrites at most about
        ``fragment_rows`` rows. Rewriting a fragment some index covers also rewrites that index's row
        addresses, which is slow, so the fragments written since the last optimize are merged on their
        own, before they are indexed, and the small indexed ones only once ``fold_indexed_fragments``
        of them have gathered. Readers see the old files or the new.
        (figures: docs/benchmarks.md, 'Compaction'; bench/compaction.py)
        """
        store = self.store
        covered: set[int] = set()
        for index in dataset.describe_indices():
            for segment in index.segments:
                covered.update(segment.fragment_ids or ())
        small = sum(1 for f in dataset.get_fragments()
                    if f.fragment_id in covered and f.metadata.physical_rows < store.fragment_rows)
        exclude = sorted(covered) if small < store.fold_indexed_fragments else None
        if exclude is None:  # Lance merges only fragments the same index segments cover: one full-text segment first
            self.update_terms_index(dataset, merge=True)
        dataset.optimize.compact_files(target_rows_per_fragment=store.fragment_rows, excluded_fragment_ids=exclude)

    def update_terms_index(self, dataset: Any, merge: bool = False) -> None:
        """Index the new rows' terms as a new segment of the full-text index; merge the segments into one
        once there would be more than ``max_terms_segments`` (``merge``: merge them now, since compaction
        folds only fragments that the same segments cover).

        Folding new rows into the full-text index rewrites the whole index, which dominates an optimize
        at scale; a new segment holding only the new rows is cheap, and a search reads every segment and
        scores BM25 over them together, with nearly the same ranking as one index and no measurable
        latency cost (figures: docs/benchmarks.md, 'Compaction').
        """
        store = self.store
        name = store._index_names.get("terms")
        stats = store._table.index_stats(name) if name else None
        if stats is None or (stats.num_unindexed_rows == 0 and (not merge or _segments(stats) <= 1)):
            return
        segments = _segments(stats)
        merge = merge or segments + 1 > store.max_terms_segments
        dataset.optimize.optimize_indices(num_indices_to_merge=segments if merge else 0, index_names=[name])

    def merge_vector_segments(self, dataset: Any | None = None) -> None:
        """Fold the vector index's delta segments into one (``dataset``: the latest version, opened if not given).

        LanceDB's ``optimize()`` indexes new rows as a new segment of the vector index each time, and a
        search probes every segment on its own, so dense latency grows with each optimize. Lance merges
        segments with the same centroids and codebook (no retraining, so recall is unchanged); LanceDB
        does not expose it, so this calls the Lance engine it runs on (``pylance``, the same version).
        (figures: docs/benchmarks.md, 'Compaction')
        """
        store = self.store
        name = store._index_names.get("vector")  # listed at the start of optimize(); one built since has one segment
        stats = store._table.index_stats(name) if name else None
        if stats is None or _segments(stats) <= 1:
            return
        try:
            (dataset if dataset is not None else store.rows.dataset()).optimize.optimize_indices(
                num_indices_to_merge=_segments(stats), index_names=[name])
        except Exception as exc:  # noqa: BLE001 - the segments stay as they were: searches are right, only slower
            log("store.merge_segments_failed", segments=_segments(stats), error=str(exc))

    def build_vector_index(self, num_partitions: int | None = None, num_sub_vectors: int | None = None) -> None:
        """Train and build the vector index (the store's ``vector_index``: IVF_SQ by default, or IVF_PQ), replacing any.

        IVF_SQ keeps each vector as 8-bit scalar codes inside the index (a byte per dimension, held in
        memory once loaded), IVF_PQ as ``num_sub_vectors`` product-quantized bytes. PQ codes rank so
        coarsely that a search must re-read about ten full vectors per hit from the data files, SQ
        codes about two (:attr:`LanceStore.default_refine <bastion.stores.lance.LanceStore.default_refine>`),
        so IVF_SQ searches faster at equal recall and builds faster, for more memory.
        (figures: docs/benchmarks.md, 'Search latency'; bench/vector_index.py)
        ``num_sub_vectors`` applies to IVF_PQ only.
        """
        store = self.store
        rows = store._table.count_rows()
        parts = num_partitions or max(1, min(4096, int(rows ** 0.5)))
        subs = num_sub_vectors or (store.dimension // 8 if store.dimension % 8 == 0 else 1)
        from lancedb.index import IvfPq, IvfSq

        # Give LanceDB the partition *size*, not the count: an index built with num_partitions alone is
        # re-partitioned by the next table.optimize() toward LanceDB's default size (far fewer, larger
        # partitions), so nprobes=20 scanned a large share of the table. With target_partition_size
        # the partitioning survives optimize().
        size = max(1, rows // parts)
        config = (IvfSq(distance_type="cosine", target_partition_size=size) if store.vector_index == "IVF_SQ" else
                  IvfPq(distance_type="cosine", target_partition_size=size, num_sub_vectors=subs))
        store._table.create_index("vector", config=config, replace=True)
        store._list_indexes()

    def warm(self) -> list[str]:
        """Load into this process's index cache every index whose files changed since the last call (all
        of them the first time); the names of those loaded.

        A search loads the parts of an index it needs the first time, and after a sync's optimize()
        wrote new index files (a new full-text segment, the merged vector index) those are loaded
        again, so the first searches after a sync are slow without this. Loading them all takes a
        while and memory in proportion to the index (most for IVF_SQ), the changed ones after a sync
        much less; ``bastion serve`` does it at start and whenever the table version moved
        (``search.warm_check_s``, :mod:`bastion.server.warm`). The chunk id index is also loaded for
        :meth:`LanceStore.fetch <bastion.stores.lance.LanceStore.fetch>`'s look-ups, which read
        through the Lance engine directly. (figures: docs/benchmarks.md, 'Search latency')
        """
        store = self.store
        dataset = store.rows.snapshot()[0]  # the latest version, without opening the dataset again
        now = {i.name: tuple(sorted(str(seg.uuid) for seg in i.segments)) for i in dataset.describe_indices()}
        changed = [name for name, segments in now.items() if self._warmed.get(name) != segments]
        for name in changed:
            store._run(store._reader.prewarm_index(name))
            if name == store._index_names.get("chunk_id"):
                dataset.prewarm_index(name)
        if changed:  # another process may have rebuilt the vector index as another kind (its refine differs)
            store._list_indexes()
        self._warmed = now
        return changed


def _segments(stats: Any) -> int:
    """An index's segments from LanceDB's index statistics (which type the count as optional; one when unknown)."""
    return int(stats.num_indices) if stats.num_indices is not None else 1
