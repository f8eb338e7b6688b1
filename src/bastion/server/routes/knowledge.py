"""Knowledge reads: search, documents and their passages, an answer's lineage, feedback, assistants.

Whatever the caller may not read answers exactly like what does not exist (the same 404).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from pydantic import Field

from bastion.core.errors import BastionError
from bastion.server.auth import Ctx, require
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, JsonObject, Name, StrictBody, Text, blocking_audited

router = APIRouter(prefix="/api/v1", tags=["knowledge"])
NOT_FOUND = "no such document, or you may not read it"
NOT_YOURS = "no such answer, or it is not yours"


class SearchBody(StrictBody):
    query: Text
    k: int = Field(10, ge=1, le=100)
    mode: Literal["hybrid", "dense", "bm25"] | None = None
    source: Name | None = None


@router.post("/search", response_model=None, summary="Hybrid search over what the caller may read")
async def search(body: SearchBody, ctx: Ctx = Depends(require("member", "search"))) -> JsonObject:
    hits = await blocking_audited(
        ctx, lambda: ctx.server.ws.search(body.query, ctx.principal, body.k, source=body.source, mode=body.mode),
        entry=lambda hits: AuditEntry(target=body.query, detail={"k": body.k, "hits": [h.chunk_id for h in hits]}))
    return {"hits": [h.to_dict() for h in hits]}


@router.get("/documents", response_model=None, summary="Documents the caller may read")
async def documents(ctx: Ctx = Depends(require("member", "documents.list")),
                    source: Annotated[str | None, Query(max_length=200)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> JsonObject:
    found = await blocking_audited(
        ctx, lambda: ctx.server.ws.documents.list_readable(ctx.principal, source, limit, offset),
        entry=lambda docs: AuditEntry(target=source, detail={"returned": len(docs)}))
    return {"documents": [d.to_dict() for d in found], "offset": offset, "limit": limit}


@router.get("/documents/{doc_id}", response_model=None,
            summary="One document and its passages (404 if not readable)")
async def document(doc_id: Annotated[str, PathParam(max_length=64)],
                   ctx: Ctx = Depends(require("member", "documents.get"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: _document_with_passages(ctx, doc_id), target=doc_id,
                                  entry=lambda doc: AuditEntry(detail={"chunks": len(doc["passages"])}))


def _document_with_passages(ctx: Ctx, doc_id: str) -> JsonObject:
    """A readable document, its current version, and the passages of it the caller may read, in order."""
    ws = ctx.server.ws
    doc = ws.documents.readable(ctx.principal, doc_id)
    if doc is None:
        raise Problem(404, "not-found", NOT_FOUND)
    version = ws.documents.current_version(doc)
    rows = [r for r in ws.store.rows_for([doc.id]) if ctx.principal.can_read(r.get("acl") or [])]
    rows.sort(key=lambda r: r["ordinal"])
    return doc.to_dict() | {"version": version.to_dict() if version else None,
                            "passages": [_passage(r) for r in rows]}


def _passage(r: dict[str, Any]) -> JsonObject:
    return {"chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "document": r.get("document") or r["path"],
            "path": r["path"], "source": r["source"], "page": r.get("page"), "section": r.get("section"),
            "text": r["text"], "char_start": r.get("char_start"), "char_end": r.get("char_end"),
            "version_id": r.get("version_id")}


@router.get("/passages/{chunk_id}", response_model=None, summary="One cited passage (404 if not readable)")
async def passage(chunk_id: Annotated[str, PathParam(max_length=200)],
                  ctx: Ctx = Depends(require("member", "passages.get"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: _readable_passage(ctx, chunk_id), target=chunk_id)


def _readable_passage(ctx: Ctx, chunk_id: str) -> JsonObject:
    hits = ctx.server.ws.store.fetch([(chunk_id, 0.0)], ctx.principal.labels())
    if not hits:
        raise Problem(404, "not-found", "no such passage, or you may not read it")
    return _passage(hits[0].row)


@router.get("/lineage/{lineage_id}", response_model=None, summary="An answer's lineage (your own; admins: any)")
async def lineage(lineage_id: Annotated[str, PathParam(max_length=64)],
                  ctx: Ctx = Depends(require("member", "lineage.get"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: _own_lineage(ctx, lineage_id), target=lineage_id,
                                  entry=AuditEntry(lineage_id=lineage_id))


def _own_lineage(ctx: Ctx, lineage_id: str) -> JsonObject:
    """The lineage of one of the caller's answers (an admin's: of any answer)."""
    try:
        record: JsonObject = ctx.server.ws.lineage(lineage_id)
    except BastionError:
        raise Problem(404, "not-found", NOT_YOURS) from None
    if record["user_id"] != ctx.identity.user_id and not ctx.identity.at_least("admin"):
        raise Problem(404, "not-found", NOT_YOURS)
    return record


class FeedbackBody(StrictBody):
    lineage_id: Annotated[str, Field(min_length=1, max_length=64)]
    rating: Literal["up", "down"]
    correction: Annotated[str, Field(max_length=20000)] | None = None
    comment: Annotated[str, Field(max_length=4000)] | None = None


@router.post("/feedback", status_code=201, response_model=None,
             summary="Thumbs up/down on one of your answers, with an optional corrected answer")
async def feedback(body: FeedbackBody, ctx: Ctx = Depends(require("member", "feedback"))) -> JsonObject:
    feedback_id = await blocking_audited(ctx, lambda: _add_feedback(ctx, body), target=body.lineage_id,
                                         entry=AuditEntry(lineage_id=body.lineage_id, detail={"rating": body.rating}))
    return {"id": feedback_id, "lineage_id": body.lineage_id, "rating": body.rating}


def _add_feedback(ctx: Ctx, body: FeedbackBody) -> int:
    feedback_id = ctx.server.ws.documents.add_feedback(ctx.principal, body.lineage_id, body.rating,
                                                       correction=body.correction, comment=body.comment)
    if feedback_id is None:
        raise Problem(404, "not-found", NOT_YOURS)
    return feedback_id


@router.get("/assistants", response_model=None, summary="Assistants (OpenAI model names) of this server")
async def assistants(ctx: Ctx = Depends(require("member", "models.list"))) -> JsonObject:
    await ctx.audit_async()
    return {"assistants": [{"name": n, "description": a.description, "mode": a.mode, "sources": a.sources}
                           for n, a in ctx.server.ws.assistants().items()]}
