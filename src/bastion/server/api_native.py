"""The native API under ``/api/v1``: search, ask, documents, feedback, and administration."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from bastion.accounts import parse_duration
from bastion.audit import AuditQuery
from bastion.catalog.models import DocumentRow, DocumentVersionRow, FeedbackRow, LineageRow, SourceRow
from bastion.core.errors import AccessError, BastionError, ConfigError
from bastion.core.types import parse_acl
from bastion.server.auth import SESSION_COOKIE, Ctx, client_ip, request_scheme, require
from bastion.server.jobs import member_view
from bastion.server.problems import Problem

router = APIRouter(prefix="/api/v1")
NOT_FOUND = "no such document, or you may not read it"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


Text = Annotated[str, Field(min_length=1, max_length=4000)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


# -- sessions (web UI) --------------------------------------------------------------------------
class LoginBody(_Body):
    username: Name
    password: Annotated[str, Field(min_length=1, max_length=1024)]


@router.post("/auth/login", tags=["auth"], summary="Log in with a password; sets the session cookie")
async def login(body: LoginBody, request: Request, response: Response):
    server = request.app.state.server
    trusted = server.ws.config.server.trusted_proxies
    ip = client_ip(request, trusted)
    result = await server.blocking(server.accounts.verify_password, body.username, body.password, ip)

    def record(outcome: str, reason: str | None = None):
        server.audit.record(actor=body.username if result.user_id else None, via="password", action="login",
                            outcome=outcome, ip=ip, request_id=request.state.request_id,
                            detail={"username": body.username[:200]} | ({"reason": reason} if reason else {}))

    if not result.ok:
        await server.blocking(record, "denied", result.reason)
        if result.reason == "locked":
            raise Problem(429, "locked", f"too many failed logins; try again in {result.retry_after_s} s",
                          headers={"Retry-After": str(result.retry_after_s)})
        raise Problem(401, "unauthenticated", "wrong username or password")
    hours = server.ws.config.auth.session_hours
    token, csrf = await server.blocking(server.accounts.create_session, result.user_id, timedelta(hours=hours), ip)
    await server.blocking(record, "ok")
    secure = server.ws.config.auth.cookie_secure
    if secure is None:
        secure = request_scheme(request, trusted) == "https"
    response.set_cookie(SESSION_COOKIE, token, max_age=int(hours * 3600), httponly=True, secure=secure,
                        samesite="strict", path="/")
    principal = await server.blocking(server.ws.principal, result.user_id)
    return {"user": result.user_id, "role": await server.blocking(server.accounts.role, result.user_id),
            "groups": sorted(principal.groups), "csrf_token": csrf}


@router.post("/auth/logout", tags=["auth"], summary="End the web session")
async def logout(response: Response, ctx: Ctx = Depends(require("member", "logout"))):
    server = ctx.server
    if ctx.identity.session_token:
        await server.blocking(server.accounts.end_session, ctx.identity.session_token)
    response.delete_cookie(SESSION_COOKIE, path="/")
    await ctx.audit_async()
    return {"ok": True}


@router.post("/auth/logout-all", tags=["auth"], summary="Log out everywhere: end all of the caller's web sessions")
async def logout_all(response: Response, ctx: Ctx = Depends(require("member", "logout.all"))):
    server = ctx.server

    def run():
        ended = server.accounts.end_sessions(ctx.identity.user_id)
        ctx.audit(target=ctx.identity.user_id, detail={"sessions_ended": ended})
        return ended

    ended = await server.blocking(run)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"user": ctx.identity.user_id, "sessions_ended": ended}


@router.get("/auth/me", tags=["auth"], summary="Who the credential belongs to")
async def me(ctx: Ctx = Depends(require("member", "me"))):
    i = ctx.identity
    await ctx.audit_async()
    return {"user": i.user_id, "role": i.role, "groups": sorted(i.principal.groups), "via": i.via,
            "csrf_token": i.csrf}


# -- knowledge reads ------------------------------------------------------------------------------
class SearchBody(_Body):
    query: Text
    k: int = Field(10, ge=1, le=100)
    mode: Literal["hybrid", "dense", "bm25"] | None = None
    source: Name | None = None


@router.post("/search", tags=["knowledge"], summary="Hybrid search over what the caller may read")
async def search(body: SearchBody, ctx: Ctx = Depends(require("member", "search"))):
    ws = ctx.server.ws

    def run():
        hits = ws.search(body.query, ctx.principal, body.k, source=body.source, mode=body.mode)
        ctx.audit(target=body.query, detail={"k": body.k, "hits": [h.chunk_id for h in hits]})
        return hits

    hits = await ctx.server.blocking(run)
    return {"hits": [h.to_dict() for h in hits]}


class Turn(_Body):
    role: Literal["user", "assistant"]
    content: Annotated[str, Field(max_length=20000)]


class AskBody(_Body):
    question: Text
    mode: Literal["answer", "extract"] | None = None
    assistant: Name = "bastion"
    history: list[Turn] = Field(default_factory=list, max_length=50)
    stream: bool = False


def run_ask(ctx: Ctx, question: str, *, assistant: str, mode: str | None, history: list[dict], on_token=None):
    """Answer as the caller with an assistant (``history``: role/content dicts); audits the read with its
    lineage id (blocking)."""
    from bastion.generation.protocol import ChatMessage

    ws = ctx.server.ws
    answerer, sources = ws.answerer_for(assistant)
    turns = [ChatMessage(t["role"], t["content"]) for t in history or []]
    ans = answerer.ask(question, ctx.principal, mode=mode, history=turns, source=sources, on_token=on_token)
    ctx.server.m_answers.labels(ans.decision).inc()
    ctx.audit(target=question, lineage_id=ans.lineage_id,
              detail={"assistant": assistant, "decision": ans.decision,
                      "chunks": [c.chunk_id for c in ans.citations]})
    return ans


@router.post("/ask", tags=["knowledge"], summary="A cited answer from what the caller may read (SSE with stream=true)")
async def ask(body: AskBody, ctx: Ctx = Depends(require("member", "ask"))):
    server = ctx.server
    if not body.stream:
        ans = await server.blocking(run_ask, ctx, body.question, assistant=body.assistant, mode=body.mode,
                                    history=[t.model_dump() for t in body.history])
        return ans.to_dict()
    return StreamingResponse(_ask_events(ctx, body), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _ask_events(ctx: Ctx, body: AskBody):
    """``draft`` events carry the model's tokens as they come (not yet checked); ``answer`` carries the
    checked answer, which replaces the draft; ``error`` a problem document."""
    send, receive = anyio.create_memory_object_stream(1000)
    result: dict = {}

    def on_token(text: str) -> None:
        try:
            anyio.from_thread.run_sync(send.send_nowait, ("draft", {"text": text}))
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async def produce():
        from bastion.server.problems import _from_bastion_error, problem_body

        try:
            ans = await ctx.server.blocking(run_ask, ctx, body.question, assistant=body.assistant, mode=body.mode,
                                            history=[t.model_dump() for t in body.history], on_token=on_token)
            result["answer"] = ans
            await send.send(("answer", ans.to_dict()))
        except Problem as p:
            await _stream_failed(ctx, p.status)
            await send.send(("error", problem_body(p.status, p.kind, p.detail)))
        except BastionError as exc:
            p = _from_bastion_error(exc)
            await _stream_failed(ctx, p.status)
            await send.send(("error", problem_body(p.status, p.kind, p.detail)))
        except Exception:
            import logging

            logging.getLogger("bastion.server").exception("streamed answer failed")
            await _stream_failed(ctx, 500)
            await send.send(("error", problem_body(500, "internal", "internal error; the server log has the details")))
        finally:
            await send.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        async with receive:
            async for event, data in receive:
                yield sse(event, data)


async def _stream_failed(ctx: Ctx, status: int) -> None:
    """A streamed answer that failed after its 200 went out still leaves its audit entry."""
    from bastion.server.problems import audit_failure

    await audit_failure(ctx.request, status)


def _readable_document(ctx: Ctx, doc_id: str) -> tuple[DocumentRow, SourceRow]:
    ws = ctx.server.ws
    with ws.catalog.session() as s:
        doc = s.get(DocumentRow, doc_id)
        if doc is None or doc.status != "active" or not ctx.principal.can_read(doc.acl or []):
            raise Problem(404, "not-found", NOT_FOUND)
        return doc, s.get(SourceRow, doc.source_id)


def _doc_summary(doc: DocumentRow, source: str) -> dict:
    return {"id": doc.id, "title": doc.title, "path": doc.key, "source": source, "status": doc.status,
            "version_id": doc.current_version_id, "updated_at": doc.updated_at.isoformat() + "Z"}


@router.get("/documents", tags=["knowledge"], summary="Documents the caller may read")
async def documents(ctx: Ctx = Depends(require("member", "documents.list")),
                    source: Annotated[str | None, Query(max_length=200)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0):
    ws = ctx.server.ws

    def run():
        out, skipped = [], 0
        with ws.catalog.session() as s:
            names = dict(s.execute(select(SourceRow.id, SourceRow.name)).all())
            q = select(DocumentRow).where(DocumentRow.status == "active").order_by(DocumentRow.key)
            if source:
                q = q.where(DocumentRow.source_id.in_([i for i, n in names.items() if n == source]))
            for doc in s.scalars(q).yield_per(1000):
                if not ctx.principal.can_read(doc.acl or []):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(_doc_summary(doc, names.get(doc.source_id, "?")))
                if len(out) >= limit:
                    break
        ctx.audit(target=source, detail={"returned": len(out)})
        return out

    return {"documents": await ctx.server.blocking(run), "offset": offset, "limit": limit}


@router.get("/documents/{doc_id}", tags=["knowledge"], summary="One document and its passages (404 if not readable)")
async def document(doc_id: Annotated[str, PathParam(max_length=64)], ctx: Ctx = Depends(require("member", "documents.get"))):
    ws = ctx.server.ws

    def run():
        ctx.target = doc_id
        doc, src = _readable_document(ctx, doc_id)
        with ws.catalog.session() as s:
            version = s.get(DocumentVersionRow, doc.current_version_id) if doc.current_version_id else None
        rows = [r for r in ws.store.rows_for([doc.id]) if ctx.principal.can_read(r.get("acl") or [])]
        rows.sort(key=lambda r: r["ordinal"])
        ctx.audit(detail={"chunks": len(rows)})
        return _doc_summary(doc, src.name) | {
            "version": {"id": version.id, "content_hash": version.content_hash, "size": version.size,
                        "parser": version.parser} if version else None,
            "passages": [_passage(r) for r in rows]}

    return await ctx.server.blocking(run)


def _passage(r: dict) -> dict:
    return {"chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "document": r.get("document") or r["path"],
            "path": r["path"], "source": r["source"], "page": r.get("page"), "section": r.get("section"),
            "text": r["text"], "char_start": r.get("char_start"), "char_end": r.get("char_end"),
            "version_id": r.get("version_id")}


@router.get("/passages/{chunk_id}", tags=["knowledge"], summary="One cited passage (404 if not readable)")
async def passage(chunk_id: Annotated[str, PathParam(max_length=200)], ctx: Ctx = Depends(require("member", "passages.get"))):
    ws = ctx.server.ws

    def run():
        ctx.target = chunk_id
        hits = ws.store.fetch([(chunk_id, 0.0)], ctx.principal.labels())
        if not hits:
            raise Problem(404, "not-found", "no such passage, or you may not read it")
        ctx.audit()
        return _passage(hits[0].row)

    return await ctx.server.blocking(run)


@router.get("/lineage/{lineage_id}", tags=["knowledge"], summary="An answer's lineage (your own; admins: any)")
async def lineage(lineage_id: Annotated[str, PathParam(max_length=64)], ctx: Ctx = Depends(require("member", "lineage.get"))):
    ws = ctx.server.ws

    def run():
        ctx.target = lineage_id
        try:
            rec = ws.lineage(lineage_id)
        except BastionError:
            raise Problem(404, "not-found", "no such answer, or it is not yours") from None
        if rec["user_id"] != ctx.identity.user_id and not ctx.identity.at_least("admin"):
            raise Problem(404, "not-found", "no such answer, or it is not yours")
        ctx.audit(lineage_id=lineage_id)
        return rec

    return await ctx.server.blocking(run)


class FeedbackBody(_Body):
    lineage_id: Annotated[str, Field(min_length=1, max_length=64)]
    rating: Literal["up", "down"]
    correction: Annotated[str, Field(max_length=20000)] | None = None
    comment: Annotated[str, Field(max_length=4000)] | None = None


@router.post("/feedback", tags=["knowledge"], status_code=201,
             summary="Thumbs up/down on one of your answers, with an optional corrected answer")
async def feedback(body: FeedbackBody, ctx: Ctx = Depends(require("member", "feedback"))):
    ws = ctx.server.ws

    def run():
        ctx.target = body.lineage_id
        with ws.catalog.session() as s:
            row = s.get(LineageRow, body.lineage_id)
            if row is None or row.user_id != ctx.identity.user_id:
                raise Problem(404, "not-found", "no such answer, or it is not yours")
            fb = FeedbackRow(lineage_id=body.lineage_id, user_id=ctx.identity.user_id,
                             rating=1 if body.rating == "up" else -1, correction=body.correction, comment=body.comment)
            s.add(fb)
            s.flush()
            fid = fb.id
        ctx.audit(lineage_id=body.lineage_id, detail={"rating": body.rating})
        return {"id": fid, "lineage_id": body.lineage_id, "rating": body.rating}

    return await ctx.server.blocking(run)


# -- sources, uploads and sync jobs ------------------------------------------------------------------
_SECRET_IN_URL = re.compile(r"(://[^:/@]+:)[^@]*@")


def _source_dict(row: SourceRow) -> dict:
    cfg = dict(row.config)
    if cfg.get("url"):
        cfg["url"] = _SECRET_IN_URL.sub(r"\1***@", cfg["url"])
    return {"name": row.name, "kind": row.kind, "config": cfg, "created_at": row.created_at.isoformat() + "Z"}


@router.get("/sources", tags=["admin"], summary="Sources (database passwords masked)")
async def sources(ctx: Ctx = Depends(require("admin", "sources.list"))):
    rows = await ctx.server.blocking(ctx.server.ws.sources.list)
    await ctx.audit_async()
    return {"sources": [_source_dict(r) for r in rows]}


class SourceBody(_Body):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    kind: Literal["folder", "filesystem", "sql"]  # "filesystem" is what GET /sources reports
    path: Annotated[str, Field(max_length=4096)] | None = None
    url: Annotated[str, Field(max_length=4096)] | None = None
    acl: Annotated[str, Field(max_length=4000)] = ""
    include: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=100)
    exclude: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=100)
    uploaders: Annotated[str, Field(max_length=4000)] = ""
    table: Annotated[str, Field(max_length=200)] | None = None
    query: Annotated[str, Field(max_length=20000)] | None = None
    id_column: Annotated[str, Field(max_length=200)] = "id"
    text_template: Annotated[str, Field(max_length=4000)] | None = None
    updated_at_column: Annotated[str, Field(max_length=200)] | None = None
    acl_column: Annotated[str, Field(max_length=200)] | None = None
    title_column: Annotated[str, Field(max_length=200)] | None = None


@router.post("/sources", tags=["admin"], status_code=201, summary="Add a folder or SQL source")
async def add_source(body: SourceBody, ctx: Ctx = Depends(require("admin", "source.add"))):
    reg = ctx.server.ws.sources

    def run():
        ctx.target = body.name
        if body.kind in ("folder", "filesystem"):
            if not body.path:
                raise ConfigError("a folder source needs 'path'")
            row = reg.add_folder(body.name, body.path, acl=body.acl, include=body.include, exclude=body.exclude,
                                 uploaders=body.uploaders)
        else:
            if not (body.url and body.text_template):
                raise ConfigError("a SQL source needs 'url' and 'text_template'")
            row = reg.add_sql(body.name, body.url, id_column=body.id_column, template=body.text_template,
                              table=body.table, query=body.query, updated_at_column=body.updated_at_column,
                              acl_column=body.acl_column, title_column=body.title_column, acl=body.acl)
        ctx.audit(detail={"kind": body.kind, "acl": body.acl})
        return _source_dict(row)

    return await ctx.server.blocking(run)


_UPLOAD_NAME = re.compile(r"^[^\x00-\x1f\\:*?\"<>|]{1,255}$")


def _safe_relative(name: str) -> PurePosixPath:
    """A relative path inside the source folder; anything that could leave it is refused."""
    p = PurePosixPath(name.replace("\\", "/"))
    if (not name or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or len(p.parts) > 10
            or not all(_UPLOAD_NAME.match(part) for part in p.parts) or any(part.startswith(".") for part in p.parts)):
        raise ConfigError(f"invalid file path {name!r}: use a relative path like 'reports/q3.pdf' "
                          "without '..', hidden names or control characters")
    return p


@router.post("/sources/{name}/documents", tags=["knowledge"], status_code=202,
             summary="Upload a file into a folder source and sync it (editors allowed on that source; admins)")
async def upload(name: Annotated[str, PathParam(max_length=100)], file: UploadFile = File(...),
                 path: Annotated[str | None, Form(max_length=1000)] = None,
                 ctx: Ctx = Depends(require("editor", "document.upload"))):
    server = ctx.server
    ws = server.ws

    def run():
        ctx.target = f"{name}/{path or file.filename}"
        try:
            row = ws.sources.get(name)
        except ConfigError:
            raise Problem(404, "not-found", f"no source {name!r} you may upload to") from None
        allowed = parse_acl(row.config.get("uploaders") or "")
        if row.kind != "filesystem" or not (ctx.identity.at_least("admin") or ctx.principal.can_read(allowed)):
            raise Problem(404, "not-found", f"no source {name!r} you may upload to")
        rel = _safe_relative(path or file.filename or "")
        from bastion.connectors.filesystem import FilesystemConnector, write_beneath

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
        job = server.jobs.start(name, ctx.identity.user_id, upload_path=rel.as_posix())
        ctx.audit(detail={"bytes": size, "job": job["id"]})
        return {"source": name, "path": str(rel), "bytes": size,
                "job": job if ctx.identity.at_least("admin") else member_view(job)}

    return await server.blocking(run)


class SyncBody(_Body):
    source: Name | None = None


@router.post("/sync", tags=["admin"], status_code=202, summary="Start a background sync of one or all sources")
async def start_sync(body: SyncBody, ctx: Ctx = Depends(require("admin", "sync.start"))):
    def run():
        ctx.target = body.source or "*"
        job = ctx.server.jobs.start(body.source, ctx.identity.user_id)
        ctx.audit(detail={"job": job["id"]})
        return job

    return await ctx.server.blocking(run)


@router.get("/sync/jobs", tags=["admin"], summary="Recent sync jobs")
async def list_jobs(ctx: Ctx = Depends(require("admin", "jobs.list")),
                    limit: Annotated[int, Query(ge=1, le=500)] = 50):
    jobs = await ctx.server.blocking(ctx.server.jobs.list, limit)
    await ctx.audit_async()
    return {"jobs": jobs}


@router.get("/sync/jobs/{job_id}", tags=["knowledge"], summary="A sync job's status and progress (yours; admins: any)")
async def get_job(job_id: Annotated[str, PathParam(max_length=64)], ctx: Ctx = Depends(require("member", "jobs.get"))):
    job = await ctx.server.blocking(ctx.server.jobs.get, job_id)
    ctx.target = job_id
    if job is None or (job["started_by"] != ctx.identity.user_id and not ctx.identity.at_least("admin")):
        raise Problem(404, "not-found", "no such job")
    await ctx.audit_async()
    return job if ctx.identity.at_least("admin") else member_view(job)


# -- users, groups, keys ------------------------------------------------------------------------------
def _user_dict(server, p) -> dict:
    return {"user": p.user_id, "groups": sorted(p.groups), "role": server.accounts.role(p.user_id)}


@router.get("/users", tags=["admin"], summary="Users, their groups and roles")
async def users(ctx: Ctx = Depends(require("admin", "users.list"))):
    server = ctx.server

    def run():
        out = [_user_dict(server, p) for p in server.ws.directory.users()]
        ctx.audit()
        return out

    return {"users": await server.blocking(run)}


GroupName = Annotated[str, Field(min_length=1, max_length=200)]


class UserBody(_Body):
    user: Name
    groups: list[GroupName] = Field(default_factory=list, max_length=200)
    role: Literal["member", "editor", "admin"] = "member"
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = None


@router.post("/users", tags=["admin"], status_code=201, summary="Add a user (or replace their groups and role)")
async def add_user(body: UserBody, ctx: Ctx = Depends(require("admin", "user.add"))):
    server = ctx.server

    def run():
        ctx.target = body.user
        p = server.ws.directory.add_user(body.user, body.groups, role=body.role)
        ended = server.accounts.set_password(body.user, body.password) if body.password else 0
        ctx.audit(detail={"groups": body.groups, "role": body.role, "password_set": bool(body.password),
                          "sessions_ended": ended})
        return _user_dict(server, p)

    return await server.blocking(run)


class UserPatch(_Body):
    groups: list[GroupName] | None = Field(None, max_length=200)
    role: Literal["member", "editor", "admin"] | None = None
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = None


@router.patch("/users/{user_id}", tags=["admin"], summary="Change a user's groups, role or password")
async def patch_user(user_id: Annotated[str, PathParam(max_length=200)], body: UserPatch,
                     ctx: Ctx = Depends(require("admin", "user.change"))):
    server = ctx.server

    def run():
        ctx.target = user_id
        current = _existing_user(server, user_id)
        _keep_an_admin(server, user_id, body.role)
        groups = body.groups if body.groups is not None else sorted(current.groups)
        p = server.ws.directory.add_user(user_id, groups, role=body.role)
        # a new password ends every web session of the user (the caller's own too, if it is theirs)
        ended = server.accounts.set_password(user_id, body.password) if body.password else 0
        ctx.audit(detail={"groups": body.groups, "role": body.role, "password_set": bool(body.password),
                          "sessions_ended": ended})
        return _user_dict(server, p)

    return await server.blocking(run)


def _existing_user(server, user_id: str):
    try:
        return server.ws.principal(user_id)
    except AccessError:
        raise Problem(404, "not-found", f"no user {user_id!r}") from None


def _keep_an_admin(server, user_id: str, new_role: str | None) -> None:
    admins = server.accounts.admins()
    if admins == [user_id] and new_role != "admin":
        raise Problem(409, "conflict", f"{user_id} is the only admin; make another admin first")


@router.delete("/users/{user_id}", tags=["admin"], summary="Remove a user: their keys and sessions stop working at once")
async def delete_user(user_id: Annotated[str, PathParam(max_length=200)], ctx: Ctx = Depends(require("admin", "user.remove"))):
    server = ctx.server

    def run():
        ctx.target = user_id
        _existing_user(server, user_id)
        _keep_an_admin(server, user_id, None)
        server.ws.directory.remove_user(user_id)
        ctx.audit()
        return {"removed": user_id}

    return await server.blocking(run)


@router.delete("/users/{user_id}/sessions", tags=["admin"], summary="Log a user out everywhere: end their web sessions")
async def end_user_sessions(user_id: Annotated[str, PathParam(max_length=200)],
                            ctx: Ctx = Depends(require("admin", "user.sessions.end"))):
    server = ctx.server

    def run():
        ctx.target = user_id
        _existing_user(server, user_id)
        ended = server.accounts.end_sessions(user_id)
        ctx.audit(detail={"sessions_ended": ended})
        return {"user": user_id, "sessions_ended": ended}

    return await server.blocking(run)


@router.get("/groups", tags=["admin"], summary="Groups and their members")
async def groups(ctx: Ctx = Depends(require("admin", "groups.list"))):
    server = ctx.server

    def run():
        out = server.ws.directory.groups()
        ctx.audit()
        return out

    return {"groups": await server.blocking(run)}


class KeyBody(_Body):
    user: Name | None = None  # admins may create keys for others
    name: Annotated[str, Field(max_length=200)] | None = None
    expires_in: Annotated[str, Field(max_length=20, description="e.g. 30d, 12h, 2w; at most 3650d")] | None = None

    @field_validator("expires_in")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration(value)
            except AccessError as exc:
                raise ValueError(str(exc)) from None
        return value


@router.get("/keys", tags=["auth"], summary="API keys: your own (admins: everyone's, or ?user=)")
async def list_keys(ctx: Ctx = Depends(require("member", "keys.list")),
                    user: Annotated[str | None, Query(max_length=200)] = None):
    server = ctx.server

    def run():
        who = user if ctx.identity.at_least("admin") else ctx.identity.user_id
        keys = [k.to_dict() for k in server.accounts.list_keys(who)]
        ctx.audit(target=who)
        return keys

    return {"keys": await server.blocking(run)}


@router.post("/keys", tags=["auth"], status_code=201, summary="Create an API key (shown once)")
async def create_key(body: KeyBody, ctx: Ctx = Depends(require("member", "key.create"))):
    server = ctx.server

    def run():
        owner = body.user or ctx.identity.user_id
        ctx.target = owner
        if owner != ctx.identity.user_id and not ctx.identity.at_least("admin"):
            raise Problem(403, "forbidden", "only admins create keys for other users")
        expires = parse_duration(body.expires_in) if body.expires_in else None
        key_id, key = server.accounts.create_key(owner, name=body.name, expires_in=expires,
                                                 created_by=ctx.identity.user_id)
        ctx.audit(detail={"key": key_id, "expires_in": body.expires_in})
        info = next(k for k in server.accounts.list_keys(owner) if k.id == key_id)
        return info.to_dict() | {"key": key}

    return await server.blocking(run)


@router.delete("/keys/{key_id}", tags=["auth"], summary="Revoke an API key (yours; admins: any); effective at once")
async def revoke_key(key_id: Annotated[str, PathParam(max_length=64)], ctx: Ctx = Depends(require("member", "key.revoke"))):
    server = ctx.server

    def run():
        ctx.target = key_id
        try:
            owner = server.accounts.key_owner(key_id)
        except AccessError:
            raise Problem(404, "not-found", f"no API key {key_id!r}") from None
        if owner != ctx.identity.user_id and not ctx.identity.at_least("admin"):
            raise Problem(404, "not-found", f"no API key {key_id!r}")
        server.accounts.revoke_key(key_id)
        ctx.audit(detail={"owner": owner})
        return {"revoked": key_id}

    return await server.blocking(run)


# -- audit ------------------------------------------------------------------------------------------
def _audit_query(actor, action, outcome, since, until, lineage_id, after_id, limit, before_id=None,
                 newest_first=False) -> AuditQuery:
    return AuditQuery(actor=actor, action=action, outcome=outcome, since=_naive(since), until=_naive(until),
                      lineage_id=lineage_id, after_id=after_id, limit=limit, before_id=before_id,
                      newest_first=newest_first)


def _naive(t: datetime | None) -> datetime | None:
    if t is None or t.tzinfo is None:
        return t
    from datetime import timezone

    try:
        return t.astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is past the last representable time in UTC
        raise Problem(422, "validation", f"time {t.isoformat()!r} is out of range in UTC") from None


@router.get("/audit", tags=["admin"], summary="Audit entries, filtered; oldest first, or newest first with order=desc")
async def audit(ctx: Ctx = Depends(require("admin", "audit.read")),
                actor: Annotated[str | None, Query(max_length=200)] = None,
                action: Annotated[str | None, Query(max_length=80)] = None,
                outcome: Annotated[Literal["ok", "denied", "failed", "error"] | None, Query()] = None,
                since: datetime | None = None, until: datetime | None = None,
                lineage_id: Annotated[str | None, Query(max_length=64)] = None,
                after_id: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                before_id: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                order: Literal["asc", "desc"] = "asc",
                limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    server = ctx.server
    q = _audit_query(actor, action, outcome, since, until, lineage_id, after_id, limit, before_id, order == "desc")

    def run():
        entries = server.audit.query(q)
        ctx.audit(detail={"filters": {k: v for k, v in dict(actor=actor, action=action, outcome=outcome).items() if v}})
        return entries

    return {"entries": await server.blocking(run)}


@router.get("/audit/export", tags=["admin"], summary="Audit entries as JSON Lines",
            response_class=StreamingResponse, responses={200: {"content": {"application/x-ndjson": {}}}})
async def audit_export(ctx: Ctx = Depends(require("admin", "audit.export")),
                       actor: Annotated[str | None, Query(max_length=200)] = None,
                       action: Annotated[str | None, Query(max_length=80)] = None,
                       outcome: Annotated[Literal["ok", "denied", "failed", "error"] | None, Query()] = None,
                       since: datetime | None = None, until: datetime | None = None):
    server = ctx.server
    q = _audit_query(actor, action, outcome, since, until, None, None, 1000)
    await ctx.audit_async()
    rows = await server.blocking(lambda: list(server.audit.iter_all(q)))
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return Response(body, media_type="application/x-ndjson",
                    headers={"content-disposition": 'attachment; filename="bastion-audit.jsonl"'})


# -- data health -------------------------------------------------------------------------------------
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; base-uri 'none'"


@router.get("/monitor", tags=["admin"], summary="Data health: unresolved alerts and each source's last sync")
async def monitor_status(ctx: Ctx = Depends(require("admin", "monitor.status")),
                         source: Annotated[str | None, Query(max_length=200)] = None,
                         include_resolved: bool = False):
    def run():
        try:
            data = ctx.server.ws.monitor.status(source, include_resolved)
        except BastionError as exc:
            raise Problem(404, "not-found", str(exc)) from None
        ctx.audit()
        return data

    return await ctx.server.blocking(run)


@router.get("/monitor/sources/{name}/history", tags=["admin"], summary="A source's syncs and what each measured")
async def monitor_history(name: Annotated[str, PathParam(max_length=200)],
                          ctx: Ctx = Depends(require("admin", "monitor.history")),
                          limit: Annotated[int, Query(ge=1, le=1000)] = 30):
    def run():
        ctx.target = name
        try:
            runs = ctx.server.ws.monitor.history(name, limit)
        except BastionError as exc:
            raise Problem(404, "not-found", str(exc)) from None
        ctx.audit()
        return {"source": name, "runs": runs}

    return await ctx.server.blocking(run)


@router.post("/monitor/alerts/{alert_id}/{action}", tags=["admin"],
             summary="Acknowledge or resolve an alert (resolving a schema alert accepts the new columns)")
async def monitor_alert(alert_id: Annotated[int, PathParam(ge=1, le=2**62)], action: Literal["acknowledge", "resolve"],
                        ctx: Ctx = Depends(require("admin", "alert.change"))):
    def run():
        ctx.target = str(alert_id)
        m = ctx.server.ws.monitor
        try:
            alert = m.acknowledge(alert_id, ctx.identity.user_id) if action == "acknowledge" else m.resolve(alert_id, ctx.identity.user_id)
        except BastionError as exc:
            status = 404 if "no alert" in str(exc) else 409
            raise Problem(status, "not-found" if status == 404 else "conflict", str(exc)) from None
        ctx.audit(action=f"alert.{action}", detail={"source": alert["source"], "kind": alert["kind"]})
        return alert

    return await ctx.server.blocking(run)


@router.post("/monitor/run", tags=["admin"], summary="Evaluate every source's checks now (freshness moves with the clock)")
async def monitor_run(ctx: Ctx = Depends(require("admin", "monitor.run"))):
    def run():
        alerts = ctx.server.ws.monitor.run()
        ctx.audit()
        return {"alerts": alerts}

    return await ctx.server.blocking(run)


@router.get("/monitor/report", tags=["admin"], summary="The data-health report: one self-contained HTML page",
            response_class=Response, responses={200: {"content": {"text/html": {}}}})
async def monitor_report(ctx: Ctx = Depends(require("admin", "monitor.report"))):
    from bastion.monitoring.report import build_report

    def run():
        ws = ctx.server.ws
        html = build_report(ws.monitor, [s.name for s in ws.sources.list()], ws.home.name)
        ctx.audit()
        return html

    html = await ctx.server.blocking(run)
    return Response(html, media_type="text/html; charset=utf-8", headers={"content-security-policy": REPORT_CSP})


@router.get("/assistants", tags=["knowledge"], summary="Assistants (OpenAI model names) of this server")
async def assistants(request: Request, ctx: Ctx = Depends(require("member", "models.list"))):
    await ctx.audit_async()
    return {"assistants": [{"name": n, "description": a.description, "mode": a.mode, "sources": a.sources}
                           for n, a in ctx.server.ws.assistants().items()]}
