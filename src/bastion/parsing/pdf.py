"""PDF text layer with page numbers (pypdf: pure Python, BSD licence)."""
from __future__ import annotations

import io
import logging
import re

from bastion.core.errors import ParseError
from bastion.core.types import ParsedDocument
from bastion.parsing._sections import build

# PDF layout breaks lines inside Chinese words; a break between two CJK characters is not a space
_CJK_BREAK = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef])\n(?=[\u3000-\u9fff\uff00-\uffef])")


def _quiet_pypdf() -> None:
    """pypdf logs what it repaired or could not read ("EOF marker not found") as warnings; with no
    logging set up, Python prints them raw on stderr beside the sync's own line for the document.
    A do-nothing handler on pypdf's logger stops that last-resort printing; a process that sets up
    logging (the server) still receives them through the root logger. Idempotent."""
    logger = logging.getLogger("pypdf")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def parse(content: bytes) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    _quiet_pypdf()

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("encrypted PDF (password required)")
        pages = [(_CJK_BREAK.sub("", page.extract_text() or ""), i + 1, None) for i, page in enumerate(reader.pages)]
    except PdfReadError as exc:
        raise ParseError(f"corrupt PDF: {exc}") from exc
    except ParseError:
        raise
    except Exception as exc:
        if "decrypt" in str(exc).lower() or "encrypt" in str(exc).lower():
            raise ParseError(f"encrypted PDF: {exc}") from exc
        raise
    if not any(t.strip() for t, _, _ in pages):
        raise ParseError("PDF has no text layer (scanned image?); OCR is not enabled")
    title = reader.metadata.get("/Title") if reader.metadata else None
    return build(pages, "pypdf", title=str(title) if title else None)
