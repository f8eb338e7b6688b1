"""Deterministic stand-ins for slow components."""
from __future__ import annotations

import hashlib

import numpy as np

from bastion.retrieval.analyzer import analyze


class HashEmbedder:
    """Bag-of-terms vectors by feature hashing: similar text gets similar vectors, instantly.

    >>> e = HashEmbedder(dimension=64)
    >>> float(e.embed_query("hotel cap") @ e.embed_passages(["the hotel cap is 180"])[0]) > 0.3
    True
    """

    def __init__(self, dimension: int = 64):
        self.dimension = dimension
        self.id = f"testing/hash-{dimension}"
        self.calls = 0

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dimension, dtype=np.float32)
        for term in analyze(text) or [text]:
            h = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "little")
            v[h % self.dimension] += 1.0 if (h >> 32) & 1 else -1.0
        n = np.linalg.norm(v)
        return v / n if n else np.full(self.dimension, 1 / np.sqrt(self.dimension), np.float32)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)

    def count_tokens(self, text: str) -> int:
        return len(analyze(text)) + 2
