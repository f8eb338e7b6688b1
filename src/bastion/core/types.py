"""Domain types shared by every stage. No vendor type appears here."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bastion.core.errors import AccessError

EVERYONE = "everyone"
_PRINCIPAL_RE = re.compile(r"^(everyone|user:[^\s,#]+|group:[^\s,#]+)$")
_COMMENT_RE = re.compile(r"(?:^|(?<=[\s,]))#.*")  # a comment: from a # that starts a word to the end of the line


def parse_principal(text: str) -> str:
    """Validate one principal string (``user:<id>``, ``group:<name>`` or ``everyone``)."""
    value = text.strip()
    if not _PRINCIPAL_RE.match(value):
        raise AccessError(
            f"invalid principal {text!r}: use 'user:<id>', 'group:<name>' or 'everyone'"
        )
    return value


def parse_acl(text: str | None) -> frozenset[str]:
    """Parse an ACL text: principals separated by commas or new lines, ``#`` comments.

    A ``#`` at the start of a line, or after a space or a comma, begins a comment that runs to
    the end of that line; comments are removed line by line *before* anything is split on
    commas, so nothing written in a comment can ever become a principal. Only ``\\n`` (or
    ``\\r\\n``) ends a line. One leading byte-order mark is ignored. Empty or ``None``
    means nobody may read. A value that is not text raises :class:`AccessError`.

    >>> sorted(parse_acl("group:finance  # was: group:hr, everyone\\nuser:carol"))
    ['group:finance', 'user:carol']
    """
    if text is None:
        return frozenset()
    if not isinstance(text, str):
        raise AccessError(f"an ACL must be text, got {type(text).__name__} {text!r:.60}")
    text = text.removeprefix("\ufeff")
    principals: set[str] = set()
    for line in text.split("\n"):
        for part in _COMMENT_RE.sub("", line).split(","):
            if part.strip():
                principals.add(parse_principal(part))
    return frozenset(principals)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user id and the groups the catalog says they belong to.

    >>> p = Principal("alice", frozenset({"finance"}))
    >>> sorted(p.labels())
    ['everyone', 'group:finance', 'user:alice']
    """

    user_id: str
    groups: frozenset[str] = frozenset()

    def labels(self) -> frozenset[str]:
        """The ACL labels this principal matches. ``everyone`` means any known user."""
        return frozenset({f"user:{self.user_id}", EVERYONE} | {f"group:{g}" for g in self.groups})

    def can_read(self, acl: frozenset[str] | set[str] | list[str]) -> bool:
        """True when the ACL names this user, one of their groups, or everyone."""
        return bool(self.labels() & set(acl))


@dataclass(frozen=True)
class Section:
    """A structural unit of a parsed document: a heading's body, a page, a row."""

    text: str
    page: int | None = None
    heading: str | None = None
    start: int = 0  # character offset in the document's full text


@dataclass(frozen=True)
class ParsedDocument:
    """Text with structure, as a parser produces it."""

    sections: list[Section]
    parser: str
    title: str | None = None
    columns: dict[str, list[str]] | None = None  # tables (CSV: "", XLSX: sheet name) -> column headers

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


@dataclass(frozen=True)
class Chunk:
    """A retrievable piece of a document version, with what a citation needs."""

    chunk_id: str
    doc_id: str
    version_id: str
    ordinal: int
    text: str
    page: int | None
    section: str | None
    char_start: int
    char_end: int


@dataclass(frozen=True)
class Hit:
    """A search result the principal is allowed to see."""

    chunk_id: str
    doc_id: str
    document: str
    path: str
    source: str
    page: int | None
    section: str | None
    score: float
    text: str
    char_start: int
    char_end: int
    version_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "document": self.document,
            "doc_id": self.doc_id,
            "path": self.path,
            "source": self.source,
            "page": self.page,
            "section": self.section,
            "score": round(self.score, 6),
            "text": self.text,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "version_id": self.version_id,
        }
