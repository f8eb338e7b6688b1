"""The connector plugin boundary."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SourceItem:
    """One document a source holds, listed cheaply; ``load()`` reads its bytes.

    ``mtime`` (and ``size`` when known) let the pipeline skip reading unchanged documents.
    ``error`` is set when the item is known to be unusable (oversize, bad ACL file): it is
    recorded for that document and the run goes on. ``skipped`` says why an item the source
    holds is not a document at all (``link``, a pipe): the sync reports it and indexes nothing
    under its key (a document indexed there before is removed).
    """

    key: str
    uri: str
    media_type: str
    acl: frozenset[str]
    load: Callable[[], bytes]
    mtime: float | None = None
    size: int | None = None
    title: str | None = None
    error: str | None = None
    skipped: str | None = None
    metadata: dict = field(default_factory=dict)


class Connector(Protocol):
    """Lists a source's documents. Raises :class:`IngestError` only if the whole source is unreadable."""

    def scan(self) -> Iterator[SourceItem]:
        ...
