"""Word documents: paragraphs grouped under their headings, then tables (python-docx, MIT)."""
from __future__ import annotations

import io

from bastion.core.types import ParsedDocument
from bastion.parsing._sections import build, record


def parse(content: bytes) -> ParsedDocument:
    import docx

    document = docx.Document(io.BytesIO(content))
    parts: list[tuple[str, int | None, str | None]] = []
    heading: str | None = None
    buf: list[str] = []
    title = document.core_properties.title or None
    for para in document.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        text = para.text.strip()
        if not text:
            continue
        if style.startswith("Heading") or style == "Title":
            if buf:
                parts.append(("\n".join(buf), None, heading))
            heading, buf = text, [text]
            title = title or text
        else:
            buf.append(text)
    if buf:
        parts.append(("\n".join(buf), None, heading))
    for table in document.tables:
        rows = [[c.text.strip() for c in row.cells] for row in table.rows]
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        lines = [record((h, v) for h, v in zip(header, r) if v) for r in body] or [" | ".join(header)]
        parts.append(("\n".join(lines), None, heading))
    return build(parts, "python-docx", title=title)
