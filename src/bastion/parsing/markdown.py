"""Markdown split at ATX headings (no dependency: the structure is all we need)."""
from __future__ import annotations

import re

from bastion.core.types import ParsedDocument
from bastion.parsing._sections import build
from bastion.parsing.text import decode

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def parse(content: bytes) -> ParsedDocument:
    text = decode(content)
    parts: list[tuple[str, int | None, str | None]] = []
    heading: str | None = None
    title: str | None = None
    buf: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line)
        if match:
            if "\n".join(buf).strip():
                parts.append(("\n".join(buf), None, heading))
            heading = match.group(2).strip()
            title = title or heading
            buf = [line]
        else:
            buf.append(line)
    if "\n".join(buf).strip():
        parts.append(("\n".join(buf), None, heading))
    return build(parts, "markdown", title=title)
