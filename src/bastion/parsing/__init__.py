"""Parsers: bytes of one format in, :class:`ParsedDocument` out.

Each format lives in its own module; :func:`parse` picks one by media type. Every failure
becomes a :class:`ParseError` whose message says what is wrong with the file.
"""
from __future__ import annotations

from collections.abc import Callable

from bastion.core.errors import ParseError
from bastion.core.types import ParsedDocument

Parser = Callable[[bytes], ParsedDocument]


def _registry() -> dict[str, Parser]:
    from bastion.parsing import docx, html, markdown, pdf, tabular, text

    return {
        "pdf": pdf.parse,
        "docx": docx.parse,
        "html": html.parse,
        "htm": html.parse,
        "md": markdown.parse,
        "markdown": markdown.parse,
        "txt": text.parse,
        "text": text.parse,
        "csv": tabular.parse_csv,
        "tsv": tabular.parse_csv,
        "xlsx": tabular.parse_xlsx,
    }


SUPPORTED = frozenset({"pdf", "docx", "html", "htm", "md", "markdown", "txt", "text", "csv", "tsv", "xlsx"})


def parse(content: bytes, media_type: str) -> ParsedDocument:
    """Parse ``content`` of the given media type (a file suffix such as ``"pdf"``)."""
    parser = _registry().get(media_type.lower())
    if parser is None:
        raise ParseError(f"unsupported file type {media_type!r}; supported: {sorted(SUPPORTED)}")
    if not content or not content.strip():
        raise ParseError("empty file")
    try:
        parsed = parser(content)
    except ParseError:
        raise
    except Exception as exc:  # a parser library's own error: the file is corrupt
        raise ParseError(f"cannot parse {media_type} file ({type(exc).__name__}: {exc})") from exc
    if not any(s.text.strip() for s in parsed.sections):
        raise ParseError(f"no extractable text in this {media_type} file")
    return parsed
