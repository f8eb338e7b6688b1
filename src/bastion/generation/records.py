"""What answering keeps in the catalog: the answer cache, the content hashes of the retrieved
versions, the embedding cache of evidence sentences, and one lineage entry per answer (written
through :mod:`bastion.lineage`).

The answerer itself holds no catalog: it asks an :class:`AnswerRecords` for these.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bastion import lineage
from bastion.catalog.db import Catalog
from bastion.catalog.models import AnswerCacheRow, DocumentVersionRow
from bastion.core.types import Hit, Principal
from bastion.generation.results import Answer

if TYPE_CHECKING:
    from bastion.embedding.cache import CachedEmbedder
    from bastion.embedding.protocol import Embedder


class AnswerRecords:
    """The answerer's reads and writes of one workspace's catalog."""

    def __init__(self, catalog: Catalog, *, embed_batch_size: int = 32):
        self.catalog = catalog
        self.embed_batch_size = embed_batch_size

    def hit_records(self, hits: list[Hit]) -> list[dict[str, Any]]:
        """The retrieved passages as lineage shows them, each with its version's content hash
        (so a later reader can tell whether the document changed since)."""
        hashes: dict[str, str] = {}
        if hits:
            with self.catalog.session() as s:
                rows = s.execute(select(DocumentVersionRow.id, DocumentVersionRow.content_hash)
                                 .where(DocumentVersionRow.id.in_({h.version_id for h in hits})))
                hashes = {vid: digest for vid, digest in rows.all()}
        return [{"n": i + 1, "chunk_id": h.chunk_id, "doc_id": h.doc_id, "version_id": h.version_id,
                 "content_hash": hashes.get(h.version_id), "score": round(h.score, 6), "path": h.path,
                 "page": h.page} for i, h in enumerate(hits)]

    def embedding_cache(self, embedder: Embedder) -> CachedEmbedder:
        """``embedder`` behind the catalog's embedding cache: an unchanged sentence is embedded once."""
        from bastion.embedding.cache import CachedEmbedder

        return CachedEmbedder(embedder, self.catalog, self.embed_batch_size)

    def cached(self, key: str) -> dict[str, Any] | None:
        """The cached answer (``Answer.to_dict`` without timings) under ``key``, if any."""
        with self.catalog.session() as s:
            row = s.get(AnswerCacheRow, key)
            return dict(row.answer) if row else None

    def cache(self, key: str, answer: Answer) -> None:
        d = answer.to_dict()
        d.pop("timings_ms", None)
        try:
            with self.catalog.session(write=True) as s:
                s.merge(AnswerCacheRow(key=key, answer=d))
        except IntegrityError:  # another request cached the same answer at the same moment (PostgreSQL): keep it
            pass

    def trace(self, answer: Answer, principal: Principal, record: dict[str, Any]) -> None:
        """Write the answer's lineage entry: its decision and the full ``record`` of how it was made."""
        lineage.write(self.catalog, lineage.LineageEntry(
            id=answer.lineage_id, user_id=principal.user_id, principal=sorted(principal.labels()),
            question=answer.question, rewritten_question=answer.rewritten_question, mode=answer.mode,
            decision=answer.decision, reason=answer.reason,
            record=record | {"invalid_citations": answer.invalid_citations, "cached": answer.cached}))


__all__ = ["AnswerRecords"]
