"""Documents as a principal may see them, and feedback on answers.

The rules live here so that the HTTP API, the CLI and the Python API apply them alike: a document is
readable when it is active and its ACL names the principal; a document that is missing and one that
may not be read look the same (``None``), so a caller cannot probe for ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import DocumentRow, DocumentVersionRow, FeedbackRow, LineageRow, SourceRow, utc_iso
from bastion.core.types import Principal

Rating = Literal["up", "down"]


@dataclass(frozen=True)
class Document:
    """One indexed document, without its text.

    Attributes:
        id: The document's id (stable across versions).
        title: The title the parser found, if any.
        path: Where the document lives inside its source (a relative path, or a SQL row id).
        source: The name of its source.
        status: ``active`` for a document that can be searched.
        version_id: The id of its current version.
        updated_at: When the catalog last changed it (naive UTC).

    >>> Document("d1", "Q3", "finance/q3.md", "docs", "active", "v1", datetime(2026, 12, 1)).to_dict()["updated_at"]
    '2026-12-01T00:00:00Z'
    """

    id: str
    title: str | None
    path: str
    source: str
    status: str
    version_id: str | None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The document as the API shows it."""
        return {"id": self.id, "title": self.title, "path": self.path, "source": self.source, "status": self.status,
                "version_id": self.version_id, "updated_at": utc_iso(self.updated_at)}


@dataclass(frozen=True)
class DocumentVersion:
    """One version of a document: what a sync read and how it parsed it.

    Attributes:
        id: The version's id.
        content_hash: sha256 (hex) of the bytes it was read from.
        size: Their length in bytes.
        parser: The parser that read it.

    >>> DocumentVersion("v1", "ab12", 42, "markdown").to_dict()
    {'id': 'v1', 'content_hash': 'ab12', 'size': 42, 'parser': 'markdown'}
    """

    id: str
    content_hash: str
    size: int
    parser: str | None

    def to_dict(self) -> dict[str, Any]:
        """The version as the API shows it."""
        return {"id": self.id, "content_hash": self.content_hash, "size": self.size, "parser": self.parser}


class DocumentCatalog:
    """The catalog's documents, read as one principal, and the feedback users give on answers.

    Args:
        catalog: The workspace's catalog.

    >>> from bastion.catalog.db import Catalog
    >>> docs = DocumentCatalog(Catalog.open("sqlite:///:memory:"))
    >>> docs.list_readable(Principal("alice"))
    []
    >>> docs.readable(Principal("alice"), "no-such-id") is None
    True
    """

    def __init__(self, catalog: Catalog):
        self._catalog = catalog

    def readable(self, principal: Principal, doc_id: str) -> Document | None:
        """The document ``doc_id`` if ``principal`` may read it.

        Args:
            principal: Who is reading.
            doc_id: The document's id.

        Returns:
            The document; ``None`` when there is no such active document or its ACL does not name
            ``principal`` (the two are indistinguishable on purpose).

        >>> from bastion.catalog.db import Catalog
        >>> DocumentCatalog(Catalog.open("sqlite:///:memory:")).readable(Principal("bob"), "d1") is None
        True
        """
        with self._catalog.session() as s:
            doc = s.get(DocumentRow, doc_id)
            if doc is None or doc.status != "active" or not principal.can_read(doc.acl or []):
                return None
            source = s.get(SourceRow, doc.source_id)
            return _document(doc, source.name if source is not None else "?")

    def list_readable(self, principal: Principal, source: str | None = None, limit: int = 100,
                      offset: int = 0) -> list[Document]:
        """The active documents ``principal`` may read, by path.

        Args:
            principal: Who is reading.
            source: Only documents of the source of this name (none when no source has it).
            limit: At most this many documents.
            offset: Skip this many readable documents first (paging counts only what ``principal``
                may read, so a page never hints at documents it hides).

        Returns:
            Up to ``limit`` documents, ordered by path.

        >>> from bastion.catalog.db import Catalog
        >>> DocumentCatalog(Catalog.open("sqlite:///:memory:")).list_readable(Principal("bob"), "docs", 10, 0)
        []
        """
        out: list[Document] = []
        skipped = 0
        with self._catalog.session() as s:
            names: dict[int, str] = {i: n for i, n in s.execute(select(SourceRow.id, SourceRow.name))}
            q = select(DocumentRow).where(DocumentRow.status == "active").order_by(DocumentRow.key)
            if source:
                q = q.where(DocumentRow.source_id.in_([i for i, n in names.items() if n == source]))
            for doc in s.scalars(q).yield_per(1000):
                if not principal.can_read(doc.acl or []):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(_document(doc, names.get(doc.source_id, "?")))
                if len(out) >= limit:
                    break
        return out

    def current_version(self, document: Document) -> DocumentVersion | None:
        """The version of ``document`` that is indexed now (``None`` before its first sync).

        Args:
            document: A document from :meth:`readable` or :meth:`list_readable`.

        Returns:
            Its current version, or ``None``.

        >>> from bastion.catalog.db import Catalog
        >>> cat = DocumentCatalog(Catalog.open("sqlite:///:memory:"))
        >>> cat.current_version(Document("d1", None, "a.md", "docs", "active", None, datetime(2026, 1, 1))) is None
        True
        """
        if not document.version_id:
            return None
        with self._catalog.session() as s:
            row = s.get(DocumentVersionRow, document.version_id)
            if row is None:
                return None
            return DocumentVersion(row.id, row.content_hash, row.size, row.parser)

    def add_feedback(self, principal: Principal, lineage_id: str, rating: Rating, *, correction: str | None = None,
                     comment: str | None = None) -> int | None:
        """Record ``principal``'s verdict on one of their own answers.

        Args:
            principal: Who gives the feedback; only the user who asked may rate an answer.
            lineage_id: The answer's lineage id.
            rating: ``up`` or ``down``.
            correction: A corrected answer, if the user wrote one.
            comment: A free-text comment.

        Returns:
            The feedback's id; ``None`` when there is no such answer or it is not ``principal``'s
            (the two are indistinguishable on purpose).

        >>> from bastion.catalog.db import Catalog
        >>> DocumentCatalog(Catalog.open("sqlite:///:memory:")).add_feedback(Principal("bob"), "l1", "down") is None
        True
        """
        with self._catalog.session() as s:
            answer = s.get(LineageRow, lineage_id)
            if answer is None or answer.user_id != principal.user_id:
                return None
            row = FeedbackRow(lineage_id=lineage_id, user_id=principal.user_id, rating=1 if rating == "up" else -1,
                              correction=correction, comment=comment)
            s.add(row)
            s.flush()
            return row.id


def _document(row: DocumentRow, source: str) -> Document:
    return Document(row.id, row.title, row.key, source, row.status, row.current_version_id, row.updated_at)
