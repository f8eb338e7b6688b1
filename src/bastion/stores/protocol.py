"""The chunk-store plugin boundary. Every read takes the principal's ACL labels."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bastion.catalog.db import Catalog

SourceFilter = str | Sequence[str] | None
"""Which sources a read covers: one source's name, several, or ``None`` for every source."""


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
    row: dict[str, Any]
    score: float


class Ranked(NamedTuple):
    """One entry of a ranking: a chunk id and its score (higher is better)."""

    chunk_id: str
    score: float


class ChunkStore(Protocol):
    """Holds chunks; enforces ACL labels inside every query.

    Reads come in two steps so that full rows (text and citation fields) are read only for the
    hits a caller keeps: ``rank_dense`` / ``rank_terms`` return ranked chunk ids, ``fetch`` reads
    the rows of chosen ids. Every one of them takes the principal's labels and applies the ACL
    filter inside the store, ``fetch`` included: an id obtained elsewhere never yields a row the
    labels may not read.
    """

    def replace_documents(self, doc_ids: list[str], chunks: list[StoredChunk]) -> None:
        """Atomically make ``chunks`` the only chunks of ``doc_ids`` (none: delete them)."""
        ...

    def rank_dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: SourceFilter = None) -> list[Ranked]:
        """Ids and cosine similarities of the top-k chunks whose ACL meets ``labels``, best first."""
        ...

    def rank_terms(self, terms: list[str], labels: frozenset[str], k: int, source: SourceFilter = None) -> list[Ranked]:
        """Ids and scores of the top-k chunks whose ACL meets ``labels`` by BM25, best first.

        A score may be computed only from chunks ``labels`` admit (BM25 statistics over the
        principal's readable chunks); a store whose full-text index scores with statistics of the
        whole table returns a score derived from the rank alone instead.
        """
        ...

    def fetch(self, ranked: Sequence[tuple[str, float]], labels: frozenset[str], source: SourceFilter = None) -> list[StoreHit]:
        """Full rows of the ranked ids, in the given order, each hit carrying its given score.

        Ids that no longer exist (a sync replaced them) or whose chunk ``labels`` may not read
        (or, with ``source``, of another source) are left out.
        """
        ...

    def search_dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: SourceFilter = None) -> list[StoreHit]:
        """Full rows of the top-k chunks ``rank_dense`` would return, read by the same query where the
        store can (dense-only search reads exactly k rows, so ranking and reading need not be two steps)."""
        ...

    def chunk_keys(self) -> list[tuple[str, str, str]]:
        """(chunk_id, doc_id, version_id) of every stored chunk (for checks and rebuilds)."""
        ...

    def count(self) -> int:
        ...

    def optimize(self) -> None:
        """Fold new rows into the indexes (cheap when little changed)."""
        ...


@runtime_checkable
class CatalogTransactionStore(Protocol):
    """Optional capability of a store that can live in the catalog's own database (the pgvector store).

    When :meth:`shares_database_with` says so, the sync writes a batch's chunks and marks its documents
    indexed in one transaction of that database (:mod:`bastion.ingest.pipeline`), instead of two commits.
    """

    def shares_database_with(self, catalog: Catalog) -> bool:
        """Whether ``catalog`` is in the store's database, so that :meth:`replace_documents_in` may be used."""
        ...

    def replace_documents_in(self, session: Session, doc_ids: list[str], chunks: list[StoredChunk]) -> None:
        """``replace_documents`` inside the catalog's open ``session``: its commit publishes both, its rollback neither."""
        ...


def in_catalog_database(store: object, catalog: Catalog) -> CatalogTransactionStore | None:
    """``store`` when it lives in ``catalog``'s database and can write in its transactions, else None."""
    if isinstance(store, CatalogTransactionStore) and store.shares_database_with(catalog):
        return store
    return None
