"""Lineage, both ways: answer -> chunks -> document versions -> ingest runs -> source -> embedder,
and document (version) -> the answers that retrieved or cited it."""
from __future__ import annotations

from sqlalchemy import Text, cast, select

from bastion.catalog.db import Catalog
from bastion.catalog.models import DocumentRow, DocumentVersionRow, IngestRunRow, LineageRow, SourceRow, utc_iso
from bastion.core.errors import WorkspaceError


def _version_dict(s, v: DocumentVersionRow) -> dict:
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


def answers_using(catalog: Catalog, *, version_ids: set[str], limit: int = 1000) -> list[dict]:
    """Answers whose retrieval used any of these document versions (``cited``: one of its citations did)."""
    if not version_ids:
        return []
    out = []
    with catalog.session() as s:
        text = cast(LineageRow.record, Text)
        cond = None
        for v in version_ids:
            c = text.like(f"%{v}%")
            cond = c if cond is None else cond | c
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


def trace_document(catalog: Catalog, ref: str) -> dict:
    """A document, its source, every version (with the run and embedder that indexed it) and the
    answers that used each version."""
    doc_id = resolve_document(catalog, ref)
    with catalog.session() as s:
        d = s.get(DocumentRow, doc_id)
        src = s.get(SourceRow, d.source_id)
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


def trace_version(catalog: Catalog, version_id: str) -> dict:
    with catalog.session() as s:
        v = s.get(DocumentVersionRow, version_id)
        if v is None:
            raise WorkspaceError(f"no document version {version_id!r}")
        d = s.get(DocumentRow, v.document_id)
        src = s.get(SourceRow, d.source_id)
        out = _version_dict(s, v) | {"document": {"doc_id": d.id, "key": d.key, "title": d.title,
                                                  "source": src.name, "current": d.current_version_id == v.id}}
    return out | {"answers": answers_using(catalog, version_ids={version_id})}


def trace_answer(catalog: Catalog, record: dict) -> list[dict]:
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
                                     "still_current": d.current_version_id == v.id} if d else None,
                        "source": src.name if src else None})
    return out
