"""The chunk-store plugin boundary. Every read takes the principal's ACL labels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class StoredChunk:
    """One row of the index: a chunk, its vector, its BM25 terms and its ACL labels."""

    chunk_id: str
    doc_id: str
    version_id: str
    source: str
    document: str
    path: str
    page: int | None
    section: str | None
    ordinal: int
    text: str
    terms: str
    char_start: int
    char_end: int
    acl: tuple[str, ...]
    vector: np.ndarray


@dataclass(frozen=True)
class StoreHit:
    row: dict
    score: float


class ChunkStore(Protocol):
    """Holds chunks; enforces ACL labels inside every query."""

    def replace_documents(self, doc_ids: list[str], chunks: list[StoredChunk]) -> None:
        """Atomically make ``chunks`` the only chunks of ``doc_ids`` (none: delete them)."""
        ...

    def search_dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: str | None = None) -> list[StoreHit]:
        """Top-k by cosine similarity among chunks whose ACL meets ``labels``."""
        ...

    def search_terms(self, terms: list[str], labels: frozenset[str], k: int, source: str | None = None) -> list[StoreHit]:
        """Top-k by BM25 among chunks whose ACL meets ``labels``."""
        ...

    def chunk_keys(self) -> list[tuple[str, str, str]]:
        """(chunk_id, doc_id, version_id) of every stored chunk (for checks and rebuilds)."""
        ...

    def count(self) -> int:
        ...

    def optimize(self) -> None:
        """Fold new rows into the indexes (cheap when little changed)."""
        ...
