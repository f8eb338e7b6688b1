"""Sources (list with each one's last sync and what failed, add, change, remove), uploads into folder
sources, and background sync jobs."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi import Path as PathParam
from pydantic import Field

from bastion.catalog.models import utc_iso
from bastion.core.errors import ConfigError, WorkspaceError
from bastion.core.types import parse_acl
from bastion.server.auth import Ctx, require
from bastion.server.jobs import member_view
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, JsonObject, Name, StrictBody, blocking_audited
from bastion.sources import is_folder, source_kind

router = APIRouter(prefix="/api/v1")
_SECRET_IN_URL = re.compile(r"(://[^:/@]+:)[^@]*@")
_UPLOAD_NAME = re.compile(r"^[^\x00-\x1f\\:*?\"<>|]{1,255}$")


class _Source(Protocol):
    """A source as the source registry returns it."""

    name: str
    kind: str
    config: dict[str, Any]
    created_at: datetime


def _masked(url: str | None) -> str | None:
    return _SECRET_IN_URL.sub(r"\1***@", url) if url else url


def _source_dict(source: _Source) -> JsonObject:
    cfg = dict(source.config)
    if cfg.get("url"):
        cfg["url"] = _masked(cfg["url"])
    return {"name": source.name, "kind": source_kind(source.kind), "config": cfg,
            "created_at": utc_iso(source.created_at)}


@router.get("/sources", tags=["admin"], response_model=None,
            summary="Sources (database passwords masked), each with its last sync, its errors and skipped items, "
                    "and the documents that failed")
async def sources(ctx: Ctx = Depends(require("admin", "sources.list"))) -> JsonObject:
    from bastion.source_admin import sync_health

    def read() -> JsonObject:
        rows, health = ctx.server.ws.sources.list(), sync_health(ctx.server.ws.catalog)
        return {"sources": [_source_dict(r) | health.get(r.name, {}) for r in rows]}

    found = await ctx.server.blocking(read)
    await ctx.audit_async()
    return found


class SourceBody(StrictBody):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    kind: Literal["folder", "filesystem", "sql"]  # "filesystem": the folder kind's former name, still accepted
    path: Annotated[str, Field(max_length=4096)] | None = None
    url: Annotated[str, Field(max_length=4096)] | None = None
    acl: Annotated[str, Field(max_length=4000)] = ""
    include: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=100)
    exclude: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=100)
    uploaders: Annotated[str, Field(max_length=4000)] = ""
    permissions: Literal["acl-files", "posix", "both"] = "acl-files"  # folders: where each file's ACL comes from
    posix_other: Annotated[str, Field(max_length=200)] | None = None  # folders: what the "other" read bit grants
    table: Annotated[str, Field(max_length=200)] | None = None
    query: Annotated[str, Field(max_length=20000)] | None = None
    id_column: Annotated[str, Field(max_length=200)] = "id"
    text_template: Annotated[str, Field(max_length=4000)] | None = None
    updated_at_column: Annotated[str, Field(max_length=200)] | None = None
    acl_column: Annotated[str, Field(max_length=200)] | None = None
    title_column: Annotated[str, Field(max_length=200)] | None = None


@router.post("/sources", tags=["admin"], status_code=201, response_model=None, summary="Add a folder or SQL source")
async def add_source(body: SourceBody, ctx: Ctx = Depends(require("admin", "source.add"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: _source_dict(_add_source(ctx, body)), target=body.name,
                                  entry=AuditEntry(detail={"kind": body.kind, "acl": body.acl}))


def _add_source(ctx: Ctx, body: SourceBody) -> _Source:
    reg = ctx.server.ws.sources
    if body.kind in ("folder", "filesystem"):
        if not body.path:
            raise ConfigError("a folder source needs 'path'")
        return reg.add_folder(body.name, body.path, acl=body.acl, include=body.include, exclude=body.exclude,
                              uploaders=body.uploaders, permissions=body.permissions, posix_other=body.posix_other)
    if not (body.url and body.text_template):
        raise ConfigError("a SQL source needs 'url' and 'text_template'")
    return reg.add_sql(body.name, body.url, id_column=body.id_column, template=body.text_template, table=body.table,
                       query=body.query, updated_at_column=body.updated_at_column, acl_column=body.acl_column,
                       title_column=body.title_column, acl=body.acl)


class SourcePatch(StrictBody):
    """Settings to change; those left out stay. Folder sources: ``path``, ``acl``, ``include``, ``exclude``,
    ``uploaders``, ``permissions``, ``posix_other``; SQL sources: ``url``, ``acl``, ``table``, ``query``, ``id_column``, ``text_template``,
    ``updated_at_column``, ``acl_column``, ``title_column`` (null clears the optional ones)."""

    path: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    acl: Annotated[str, Field(max_length=4000)] | None = None
    include: list[Annotated[str, Field(max_length=500)]] | None = Field(None, max_length=100)
    exclude: list[Annotated[str, Field(max_length=500)]] | None = Field(None, max_length=100)
    uploaders: Annotated[str, Field(max_length=4000)] | None = None
    permissions: Literal["acl-files", "posix", "both"] | None = None
    posix_other: Annotated[str, Field(max_length=200)] | None = None
    url: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    table: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    query: Annotated[str, Field(min_length=1, max_length=20000)] | None = None
    id_column: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    text_template: Annotated[str, Field(min_length=1, max_length=4000)] | None = None
    updated_at_column: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    acl_column: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    title_column: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    sync: bool = True


@router.patch("/sources/{name}", tags=["admin"], response_model=None,
              summary="Change a source's settings; a sync applies them (queued unless sync=false)")
async def edit_source(name: Annotated[str, PathParam(max_length=100)], body: SourcePatch,
                      ctx: Ctx = Depends(require("admin", "source.change"))) -> JsonObject:
    changes = {k: getattr(body, k) for k in body.model_fields_set - {"sync"}}
    return await blocking_audited(ctx, lambda: _edit_source(ctx, name, changes, body.sync), target=name,
                                  entry=lambda out: AuditEntry(detail={"changed": sorted(changes),
                                                                       "acl": changes.get("acl"),
                                                                       "job": (out["job"] or {}).get("id")}))


def _edit_source(ctx: Ctx, name: str, changes: dict[str, Any], sync: bool) -> JsonObject:
    from bastion.source_admin import edit_source

    ws = ctx.server.ws
    row = _existing(ctx, name)
    if not changes:
        raise ConfigError("nothing to change: name at least one setting")
    row = edit_source(ws.sources, name, changes, masked_url=_masked(row.config.get("url")))
    job = ctx.server.jobs.start(name, ctx.identity.user_id) if sync else None
    return _source_dict(row) | {"job": job}


@router.delete("/sources/{name}", tags=["admin"], response_model=None,
               summary="Remove a source: its documents leave the index and the catalog (409 while a sync runs)")
async def remove_source(name: Annotated[str, PathParam(max_length=100)],
                        ctx: Ctx = Depends(require("admin", "source.remove"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: _remove_source(ctx, name), target=name,
                                  entry=lambda out: AuditEntry(detail={k: out[k] for k in ("kind", "documents")}))


def _remove_source(ctx: Ctx, name: str) -> JsonObject:
    ws = ctx.server.ws
    _existing(ctx, name)
    try:
        return ws.remove_source(name, by=ctx.identity.user_id)
    except WorkspaceError as exc:
        raise Problem(409, "conflict", f"source {name!r} cannot be removed now: {exc}") from None


def _existing(ctx: Ctx, name: str) -> _Source:
    try:
        return ctx.server.ws.sources.get(name)
    except ConfigError:
        raise Problem(404, "not-found", f"unknown source {name!r}") from None


def _safe_relative(name: str) -> PurePosixPath:
    """A relative path inside the source folder; anything that could leave it is refused."""
    p = PurePosixPath(name.replace("\\", "/"))
    if (not name or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or len(p.parts) > 10
            or not all(_UPLOAD_NAME.match(part) for part in p.parts) or any(part.startswith(".") for part in p.parts)):
        raise ConfigError(f"invalid file path {name!r}: use a relative path like 'reports/q3.pdf' "
                          "without '..', hidden names or control characters")
    return p


@router.post("/sources/{name}/documents", tags=["knowledge"], status_code=202, response_model=None,
             summary="Upload a file into a folder source and sync it (editors allowed on that source; admins)")
async def upload(name: Annotated[str, PathParam(max_length=100)], file: UploadFile = File(...),
                 path: Annotated[str | None, Form(max_length=1000)] = None,
                 ctx: Ctx = Depends(require("editor", "document.upload"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: _upload(ctx, name, file, path), target=f"{name}/{path or file.filename}",
                                  entry=lambda r: AuditEntry(detail={"bytes": r["bytes"], "job": r["job"]["id"]}))


def _upload(ctx: Ctx, name: str, file: UploadFile, path: str | None) -> JsonObject:
    """Write the file where the caller may read, then queue a sync of the source."""
    from bastion.connectors.filesystem import FilesystemConnector, write_beneath

    ws = ctx.server.ws
    try:
        row = ws.sources.get(name)
    except ConfigError:
        raise Problem(404, "not-found", f"no source {name!r} you may upload to") from None
    allowed = parse_acl(row.config.get("uploaders") or "")
    if not is_folder(row.kind) or not (ctx.identity.at_least("admin") or ctx.principal.can_read(allowed)):
        raise Problem(404, "not-found", f"no source {name!r} you may upload to")
    rel = _safe_relative(path or file.filename or "")
    conn = ws.sources.connector(row)
    assert isinstance(conn, FilesystemConnector)
    acl = conn.folder_acl(rel.parent)
    if isinstance(acl, str) or not ctx.principal.can_read(acl):
        # only where the uploader may read: never plant or replace text in a folder they cannot see
        raise Problem(403, "forbidden", f"you may not upload into {str(rel.parent)!r}: "
                      "upload only into folders whose documents you can read")
    try:
        size = write_beneath(conn.root, rel.as_posix(), file.file)
    except OSError as exc:
        raise ConfigError(f"cannot upload to {str(rel)!r}: {exc.strerror or exc}") from None
    job = ctx.server.jobs.start(name, ctx.identity.user_id, upload_path=rel.as_posix())
    return {"source": name, "path": str(rel), "bytes": size,
            "job": job if ctx.identity.at_least("admin") else member_view(job)}


class SyncBody(StrictBody):
    source: Name | None = None


@router.post("/sync", tags=["admin"], status_code=202, response_model=None,
             summary="Start a background sync of one or all sources")
async def start_sync(body: SyncBody, ctx: Ctx = Depends(require("admin", "sync.start"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: ctx.server.jobs.start(body.source, ctx.identity.user_id),
                                  target=body.source or "*", entry=lambda job: AuditEntry(detail={"job": job["id"]}))


@router.get("/sync/jobs", tags=["admin"], response_model=None, summary="Recent sync jobs")
async def list_jobs(ctx: Ctx = Depends(require("admin", "jobs.list")),
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> JsonObject:
    jobs = await ctx.server.blocking(ctx.server.jobs.list, limit)
    await ctx.audit_async()
    return {"jobs": jobs}


@router.get("/sync/jobs/{job_id}", tags=["knowledge"], response_model=None,
            summary="A sync job's status and progress (yours; admins: any)")
async def get_job(job_id: Annotated[str, PathParam(max_length=64)],
                  ctx: Ctx = Depends(require("member", "jobs.get"))) -> JsonObject:
    job = await ctx.server.blocking(ctx.server.jobs.get, job_id)
    ctx.target = job_id
    if job is None or (job["started_by"] != ctx.identity.user_id and not ctx.identity.at_least("admin")):
        raise Problem(404, "not-found", "no such job")
    await ctx.audit_async()
    return job if ctx.identity.at_least("admin") else member_view(job)
