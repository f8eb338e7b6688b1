"""The connector plugin boundary."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol


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


@dataclass(frozen=True)
class Original:
    """A document's original as its source holds it, for ``GET /api/v1/documents/{id}/original``.

    A connector may offer it through an optional method (not a member of :class:`Connector`, so a
    connector without it is still one; the API then answers with the text as indexed)::

        def original(self, key: str) -> Original | None: ...

    ``key`` is a document's key as the connector listed it. The method returns None when the source
    no longer holds that document, raises ``OSError`` (or :class:`~bastion.core.errors.IngestError`)
    when the source cannot be reached, and reads nothing big itself: ``open()`` returns the bytes (or
    a binary stream, closed by the caller), and is only called once ``size`` is within the server's
    limit. A kind whose original lives at a URL (a web page) gives ``url`` and no ``open``: the API
    shows the link, never fetches it.

    >>> Original(name="q3.pdf", media_type="application/pdf", size=3, open=lambda: b"%PD").open()
    b'%PD'
    """

    name: str
    media_type: str
    size: int | None = None  # bytes, as the source reports them (checked against the limit before open)
    open: Callable[[], bytes | BinaryIO] | None = None
    url: str | None = None
    mtime: float | None = None  # as in SourceItem.mtime; a different value means it changed since the sync
