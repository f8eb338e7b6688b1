"""The alerts the checks keep (open -> acknowledged -> resolved), and what is read from them.

:meth:`AlertBook.reconcile` turns an evaluation's findings into alerts: a finding opens an alert
(or refreshes the unresolved one of its source and check), a check that passed resolves it. People
acknowledge and resolve alerts by hand; every change is handed to the notifier (webhooks).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import AlertRow, DocumentRow, IngestRunRow, SourceRow, SourceSchemaRow, utc_iso, utcnow
from bastion.core.errors import WorkspaceError
from bastion.monitoring.checks import Findings

if TYPE_CHECKING:
    from bastion.monitoring.notify import Notifier

# alerts on a cited source that make an answer carry a warning
ANSWER_WARNING_KINDS = ("freshness", "quality", "parse", "drift")

Event = tuple[str, dict[str, Any]]  # (opened | resolved | acknowledged, the alert)


def alert_dict(a: AlertRow) -> dict[str, Any]:
    ts = utc_iso
    return {"id": a.id, "source": a.source, "kind": a.kind, "check": a.check_name, "severity": a.severity,
            "status": a.status, "message": a.message, "detail": a.detail, "run_id": a.run_id,
            "opened_at": ts(a.opened_at), "last_seen_at": ts(a.last_seen_at),
            "acknowledged_at": ts(a.acknowledged_at), "acknowledged_by": a.acknowledged_by,
            "resolved_at": ts(a.resolved_at), "resolved_by": a.resolved_by}


class AlertBook:
    """The catalog's alerts, and the sync history they are read with."""

    def __init__(self, catalog: Catalog, notifier: Notifier | None = None):
        self.catalog, self.notifier = catalog, notifier

    # -- from findings -------------------------------------------------------------------------
    def reconcile(self, source: str, run_id: int | None, results: Findings) -> None:
        """Open, refresh or resolve the source's alert of each evaluated check."""
        events: list[Event] = []
        now = utcnow()
        with self.catalog.session(write=True) as s:
            for check, finding in results.items():
                row = s.scalar(select(AlertRow).where(AlertRow.source == source, AlertRow.check_name == check,
                                                      AlertRow.status != "resolved"))
                if finding is not None and row is None:
                    row = AlertRow(source=source, kind=finding.kind, check_name=check, severity=finding.severity,
                                   status="open", message=finding.message, detail=finding.detail, run_id=run_id,
                                   opened_at=now, last_seen_at=now)
                    s.add(row)
                    s.flush()
                    events.append(("opened", alert_dict(row)))
                elif finding is not None and row is not None:
                    row.kind, row.severity, row.message, row.detail = finding.kind, finding.severity, finding.message, finding.detail
                    row.last_seen_at, row.run_id = now, run_id
                elif row is not None:
                    row.status, row.resolved_at = "resolved", now
                    events.append(("resolved", alert_dict(row)))
        self._notify(events)

    def _notify(self, events: list[Event]) -> None:
        if self.notifier is not None and events:
            self.notifier.enqueue(events)

    # -- by hand -------------------------------------------------------------------------------
    def acknowledge(self, alert_id: int, by: str) -> dict[str, Any]:
        return self._transition(alert_id, by, "acknowledged")

    def resolve(self, alert_id: int, by: str) -> dict[str, Any]:
        """Resolve by hand; for a schema alert this accepts the new columns as the source's schema."""
        return self._transition(alert_id, by, "resolved")

    def _transition(self, alert_id: int, by: str, to: str) -> dict[str, Any]:
        with self.catalog.session(write=True) as s:
            # an id past the id column's range (INTEGER on PostgreSQL) names no alert
            row = s.get(AlertRow, alert_id) if 0 < alert_id < 2**31 else None
            if row is None:
                raise WorkspaceError(f"no alert {alert_id}")
            if row.status == "resolved":
                raise WorkspaceError(f"alert {alert_id} is already resolved")
            if to == "acknowledged":
                if row.status == "acknowledged":
                    raise WorkspaceError(f"alert {alert_id} is already acknowledged")
                row.status, row.acknowledged_at, row.acknowledged_by = "acknowledged", utcnow(), by
            else:
                row.status, row.resolved_at, row.resolved_by = "resolved", utcnow(), by
                if row.kind == "schema" and row.detail.get("object") is not None:
                    schema = s.get(SourceSchemaRow, (row.source, row.detail["object"]))
                    if schema is not None:
                        schema.columns, schema.accepted_at = row.detail["after"], utcnow()
            out = alert_dict(row)
        self._notify([(to, out)])
        return out

    # -- queries -------------------------------------------------------------------------------
    def alerts(self, *, source: str | None = None, status: str | None = None, include_resolved: bool = False,
               limit: int = 1000) -> list[dict[str, Any]]:
        with self.catalog.session() as s:
            q = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
            if source:
                q = q.where(AlertRow.source == source)
            if status:
                q = q.where(AlertRow.status == status)
            elif not include_resolved:
                q = q.where(AlertRow.status != "resolved")
            return [alert_dict(a) for a in s.scalars(q)]

    def status(self, source: str | None = None, include_resolved: bool = False) -> dict[str, Any]:
        """Alerts plus each source's last sync and live size (``bastion monitor status --json``)."""
        with self.catalog.session() as s:
            names = list(s.scalars(select(SourceRow.name).order_by(SourceRow.name)))
        if source is not None and source not in names:
            raise WorkspaceError(f"no source named {source!r}")
        alerts = self.alerts(source=source, include_resolved=include_resolved)
        sources = [self._source_status(name, alerts) for name in (names if source is None else [source])]
        pending = self.notifier.pending() if self.notifier is not None else []
        return {"alerts": alerts, "sources": sources, "undelivered_webhooks": len(pending)}

    def _source_status(self, name: str, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        hist = self.history(name, limit=10)
        last = hist[0] if hist else None
        state: dict[str, Any] = next((h["metrics"]["state"] for h in hist if h["metrics"].get("state")), {})
        return {"name": name, "last_run": last and {k: last[k] for k in ("run_id", "status", "finished_at")},
                "documents": state.get("documents"), "chunks": state.get("chunks"),
                "open_alerts": sum(1 for a in alerts if a["source"] == name and a["status"] != "resolved")}

    def warnings_for(self, doc_ids: list[str]) -> list[dict[str, Any]]:
        """Unresolved freshness / quality / parse / drift alerts of the sources these documents come from."""
        if not doc_ids:
            return []
        with self.catalog.session() as s:
            sources = set(s.scalars(select(SourceRow.name).join(DocumentRow, DocumentRow.source_id == SourceRow.id)
                                    .where(DocumentRow.id.in_(set(doc_ids)))))
            if not sources:
                return []
            rows = s.scalars(select(AlertRow).where(AlertRow.source.in_(sources), AlertRow.status != "resolved",
                                                    AlertRow.kind.in_(ANSWER_WARNING_KINDS)).order_by(AlertRow.id))
            return [{"source": a.source, "kind": a.kind, "alert_id": a.id, "message": a.message} for a in rows]

    def history(self, source: str, limit: int = 30) -> list[dict[str, Any]]:
        """The source's syncs, newest first, with what each measured."""
        with self.catalog.session() as s:
            if s.scalar(select(SourceRow.id).where(SourceRow.name == source)) is None:
                raise WorkspaceError(f"no source named {source!r}")
            runs = s.scalars(select(IngestRunRow).where(IngestRunRow.source == source)
                             .order_by(IngestRunRow.id.desc()).limit(limit))
            return [{"run_id": r.id, "status": r.status, "started_at": utc_iso(r.started_at),
                     "finished_at": utc_iso(r.finished_at),
                     "embedder_id": r.embedder_id, "counts": r.counts or {},
                     "metrics": {k: v for k, v in (r.metrics or {}).items() if k != "centroid"}} for r in runs]
