"""HTML main text without navigation (selectolax/Lexbor: fast, MIT)."""
from __future__ import annotations

from bastion.core.errors import ParseError
from bastion.core.types import ParsedDocument
from bastion.parsing._sections import build
from bastion.parsing.text import decode

_BOILERPLATE = "script, style, noscript, nav, header, footer, aside, form, template, svg, [role=navigation], [aria-hidden=true]"
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCKS = _HEADINGS | {"p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "figcaption", "caption"}


def parse(content: bytes) -> ParsedDocument:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(decode(content))
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node else None
    for node in tree.css(_BOILERPLATE):
        node.decompose()
    root = tree.css_first("main") or tree.css_first("article") or tree.body or tree.root
    if root is None:
        raise ParseError("HTML document has no content")
    parts: list[tuple[str, int | None, str | None]] = []
    heading: str | None = None
    buf: list[str] = []
    for node in root.traverse(include_text=False):
        if node.tag not in _BLOCKS:
            continue
        if node.tag != "li" and node.parent is not None and node.parent.tag in {"li"}:
            continue
        text = " ".join(node.text(separator=" ").split())
        if not text:
            continue
        if node.tag in _HEADINGS:
            if buf:
                parts.append(("\n".join(buf), None, heading))
            heading, buf = text, [text]
        else:
            buf.append(text)
    if buf:
        parts.append(("\n".join(buf), None, heading))
    if not parts:  # no block markup at all: take the visible text
        parts.append((root.text(separator="\n"), None, None))
    return build(parts, "selectolax", title=title)
