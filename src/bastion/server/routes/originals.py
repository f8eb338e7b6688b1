"""Original documents: ``GET /api/v1/documents/{doc_id}/original``.

A folder source's document is its file, streamed as it is in the folder now. A document of a
connector that gives originals (:class:`~bastion.connectors.protocol.Original`: an S3 object, a Git
file, a mail or its attachment) is streamed from its source; a web page is its URL beside its text as
indexed, as JSON (never a redirect: the address comes from the crawled site). Any other document (a
SQL row) is its text as indexed, as JSON. The caller must be able to read the document in the
catalog and, for a file, under the folder's ``.bastion-acl`` files as they are now; otherwise, and
for an id that does not exist, the answer is the same 404. A source that cannot give the original
now is a 502 that says why; one over ``ingest.max_file_mb`` is a 413. Files are opened from the
source folder one name at a time without following links, so a link or a ``..`` in the way is
refused. Only types a browser shows without running anything (PDF, plain text, images that are not
SVG) are served ``inline``; everything else (HTML, SVG, Office files) is an ``attachment``.
"""
from __future__ import annotations

import io
import mimetypes
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse

from bastion.catalog.models import DocumentVersionRow
from bastion.connectors.protocol import Original
from bastion.core.errors import ConfigError, IngestError
from bastion.documents import Document
from bastion.server.auth import Ctx, require
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, blocking_audited
from bastion.server.routes.knowledge import NOT_FOUND
from bastion.sources import connector_classes, is_folder, source_kind

router = APIRouter(prefix="/api/v1", tags=["knowledge"])
INLINE_TYPES = {"application/pdf", "text/plain", "text/markdown", "text/csv", "image/png", "image/jpeg", "image/gif",
                "image/webp"}
CHUNK_BYTES = 256 * 1024
# the API's policy, except that the web UI (same origin) may frame an inline original
INLINE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
              "frame-ancestors 'self'; base-uri 'none'; form-action 'self'")
_ASCII_NAME = re.compile(r"[^A-Za-z0-9._ -]")


@dataclass
class _File:
    handle: BinaryIO
    name: str
    size: int
    media: str | None = None  # None: by the name
    changed: bool = False  # the source's copy is not the one indexed


@router.get("/documents/{doc_id}/original", response_class=Response,
            summary="A document's original: a file, object or mail from its source, or a page's URL or a row's text as JSON "
                    "(404 if not readable)",
            responses={200: {"content": {"application/octet-stream": {}, "application/json": {}}}})
async def original(doc_id: Annotated[str, PathParam(max_length=64)],
                   download: Annotated[bool, Query(description="attachment even where inline is safe")] = False,
                   ctx: Ctx = Depends(require("member", "documents.original"))) -> Response:
    found = await blocking_audited(ctx, lambda: _original(ctx, doc_id), target=doc_id,
                                   entry=lambda f: AuditEntry(detail={"bytes": f.size} if isinstance(f, _File)
                                                              else {"chars": len(f["text"])}))
    if isinstance(found, dict):
        if download:
            name = PurePosixPath(found["path"]).name or "document"
            return Response(found["text"], media_type="text/plain; charset=utf-8",
                            headers={"content-disposition": disposition("attachment", f"{name}.txt")})
        return JSONResponse(found)
    media = found.media or mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    inline = media in INLINE_TYPES and not download
    headers = {"content-disposition": disposition("inline" if inline else "attachment", found.name),
               "content-length": str(found.size), "x-content-type-options": "nosniff"}
    if found.changed:
        headers["x-bastion-changed-since-sync"] = "true"
    if inline:  # the web UI may show it in a frame of its own; nobody else may frame it
        headers |= {"x-frame-options": "SAMEORIGIN", "content-security-policy": INLINE_CSP}
    return StreamingResponse(_chunks(found.handle, found.size), media_type=media, headers=headers)


def disposition(kind: str, filename: str) -> str:
    """A ``Content-Disposition`` value naming ``filename`` safely: an ASCII fallback and the UTF-8 name encoded."""
    base = PurePosixPath(filename.replace("\\", "/")).name or "document"
    fallback = _ASCII_NAME.sub("_", base).strip() or "document"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(base, safe='')}"


def _original(ctx: Ctx, doc_id: str) -> _File | dict[str, Any]:
    ws = ctx.server.ws
    doc = ws.documents.readable(ctx.principal, doc_id)
    if doc is None:
        raise Problem(404, "not-found", NOT_FOUND)
    source = ws.sources.get(doc.source)
    if not is_folder(source.kind):
        entry = connector_classes().get(source_kind(source.kind))
        if entry is None or not hasattr(entry.load(), "original"):  # a SQL row: its text is the original
            return _as_indexed(ctx, doc)
        return _from_connector(ctx, doc, lambda: ws.sources.connector(source).original(doc.path))  # type: ignore[attr-defined]  # checked above
    from bastion.connectors.filesystem import FilesystemConnector

    rel = PurePosixPath(doc.path)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") or "\x00" in p for p in rel.parts):
        raise Problem(404, "not-found", NOT_FOUND)
    conn = ws.sources.connector(source)
    assert isinstance(conn, FilesystemConnector)
    acl = conn.file_acl(rel)  # as the .bastion-acl files (or the file system) say now, not at the last sync
    if isinstance(acl, str) or not ctx.principal.can_read(acl):
        raise Problem(404, "not-found", NOT_FOUND)
    try:
        handle = open_beneath(conn.root, rel)
    except OSError:
        raise Problem(404, "not-found", f"the original of document {doc_id!r} is no longer in its source "
                                        "folder") from None
    return _File(handle, rel.name, os.fstat(handle.fileno()).st_size)


def _as_indexed(ctx: Ctx, doc: Document) -> dict[str, Any]:
    return _indexed_text(ctx, doc.id, doc.version_id) | {
        "doc_id": doc.id, "source": doc.source, "path": doc.path, "title": doc.title, "version_id": doc.version_id}


def _from_connector(ctx: Ctx, doc: Document, fetch: Callable[[], Original | None]) -> _File | dict[str, Any]:
    """The original the document's connector gives, within ``ingest.max_file_mb``."""
    def unavailable(exc: Exception) -> Problem:
        return Problem(502, "unavailable", f"the source {doc.source!r} cannot give the original of document "
                                           f"{doc.id!r} now: {exc}")

    try:
        found = fetch()
    except (OSError, ConfigError, IngestError) as exc:
        raise unavailable(exc) from None
    if found is None:
        raise Problem(404, "not-found", f"the original of document {doc.id!r} is no longer in its source "
                                        f"{doc.source!r}")
    if found.url is not None or found.open is None:  # a page: the reader's browser opens it, not this server
        return _as_indexed(ctx, doc) | {"url": found.url}
    limit = int(ctx.server.ws.config.ingest.max_file_mb * 2**20)

    def too_large(size: int) -> Problem:
        return Problem(413, "too-large", f"the original of document {doc.id!r} is {size / 2**20:.1f} MiB, over the "
                                         f"{limit / 2**20:g} MiB limit (ingest.max_file_mb)")

    if found.size is not None and found.size > limit:
        raise too_large(found.size)
    try:
        data = found.open()
    except (OSError, ConfigError, IngestError) as exc:
        raise unavailable(exc) from None
    handle: BinaryIO
    if isinstance(data, bytes):
        if len(data) > limit:
            raise too_large(len(data))
        handle, size = io.BytesIO(data), len(data)
    else:
        handle, size = data, found.size or 0
    return _File(handle, found.name, size, found.media_type, _changed(ctx, doc, found))


def _changed(ctx: Ctx, doc: Document, found: Original) -> bool:
    """Whether the source's copy differs from the version indexed (when the connector can tell)."""
    if found.mtime is None or doc.version_id is None:
        return False
    with ctx.server.ws.catalog.session() as s:
        version = s.get(DocumentVersionRow, doc.version_id)
    return version is not None and version.mtime is not None and abs(version.mtime - found.mtime) > 1e-6


def open_beneath(root: Path, rel: PurePosixPath) -> BinaryIO:
    """The regular file ``rel`` under ``root``, opened one name at a time without following a link."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in rel.parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        file_fd = os.open(rel.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    handle = os.fdopen(file_fd, "rb")
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):  # a pipe or a device: never read
        handle.close()
        raise OSError(f"{str(rel)!r} is not a regular file")
    os.set_blocking(file_fd, True)
    return handle


def _chunks(handle: BinaryIO, size: int) -> Iterator[bytes]:
    """The file's first ``size`` bytes (its length when opened: the declared ``Content-Length``)."""
    with handle:
        while size > 0 and (block := handle.read(min(CHUNK_BYTES, size))):
            size -= len(block)
            yield block


def _indexed_text(ctx: Ctx, doc_id: str, version_id: str | None) -> dict[str, Any]:
    """The text of the document's current version as indexed, put together from its passages."""
    rows = [r for r in ctx.server.ws.store.rows_for([doc_id])
            if r.get("version_id") == version_id and ctx.principal.can_read(r.get("acl") or [])]
    rows.sort(key=lambda r: (r.get("char_start") or 0, r["ordinal"]))
    parts: list[str] = []
    end = 0
    for r in rows:
        start, text = r.get("char_start"), r["text"]
        if start is not None and start < end:  # overlapping passages: only what is new
            parts.append(text[end - start:])
        else:  # a gap (or no offsets) is a line break
            parts.append(("\n" if parts and (start is None or start > end) else "") + text)
        end = max(end, (start or 0) + len(text))
    return {"media_type": "text/plain", "text": "".join(parts)}
