"""The LanceDB chunk table's layout: schema, packed citation column, ACL filter and constants, and the
types :class:`~bastion.stores.lance.LanceStore`'s probes return.

Pure functions and names shared by the store's reads, writes and index maintenance
(:mod:`bastion.stores.lance`, :mod:`bastion.stores.lance_maintenance`); nothing here touches a table.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from bastion.core.errors import StoreError

__all__ = ["CITE", "COLUMNS", "META_FILE", "TABLE", "WRITE_LOCK", "IndexStats", "LanceHandles", "StoreStats",
           "acl_filter", "expand", "pack_cite", "quote", "rank_score", "schema"]

TABLE = "chunks"
META_FILE = "bastion-index.json"
WRITE_LOCK = "bastion-write.lock"  # held by replace_documents() while it reads, writes and commits
COLUMNS = ["chunk_id", "doc_id", "version_id", "source", "document", "path", "page", "section",
           "ordinal", "text", "char_start", "char_end"]
# A row's citation fields are also kept packed in one JSON column, ``cite``: every column a read
# touches costs time at scale (figures: docs/benchmarks.md, 'Search latency'), so a hit is read as
# chunk_id + text + cite. The separate columns stay for filters (source, doc_id) and for indexes
# written before ``cite``.
CITE = [c for c in COLUMNS if c not in ("chunk_id", "text")]


def schema(dim: int, cite: bool = True) -> pa.Schema:
    """The chunk table's schema for ``dim``-dimensional vectors, with or without the packed ``cite`` column."""
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


def pack_cite(row: dict[str, Any]) -> str:
    """The ``cite`` column's value for a row holding the citation fields.

    >>> pack_cite(dict.fromkeys(CITE, 1))
    '[1,1,1,1,1,1,1,1,1,1]'
    """
    return json.dumps([row[name] for name in CITE], ensure_ascii=False, separators=(",", ":"))


def expand(row: dict[str, Any]) -> dict[str, Any]:
    """A row as read (chunk_id, text, cite, ...) with its citation fields unpacked (in place)."""
    packed = row.pop("cite", None)
    if packed is not None:
        row.update(zip(CITE, json.loads(packed)))
    return row


def rank_score(rank: int) -> float:
    """The score of the ``rank``-th (from 0) hit of a full-text-index query: its reciprocal rank.

    The full-text index scores BM25 with term statistics of the whole table, the chunks the
    filter refuses included, so its raw scores would tell a principal how often the query's
    words occur in text it may not read. Only the order leaves the store; what the order itself
    still carries is described in docs/security.md. The exact path scores BM25 over the
    principal's own chunks (:mod:`.postings`) and keeps real scores.
    """
    return 1.0 / (rank + 1)


def quote(value: str) -> str:
    """``value`` as an SQL string literal.

    >>> quote("it's")
    "'it''s'"
    """
    return "'" + value.replace("'", "''") + "'"


def acl_filter(labels: frozenset[str], source: str | Sequence[str] | None = None) -> str:
    """The SQL predicate that admits only chunks whose ACL shares a label with the principal.

    ``source`` narrows it to one source, or to several (an empty list admits none).

    >>> acl_filter(frozenset({"user:eve", "group:hr"}), "wiki")
    "array_has_any(acl, ['group:hr', 'user:eve']) AND source = 'wiki'"
    """
    if not labels:
        raise StoreError("a query needs at least one principal label")
    where = f"array_has_any(acl, [{', '.join(quote(label) for label in sorted(labels))}])"
    if isinstance(source, str):
        where += f" AND source = {quote(source)}"
    elif source is not None:  # several sources (an assistant's); an empty list admits none
        where += f" AND source IN ({', '.join(quote(s) for s in sorted(set(source))) or 'NULL'})"
    return where


@dataclass(frozen=True)
class IndexStats:
    """One index of the chunk table."""

    name: str
    kind: str  # LanceDB's index type: "FTS", "LabelList", "BTree", "IvfSq", "IvfPq"
    segments: int  # the index's segments (a new one per optimize until they are merged)
    unindexed_rows: int  # rows written since the index last took new rows in


@dataclass(frozen=True)
class StoreStats:
    """What :meth:`LanceStore.stats` reports: a probe for benchmarks, checks and tests."""

    rows: int
    version: int  # the table's latest version
    indexes: dict[str, IndexStats] = field(default_factory=dict)  # by indexed column
    vector_index: str | None = None  # "IVF_SQ", "IVF_PQ", or None before one is built
    exact_entries: int = 0  # (label, source) entries held in memory for the exact path (:mod:`.exact`)
    exact_bytes: int = 0  # the memory they take


class LanceHandles(NamedTuple):
    """The LanceDB and Lance objects under a :class:`LanceStore`, for benchmarks and tools that measure
    LanceDB itself (bulk loads, LanceDB's own optimize or merge_insert as a baseline). Anything done
    through them bypasses the store's write lock, ACL filters and caches."""

    table: Any  # lancedb.table.LanceTable
    async_table: Any  # lancedb.table.AsyncTable behind it, which the store's searches use
    run: Callable[[Awaitable[Any]], Any]  # runs an AsyncTable coroutine on LanceDB's background loop
    dataset: Callable[[], Any]  # opens the latest version as a lance.LanceDataset
