"""Embeddings cached by (embedder id, text hash): unchanged text is never embedded twice."""
from __future__ import annotations

import hashlib

import numpy as np
from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import EmbeddingCacheRow
from bastion.embedding.protocol import Embedder


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedEmbedder:
    """Wraps an embedder; vectors persist in the catalog and survive a crash."""

    def __init__(self, embedder: Embedder, catalog: Catalog, batch_size: int = 32):
        self.embedder = embedder
        self.catalog = catalog
        self.batch_size = batch_size
        self.embedded = 0  # texts actually sent to the model

    def lookup(self, hashes: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self.catalog.session() as s:
            for i in range(0, len(hashes), 500):
                rows = s.execute(
                    select(EmbeddingCacheRow.text_hash, EmbeddingCacheRow.vector).where(
                        EmbeddingCacheRow.embedder_id == self.embedder.id,
                        EmbeddingCacheRow.text_hash.in_(hashes[i : i + 500]),
                    )
                )
                for h, blob in rows:
                    found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def embed(self, texts: list[str], progress=None) -> np.ndarray:
        """Vectors for ``texts``, computing only the ones not in the cache."""
        hashes = [text_hash(t) for t in texts]
        known = self.lookup(sorted(set(hashes)))
        missing: dict[str, str] = {}
        for h, t in zip(hashes, texts):
            if h not in known:
                missing.setdefault(h, t)
        todo = list(missing.items())
        for i in range(0, len(todo), self.batch_size):
            batch = todo[i : i + self.batch_size]
            vecs = self.embedder.embed_passages([t for _, t in batch])
            with self.catalog.session(write=True) as s:
                for (h, _), v in zip(batch, vecs):
                    s.merge(EmbeddingCacheRow(embedder_id=self.embedder.id, text_hash=h, vector=v.astype(np.float32).tobytes()))
            for (h, _), v in zip(batch, vecs):
                known[h] = v
            self.embedded += len(batch)
            if progress:
                progress(len(batch))
        dim = self.embedder.dimension
        return np.stack([known[h] for h in hashes]) if texts else np.zeros((0, dim), dtype=np.float32)
