"""Answer lineage, written once per answer and read both ways.

Upstream: answer -> retrieved chunks -> document versions -> ingest runs -> source -> embedder.
Downstream: document (version) -> the answers that retrieved or cited it.

This module takes a :class:`~bastion.catalog.db.Catalog` and plain records (a
:class:`LineageEntry`, dicts), never the workspace or an ``Answer``, so it sits below
``bastion.generation`` in the import graph: the answerer writes through it, the CLI, the HTTP
API and the monitor read through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, or_, select
from sqlalchemy.orm import Session

from bastion.catalog.db import Catalog
from bastion.catalog.models import DocumentRow, DocumentVersionRow, IngestRunRow, LineageRow, SourceRow, utc_iso
from bastion.core.errors import WorkspaceError


@dataclass(frozen=True)
class LineageEntry:
    """One answer's lineage row: who asked what, what was decided, and the full ``record``
    (retrieval, evidence, prompt, model, decoding, checks, timings, citations).

    >>> cat = Catalog.open("sqlite:///:memory:")
    >>> write(cat, LineageEntry(id="a1", user_id="bob", principal=["everyone", "user:bob"],
    ...                         question="Hotel limit?", rewritten_question=None, mode="answer",
    ...                         decision="abstained", reason="no authorised passage", record={"language": "en"}))
    >>> read(cat, "a1")["decision"], [r["id"] for r in recent(cat, user_id="bob")]
    ('abstained', ['a1'])
    """

    id: str
    user_id: str
    principal: list[str]  # the asker's labels, sorted
    question: str
    rewritten_question: str | None
    mode: str
    decision: str
    reason: str | None
    record: dict[str, Any]


# -- writing and reading answer records -----------------------------------------------------
def write(catalog: Catalog, entry: LineageEntry) -> None:
    """Append one entry (the table is append-only: the catalog refuses updates and deletes)."""
    with catalog.session(write=True) as s:
        s.add(LineageRow(id=entry.id, user_id=entry.user_id, principal=entry.principal, question=entry.question,
                         rewritten_question=entry.rewritten_question, mode=entry.mode, decision=entry.decision,
                         reason=entry.reason, record=entry.record))


def read(catalog: Catalog, lineage_id: str) -> dict[str, Any]:
    """One answer's lineage record: the row's columns merged with its ``record``."""
    with catalog.session() as s:
        row = s.get(LineageRow, lineage_id)
        if row is None:
            raise WorkspaceError(f"no lineage record {lineage_id!r}")
        return {"id": row.id, "created_at": utc_iso(row.created_at), "user_id": row.user_id,
                "principal": row.principal, "question": row.question,
                "rewritten_question": row.rewritten_question, "mode": row.mode, "decision": row.decision,
                "reason": row.reason, **row.record}


def recent(catalog: Catalog, limit: int = 20, user_id: str | None = None) -> list[dict[str, Any]]:
    """The latest answers, newest first (of one user when ``user_id`` is given)."""
    with catalog.session() as s:
        q = select(LineageRow).order_by(LineageRow.created_at.desc()).limit(limit)
        if user_id:
            q = q.where(LineageRow.user_id == user_id)
        return [{"id": r.id, "created_at": utc_iso(r.created_at), "user_id": r.user_id,
                 "question": r.question, "decision": r.decision} for r in s.scalars(q)]


# -- tracing ----------------------------------------------------------------------------------
def _version_dict(s: Session, v: DocumentVersionRow) -> dict[str, Any]:
    run = s.get(IngestRunRow, v.run_id) if v.run_id else None
    return {"version_id": v.id, "content_hash": v.content_hash, "status": v.status, "size": v.size,
            "chunks": v.chunk_count, "parser": v.parser, "error": v.error, "created_at": utc_iso(v.created_at),
            "run": {"id": run.id, "status": run.status, "started_at": utc_iso(run.started_at),
                    "embedder_id": run.embedder_id} if run else None}


def resolve_document(catalog: Catalog, ref: str) -> str:
    """A document id, or ``SOURCE:KEY`` (e.g. ``docs:hr/leave.md``) -> the document id."""
    with catalog.session() as s:
        if s.get(DocumentRow, ref) is not None:
            return ref
        source, sep, key = ref.partition(":")
        if sep:
            doc_id = s.scalar(select(DocumentRow.id).join(SourceRow, SourceRow.id == DocumentRow.source_id)
                              .where(SourceRow.name == source, DocumentRow.key == key))
            if doc_id:
                return doc_id
    raise WorkspaceError(f"no document {ref!r} (give a document id or SOURCE:KEY, e.g. docs:hr/leave.md)")


def answers_using(catalog: Catalog, *, version_ids: set[str], limit: int = 1000) -> list[dict[str, Any]]:
    """Answers whose retrieval used any of these document versions (``cited``: one of its citations did)."""
    if not version_ids:
        return []
    out = []
    with catalog.session() as s:
        text = cast(LineageRow.record, Text)
        cond = or_(*(text.like(f"%{v}%") for v in version_ids))
        for row in s.scalars(select(LineageRow).where(cond).order_by(LineageRow.created_at.desc()).limit(limit)):
            hits = (row.record.get("retrieval") or {}).get("hits") or []
            used = [h for h in hits if h.get("version_id") in version_ids]
            if not used:
                continue
            cited = [c for c in row.record.get("citations") or [] if c.get("version_id") in version_ids]
            out.append({"lineage_id": row.id, "created_at": utc_iso(row.created_at), "user_id": row.user_id,
                        "question": row.question, "decision": row.decision, "cited": bool(cited),
                        "versions": sorted({h["version_id"] for h in used}),
                        "chunks": sorted({h["chunk_id"] for h in used})})
    return out


def trace_document(catalog: Catalog, ref: str) -> dict[str, Any]:
    """A document, its source, every version (with the run and embedder that indexed it) and the
    answers that used each version."""
    doc_id = resolve_document(catalog, ref)
    with catalog.session() as s:
        d = s.get_one(DocumentRow, doc_id)
        src = s.get_one(SourceRow, d.source_id)
        versions = [_version_dict(s, v) for v in s.scalars(
            select(DocumentVersionRow).where(DocumentVersionRow.document_id == doc_id)
            .order_by(DocumentVersionRow.created_at))]
        doc = {"doc_id": d.id, "key": d.key, "uri": d.uri, "title": d.title, "status": d.status, "acl": d.acl,
               "current_version_id": d.current_version_id, "error": d.error,
               "source": {"name": src.name, "kind": src.kind}}
    answers = answers_using(catalog, version_ids={v["version_id"] for v in versions})
    for v in versions:
        v["answers"] = [a for a in answers if v["version_id"] in a["versions"]]
    return doc | {"versions": versions}


def trace_version(catalog: Catalog, version_id: str) -> dict[str, Any]:
    """One document version, its document, and the answers that used it."""
    with catalog.session() as s:
        v = s.get(DocumentVersionRow, version_id)
        if v is None:
            raise WorkspaceError(f"no document version {version_id!r}")
        d = s.get_one(DocumentRow, v.document_id)
        src = s.get_one(SourceRow, d.source_id)
        out = _version_dict(s, v) | {"document": {"doc_id": d.id, "key": d.key, "title": d.title,
                                                  "source": src.name, "current": d.current_version_id == v.id}}
    return out | {"answers": answers_using(catalog, version_ids={version_id})}


def trace_answer(catalog: Catalog, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Upstream of one answer's lineage record: each retrieved chunk's version, document, run, source, embedder."""
    out = []
    with catalog.session() as s:
        cited = {c.get("chunk_id") for c in record.get("citations") or []}
        for h in (record.get("retrieval") or {}).get("hits") or []:
            v = s.get(DocumentVersionRow, h.get("version_id"))
            d = s.get(DocumentRow, v.document_id) if v else None
            src = s.get(SourceRow, d.source_id) if d else None
            out.append({"n": h.get("n"), "chunk_id": h.get("chunk_id"), "cited": h.get("chunk_id") in cited,
                        "version": _version_dict(s, v) if v else None,
                        "document": {"doc_id": d.id, "key": d.key, "status": d.status,
                                     "still_current": d.current_version_id == v.id} if d and v else None,
                        "source": src.name if src else None})
    return out


__all__ = ["LineageEntry", "answers_using", "read", "recent", "resolve_document", "trace_answer", "trace_document",
           "trace_version", "write"]
