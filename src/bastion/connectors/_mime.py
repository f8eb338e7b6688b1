"""Reading an IMAP BODYSTRUCTURE: which parts are a message's text and which are attachments.

The text of a message is its inline ``text/plain`` parts (``text/html`` where a
``multipart/alternative`` offers no plain text); an attachment is a leaf part with a file name
or an ``attachment`` disposition that is not such a text part. Section numbers follow IMAP
(RFC 3501): ``1``, ``2.1``...; a message of one part has the single section ``1``.
"""
from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import decode_header
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote_to_bytes

from bastion.parsing import SUPPORTED

_CONTINUATION = re.compile(r"^(.+?)\*(\d+)(\*?)$")  # filename*0*, filename*1 (RFC 2231 continuations)
# MIME types whose parser Bastion has, for attachments whose file name says nothing
_BY_MIME = {
    "application/pdf": "pdf", "text/plain": "txt", "text/html": "html", "text/markdown": "md", "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}


@dataclass(frozen=True)
class Part:
    """One leaf of a message's MIME tree, as its BODYSTRUCTURE describes it."""

    section: str
    mime: str  # "text/plain"
    charset: str
    encoding: str  # "base64", "quoted-printable", "7bit", ...
    size: int  # encoded size on the server
    filename: str | None
    attachment: bool  # Content-Disposition: attachment

    @property
    def media_type(self) -> str | None:
        """The parser's media type (a file suffix such as ``"pdf"``), or None if no parser reads it."""
        if self.filename:
            suffix = PurePosixPath(self.filename).suffix.lower().lstrip(".")
            if suffix in SUPPORTED:
                return suffix
        return _BY_MIME.get(self.mime)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value)


def _rfc2231(value: str, charset: str | None) -> tuple[str, str | None]:
    """One RFC 2231 encoded value (``utf-8'en'r%C3%A9sum%C3%A9.pdf``, or a later continuation without
    the charset) -> (its text, the charset for the continuations that follow)."""
    if charset is None:
        charset, _, rest = value.partition("'")
        _, _, value = rest.partition("'")
    raw = unquote_to_bytes(value)
    try:
        return raw.decode(charset or "utf-8", errors="replace"), charset
    except LookupError:  # an unknown charset name
        return raw.decode("utf-8", errors="replace"), charset


def _rfc2047(value: str) -> str:
    """``=?utf-8?q?r=C3=A9sum=C3=A9?=.pdf`` -> ``résumé.pdf`` (mail clients put such words in names)."""
    try:
        chunks = decode_header(value)
    except ValueError:
        return value  # a name that cannot be decoded is still a name
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            out.append(chunk.decode(charset or "ascii", errors="replace"))
        except LookupError:
            out.append(chunk.decode("utf-8", errors="replace"))
    return "".join(out)


def _params(raw: Any) -> dict[str, str]:
    """``(b'charset', b'utf-8', b'name', b'x.pdf')`` -> ``{"charset": "utf-8", "name": "x.pdf"}``, with
    RFC 2231 values (``filename*=utf-8''...``, continued as ``filename*0*``, ``filename*1*``...) and
    RFC 2047 words (``=?utf-8?q?...?=``) decoded."""
    out: dict[str, str] = {}
    pieces: dict[str, list[tuple[int, bool, str]]] = {}
    if not isinstance(raw, (tuple, list)):
        return out
    for i in range(0, len(raw) - 1, 2):
        key, value = _text(raw[i]).lower(), _text(raw[i + 1])
        continued = _CONTINUATION.match(key)
        if continued:
            name, n, encoded = continued.groups()
            pieces.setdefault(name, []).append((int(n), bool(encoded), value))
        elif key.endswith("*"):
            out[key[:-1]] = _rfc2231(value, None)[0]
        elif "=?" in value:
            out[key] = _rfc2047(value)
        else:
            out[key] = value
    for name, parts in pieces.items():
        charset: str | None = None
        texts = []
        for n, encoded, value in sorted(parts):
            if encoded:
                text, charset = _rfc2231(value, charset if n else None)
                texts.append(text)
            else:
                texts.append(value)
        out.setdefault(name, "".join(texts))
    return out


def _leaf(node: Sequence[Any], section: str) -> Part:
    maintype, subtype = _text(node[0]).lower(), _text(node[1]).lower()
    params = _params(node[2])
    # the disposition follows the fields each kind of part adds (RFC 3501 body-type-text/msg/basic)
    extra = 2 if maintype == "text" else 4 if (maintype, subtype) == ("message", "rfc822") else 1
    disposition = node[7 + extra] if len(node) > 7 + extra else None
    kind, disp_params = "", {}
    if isinstance(disposition, (tuple, list)) and disposition:
        kind = _text(disposition[0]).lower()
        disp_params = _params(disposition[1] if len(disposition) > 1 else None)
    size = node[6] if isinstance(node[6], int) else 0
    return Part(section=section, mime=f"{maintype}/{subtype}", charset=params.get("charset", "utf-8"),
                encoding=_text(node[5]).lower() or "7bit", size=size,
                filename=disp_params.get("filename") or params.get("name") or None, attachment=kind == "attachment")


def _is_multipart(node: Any) -> bool:
    return bool(node) and isinstance(node[0], list)


def split_parts(structure: Any) -> tuple[list[Part], list[Part]]:
    """A BODYSTRUCTURE (as imapclient returns it) -> (the message's text parts, its attachments)."""
    body: list[Part] = []
    attachments: list[Part] = []

    def walk(node: Any, section: str) -> None:
        if _is_multipart(node):
            children = [(child, f"{section}.{n}" if section else str(n)) for n, child in enumerate(node[0], 1)]
            if _text(node[1]).lower() == "alternative":
                children = [_preferred(children)] if children else []
            for child, sec in children:
                walk(child, sec)
            return
        part = _leaf(node, section or "1")
        if part.mime in ("text/plain", "text/html") and not part.attachment and not part.filename:
            body.append(part)
        elif part.attachment or part.filename:
            attachments.append(part)

    walk(structure, "")
    return body, attachments


def _preferred(children: list[tuple[Any, str]]) -> tuple[Any, str]:
    """The alternative to read: plain text, else HTML, else the first nested multipart, else the first."""
    for wanted in ("text/plain", "text/html"):
        for child, sec in children:
            if not _is_multipart(child) and f"{_text(child[0])}/{_text(child[1])}".lower() == wanted:
                return child, sec
    return next(((c, s) for c, s in children if _is_multipart(c)), children[0])


def decode(data: bytes, encoding: str) -> bytes:
    """A part's bytes as fetched -> its content (base64 and quoted-printable undone).

    Raises ``ValueError`` when base64 is corrupt."""
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(data.split()), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64 content ({exc})") from exc
    if encoding == "quoted-printable":
        return quopri.decodestring(data)
    return data


def as_text(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name: read it as UTF-8, replacing what does not fit
        return data.decode("utf-8", errors="replace")
