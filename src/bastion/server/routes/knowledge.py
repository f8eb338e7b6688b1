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
from bastion.server.plain_language import empty_index_message
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, JsonObject, Name, StrictBody, Text, blocking_audited

router = APIRouter(prefix="/api/v1", tags=["knowledge"])
NOT_FOUND = "no such document, or you may not read it"
NOT_YOURS = "no such answer, or it is not yours"
CONTEXT_CHARS = 600  # text shown before and after a passage


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
    out: JsonObject = {"hits": [h.to_dict() for h in hits], "index_empty": False, "message": None}
    if not hits:  # only an empty result asks whether the index itself is empty
        note = await ctx.server.blocking(empty_index_note, ctx, body.source, "en")
        out |= {"index_empty": note is not None, "message": note}
    return out


def empty_index_note(ctx: Ctx, source: str | list[str] | None, language: str) -> str | None:
    """When nothing is indexed (in ``source``) for anyone: why, plainly for members (blocking)."""
    hint = ctx.server.ws.index_status(source).hint
    return empty_index_message(hint, language, admin=ctx.identity.at_least("admin"))


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


@router.get("/passages/{chunk_id}", response_model=None,
            summary="One cited passage with its document and the text around it (404 if not readable)")
async def passage(chunk_id: Annotated[str, PathParam(max_length=200)],
                  ctx: Ctx = Depends(require("member", "passages.get"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: _readable_passage(ctx, chunk_id), target=chunk_id)


def _readable_passage(ctx: Ctx, chunk_id: str) -> JsonObject:
    """The passage, its document's title and original, and the text just before and after it (what a viewer
    highlights the passage in), from the passages of the same version the caller may read."""
    ws = ctx.server.ws
    hits = ws.store.fetch([(chunk_id, 0.0)], ctx.principal.labels())
    doc = ws.documents.readable(ctx.principal, hits[0].row["doc_id"]) if hits else None
    if doc is None:
        raise Problem(404, "not-found", "no such passage, or you may not read it")
    row = hits[0].row
    before = after = ""
    for r in ws.store.rows_for([doc.id]) if row.get("char_start") is not None else []:
        if (r.get("version_id") != row.get("version_id") or r.get("char_start") is None
                or not ctx.principal.can_read(r.get("acl") or [])):
            continue
        if r["ordinal"] == row["ordinal"] - 1:
            before = r["text"][:max(0, row["char_start"] - r["char_start"])][-CONTEXT_CHARS:]
        elif r["ordinal"] == row["ordinal"] + 1:
            after = r["text"][max(0, row["char_end"] - r["char_start"]):][:CONTEXT_CHARS]
    return _passage(row) | {"title": doc.title, "original": f"/api/v1/documents/{doc.id}/original",
                            "original_url": _page_url(ws, doc.source, doc.path), "before": before, "after": after}


def _page_url(ws: Any, source: str, path: str) -> str | None:
    """A web page's own address (its original lives there, not on this server); None for other kinds."""
    from bastion.sources import source_kind

    if source_kind(ws.sources.get(source).kind) != "web" or not path.startswith(("https://", "http://")):
        return None
    return path


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
    if ctx.identity.at_least("admin"):
        return record
    if record["user_id"] != ctx.identity.user_id:
        raise Problem(404, "not-found", NOT_YOURS)
    return _as_owner_reads(ctx, record)


def _as_owner_reads(ctx: Ctx, record: JsonObject) -> JsonObject:
    """A member's own lineage as they may read today: what came from documents they can no longer read
    (the answer's sentences citing them, its citations, the model's raw text, those hits) is left out."""
    from bastion.stored_answers import cited_documents, readable_documents, shown_answer

    retrieval = record.get("retrieval") or {}
    hits, citations = retrieval.get("hits") or [], record.get("citations") or []
    docs = cited_documents(citations) | cited_documents(hits)
    with ctx.server.ws.catalog.session() as s:
        readable = readable_documents(s, ctx.principal, docs)
    if docs <= readable:
        return record
    answer, shown = shown_answer(record.get("answer") or "", citations, readable)
    checks = record.get("checks") or {}
    return record | {"answer": answer, "citations": shown, "raw_answer": None,
                     "checks": checks | {"invalid_detail": []} if checks else checks,
                     "retrieval": retrieval | {"hits": [h if h.get("doc_id") in readable else
                                                        {"n": h.get("n"), "available": False} for h in hits]}}


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


DEFAULT_ASSISTANT = "bastion"


@router.get("/assistants", response_model=None,
            summary="Assistants (OpenAI model names) of this server, for an assistant picker")
async def assistants(ctx: Ctx = Depends(require("member", "models.list"))) -> JsonObject:
    """Each assistant's name, description, mode and model as it answers, its sources (empty: every source the
    caller may read), and which is the default (``bastion``, what ``POST /ask`` uses without ``assistant``)."""
    await ctx.audit_async()
    cfg = ctx.server.ws.config
    return {"default": DEFAULT_ASSISTANT,
            "assistants": [{"name": n, "description": a.description, "mode": a.mode or cfg.answer.mode,
                            "model": a.model or cfg.llm.model, "sources": a.sources, "default": n == DEFAULT_ASSISTANT}
                           for n, a in ctx.server.ws.assistants().items()]}
