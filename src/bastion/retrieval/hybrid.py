"""Hybrid retrieval: BM25 and dense candidates, both ACL-filtered inside the store, fused by RRF.

Both legs rank chunk ids only; full rows (text, citation fields) are read for the final k hits,
by an ACL-filtered ``fetch``. Reading rows costs several times more than ranking at scale, so the
candidates that fusion drops are never read (figures: docs/benchmarks.md, 'Search latency'). Dense
search alone ranks just k, so it reads them in the ranking query itself.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from bastion.core.types import Hit, Principal
from bastion.retrieval.analyzer import analyze
from bastion.stores.protocol import ChunkStore, Ranked, SourceFilter, StoreHit

# Threads for the BM25 leg of hybrid searches, shared by every retriever of the process.
_LEGS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="bastion-bm25")


def rrf(rankings: list[list[str]], k: int = 60, weights: list[float] | None = None) -> dict[str, float]:
    """Reciprocal-rank fusion: ``sum(w / (k + rank))`` over the lists an id appears in.

    >>> sorted(rrf([["a", "b"], ["b", "c"]]).items(), key=lambda kv: -kv[1])[0][0]
    'b'
    """
    weights = weights or [1.0] * len(rankings)
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (k + rank)
    return scores


def _hit(h: StoreHit) -> Hit:
    r = h.row
    return Hit(chunk_id=r["chunk_id"], doc_id=r["doc_id"], document=r["document"], path=r["path"],
               source=r["source"], page=r["page"], section=r["section"], score=h.score, text=r["text"],
               char_start=r["char_start"], char_end=r["char_end"], version_id=r["version_id"])


class HybridRetriever:
    """Search as a principal. The principal is a required argument: there is no anonymous read."""

    def __init__(self, store: ChunkStore, embed_query: Callable[[str], np.ndarray], *, candidates: int = 50,
                 rrf_k: int = 10, bm25_weight: float = 1.25):
        self.store, self.embed_query = store, embed_query
        self.candidates, self.rrf_k, self.bm25_weight = candidates, rrf_k, bm25_weight

    def rank(self, query: str, labels: frozenset[str], k: int, *, source: SourceFilter = None,
             mode: str = "hybrid") -> list[Ranked]:
        """Every candidate id, best first: one leg's ranking, or both legs fused by weighted RRF
        (ties broken by chunk id). Each leg ranks ``max(k, candidates)`` ids, except dense alone,
        which ranks ``k``: it has nothing to fuse, and a deeper IVF probe refines more vectors. No row
        is read."""
        depth = k if mode == "dense" else max(k, self.candidates)
        if mode == "dense":
            return self.store.rank_dense(self.embed_query(query), labels, depth, source)
        if mode == "bm25":
            return self.store.rank_terms(analyze(query), labels, depth, source)
        # The BM25 leg runs on another thread while this one embeds the query and ranks by vector:
        # both wait on LanceDB's native threads or numpy most of the time, so a hybrid search costs
        # about its slower leg instead of the sum (figures: docs/benchmarks.md, 'Search latency').
        pending = _LEGS.submit(self.store.rank_terms, analyze(query), labels, depth, source)
        try:
            dense = self.store.rank_dense(self.embed_query(query), labels, depth, source)
        except BaseException:
            wait([pending])  # let the other leg finish before the error propagates
            raise
        terms = pending.result()
        fused = rrf([[cid for cid, _ in dense], [cid for cid, _ in terms]], self.rrf_k, weights=[1.0, self.bm25_weight])
        return [Ranked(cid, score) for cid, score in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))]

    def search(self, query: str, principal: Principal, k: int = 10, *, source: SourceFilter = None,
               mode: str = "hybrid") -> list[Hit]:
        labels = principal.labels()
        if mode == "dense":
            # Dense alone ranks only k, so the k rows are read by the ranking query itself: through the
            # IVF index one query instead of two (figures: docs/benchmarks.md, 'Search latency').
            hits = self.store.search_dense(self.embed_query(query), labels, k, source)
            if len(hits) < k < self.candidates:
                # fewer than k: a sync replaced some ranked chunks before their rows were read (the exact
                # path reads them after ranking), or fewer exist. Rank deeper for the rest.
                tried = {h.row["chunk_id"] for h in hits}
                deeper = self.rank(query, labels, self.candidates, source=source, mode=mode)
                hits += self._fetch([r for r in deeper if r.chunk_id not in tried], k - len(hits), labels, source)
            return [_hit(h) for h in hits]
        ranked = self.rank(query, labels, k, source=source, mode=mode)
        return [_hit(h) for h in self._fetch(ranked, k, labels, source)]

    def _fetch(self, ranked: list[Ranked], k: int, labels: frozenset[str], source: SourceFilter) -> list[StoreHit]:
        """Rows of the first k ranked ids, in rank order. An id the fetch does not return (a concurrent
        sync replaced its chunk, or its ACL no longer admits ``labels``) is dropped and the next
        candidates are fetched in its place, until k hits or no candidates are left."""
        hits: list[StoreHit] = []
        pos = 0
        while len(hits) < k and pos < len(ranked):
            batch = ranked[pos:pos + k - len(hits)]
            pos += len(batch)
            hits += self.store.fetch(batch, labels, source)
        return hits
