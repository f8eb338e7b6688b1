"""PDF text layer with page numbers (pypdf: pure Python, BSD licence)."""
from __future__ import annotations

import io
import re

from bastion.core.errors import ParseError
from bastion.core.types import ParsedDocument
from bastion.parsing._sections import build

# PDF layout breaks lines inside Chinese words; a break between two CJK characters is not a space
_CJK_BREAK = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef])\n(?=[\u3000-\u9fff\uff00-\uffef])")


def parse(content: bytes) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

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
