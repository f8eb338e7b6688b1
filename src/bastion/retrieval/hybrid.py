"""Hybrid retrieval: BM25 and dense candidates, both ACL-filtered inside the store, fused by RRF."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bastion.core.types import Hit, Principal
from bastion.retrieval.analyzer import analyze
from bastion.stores.protocol import ChunkStore, StoreHit


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


def _hit(h: StoreHit, score: float) -> Hit:
    r = h.row
    return Hit(chunk_id=r["chunk_id"], doc_id=r["doc_id"], document=r["document"], path=r["path"],
               source=r["source"], page=r["page"], section=r["section"], score=score, text=r["text"],
               char_start=r["char_start"], char_end=r["char_end"], version_id=r["version_id"])


class HybridRetriever:
    """Search as a principal. The principal is a required argument: there is no anonymous read."""

    def __init__(self, store: ChunkStore, embed_query: Callable[[str], np.ndarray], *, candidates: int = 50,
                 rrf_k: int = 10, bm25_weight: float = 1.25):
        self.store, self.embed_query = store, embed_query
        self.candidates, self.rrf_k, self.bm25_weight = candidates, rrf_k, bm25_weight

    def search(self, query: str, principal: Principal, k: int = 10, *, source: str | None = None,
               mode: str = "hybrid") -> list[Hit]:
        labels = principal.labels()
        depth = max(k, self.candidates)
        dense = self.store.search_dense(self.embed_query(query), labels, depth, source) if mode in ("hybrid", "dense") else []
        terms = self.store.search_terms(analyze(query), labels, depth, source) if mode in ("hybrid", "bm25") else []
        if mode == "dense":
            return [_hit(h, h.score) for h in dense[:k]]
        if mode == "bm25":
            return [_hit(h, h.score) for h in terms[:k]]
        fused = rrf([[h.row["chunk_id"] for h in dense], [h.row["chunk_id"] for h in terms]], self.rrf_k,
                    weights=[1.0, self.bm25_weight])
        by_id = {h.row["chunk_id"]: h for h in terms} | {h.row["chunk_id"]: h for h in dense}
        best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [_hit(by_id[cid], score) for cid, score in best]
