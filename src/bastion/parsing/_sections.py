"""Helpers for building sections with correct character offsets."""
from __future__ import annotations

from collections.abc import Sequence

from bastion.core.types import ParsedDocument, Section


def build(parts: Sequence[tuple[str, int | None, str | None]], parser: str, title: str | None = None) -> ParsedDocument:
    """Make sections from (text, page, heading) triples; offsets match ``ParsedDocument.text``."""
    sections: list[Section] = []
    offset = 0
    for text, page, heading in parts:
        text = text.strip()
        if not text:
            continue
        sections.append(Section(text=text, page=page, heading=heading, start=offset))
        offset += len(text) + 2  # ParsedDocument.text joins with "\n\n"
    return ParsedDocument(sections=sections, parser=parser, title=title)
