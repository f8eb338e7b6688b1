"""The append-only audit log: who did what, when, from where, with what outcome.

Every knowledge read (search, ask, document or passage read) is recorded with its lineage id
when it has one, every admin change, every login success and failure, and every use of an API
key. The table refuses UPDATE and DELETE (database triggers), so an entry, once written,
stays. Writing is part of the request: the server answers only after its entry is stored.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import AuditRow, utc_iso

OUTCOMES = ("ok", "denied", "failed", "error")
_MAX_TARGET = 2000
_MAX_ID = 2**31 - 1  # the largest audit entry id the catalog can hold



class TextSink(Protocol):
    """Where text is written (a text stream, or a wrapper around one)."""

    def write(self, text: str, /) -> int: ...

@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in '.' / '*' ("user.*")
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    lineage_id: str | None = None
    after_id: int | None = None  # for paging forward: entries with a larger id
    limit: int = 100
    before_id: int | None = None  # for paging backward: entries with a smaller id
    newest_first: bool = False


def _row_dict(r: AuditRow) -> dict[str, Any]:
    return {"id": r.id, "at": utc_iso(r.at), "actor": r.actor, "via": r.via, "ip": r.ip,
            "action": r.action, "target": r.target, "outcome": r.outcome, "lineage_id": r.lineage_id,
            "request_id": r.request_id, "detail": r.detail}


class AuditLog:
    """Write and read audit entries.

    >>> log = AuditLog(Catalog.open("sqlite:///:memory:"))
    >>> _ = log.record(actor="alice", via="key", action="search", outcome="ok", target="q3 revenue")
    >>> [e["action"] for e in log.query(AuditQuery(actor="alice"))]
    ['search']
    """

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def record(self, *, actor: str | None, via: str, action: str, outcome: str, target: str | None = None,
               ip: str | None = None, lineage_id: str | None = None, request_id: str | None = None,
               detail: dict[str, Any] | None = None) -> int:
        """Store one entry and return its id; raises if it cannot be stored (the caller must fail)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome {outcome!r} not in {OUTCOMES}")
        if target is not None and len(target) > _MAX_TARGET:
            target = target[:_MAX_TARGET] + "…"
        with self.catalog.session(write=True) as s:
            row = AuditRow(actor=actor, via=via, ip=ip, action=action, target=target, outcome=outcome,
                           lineage_id=lineage_id, request_id=request_id, detail=detail or {})
            s.add(row)
            s.flush()
            return row.id

    def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        stmt = select(AuditRow).order_by(AuditRow.id.desc() if q.newest_first else AuditRow.id)
        if q.actor:
            stmt = stmt.where(AuditRow.actor == q.actor)
        if q.action:
            if q.action.endswith("*") or q.action.endswith("."):
                stmt = stmt.where(AuditRow.action.startswith(q.action.rstrip("*"), autoescape=True))
            else:
                stmt = stmt.where(AuditRow.action == q.action)
        if q.outcome:
            stmt = stmt.where(AuditRow.outcome == q.outcome)
        if q.since:
            stmt = stmt.where(AuditRow.at >= q.since)
        if q.until:
            stmt = stmt.where(AuditRow.at < q.until)
        if q.lineage_id:
            stmt = stmt.where(AuditRow.lineage_id == q.lineage_id)
        # ids past the id column's range (INTEGER on PostgreSQL) are bounds no entry reaches, not errors
        if q.after_id is not None:
            stmt = stmt.where(AuditRow.id > min(q.after_id, _MAX_ID))
        if q.before_id is not None and q.before_id <= _MAX_ID:
            stmt = stmt.where(AuditRow.id < q.before_id)
        with self.catalog.session() as s:
            return [_row_dict(r) for r in s.scalars(stmt.limit(max(1, min(q.limit, 10_000))))]

    def iter_all(self, q: AuditQuery, page: int = 1000) -> Iterator[dict[str, Any]]:
        """Every matching entry, oldest first, read a page at a time."""
        after = q.after_id
        while True:
            rows = self.query(replace(q, after_id=after, limit=page, newest_first=False))
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["id"]

    def export_jsonl(self, q: AuditQuery, out: TextSink) -> int:
        n = 0
        for entry in self.iter_all(q):
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            n += 1
        return n
