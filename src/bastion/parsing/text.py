"""Plain text with encoding detection (charset-normalizer, MIT); GBK/GB18030 Chinese works."""
from __future__ import annotations

import re

from bastion.core.errors import ParseError
from bastion.core.types import ParsedDocument
from bastion.parsing._sections import build

_CJK = re.compile(r"[\u4e00-\u9fff]")


def _cjk_share(text: str) -> float:
    letters = [c for c in text if not c.isspace()]
    return len(_CJK.findall(text)) / max(1, len(letters))


def decode(content: bytes) -> str:
    """Decode bytes: UTF-8 (with or without BOM) first, then detection, then GB18030."""
    for bom, enc in ((b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if content.startswith(bom):
            return content.decode(enc)
    if b"\x00" in content[:4096]:
        raise ParseError("binary content where text was expected")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    # Chinese legacy encodings are the common case for our users; GB18030 is a superset of
    # GBK/GB2312. Accept it when it decodes strictly and yields mostly Chinese text.
    try:
        gb = content.decode("gb18030")
        if _cjk_share(gb) > 0.2:
            return gb
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(content).best()
    if best is None:
        raise ParseError("cannot detect the text encoding (binary file?)")
    return str(best)


def parse(content: bytes) -> ParsedDocument:
    text = decode(content)
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return build([(p, None, None) for p in paragraphs], "text")
