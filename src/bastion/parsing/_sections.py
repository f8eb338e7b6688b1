"""Helpers for building sections with correct character offsets."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from bastion.core.types import ParsedDocument, Section


def record(pairs: Iterable[tuple[str, str]]) -> str:
    """One table row as text: ``category = taxi | limit_eur = 60``. No ``:`` or ``;`` between fields,
    since those end a sentence (bastion.chunking.split_sentences): the row stays one sentence, so
    an answer's evidence and quotes see the whole row, not ``category: taxi;`` without its limit.

    >>> record([("category", "taxi"), ("limit_eur", "60")])
    'category = taxi | limit_eur = 60'
    """
    return " | ".join(f"{header} = {value}" for header, value in pairs)


def _heading_only(text: str, heading: str | None) -> bool:
    """A part that is nothing but its heading's line (``# Handbook`` right above ``## Hours``)."""
    return heading is not None and text.strip("#").strip() == heading


def build(parts: Sequence[tuple[str, int | None, str | None]], parser: str, title: str | None = None) -> ParsedDocument:
    """Make sections from (text, page, heading) triples; offsets match ``ParsedDocument.text``.

    A part holding only its heading joins the next part of the same page (under that part's
    heading), so a title above a subheading never becomes a section of its own.

    >>> [s.heading for s in build([("# Handbook", None, "Handbook"), ("## Hours\\nNine to five.", None, "Hours")], "md").sections]
    ['Hours']
    """
    sections: list[Section] = []
    offset = 0
    carried = ""
    stripped = [(text.strip(), page, heading) for text, page, heading in parts if text.strip()]
    for i, (text, page, heading) in enumerate(stripped):
        following = stripped[i + 1] if i + 1 < len(stripped) else None
        if following is not None and following[1] == page and _heading_only(text, heading):
            carried += text + "\n\n"
            continue
        text, carried = carried + text, ""
        sections.append(Section(text=text, page=page, heading=heading, start=offset))
        offset += len(text) + 2  # ParsedDocument.text joins with "\n\n"
    return ParsedDocument(sections=sections, parser=parser, title=title)
