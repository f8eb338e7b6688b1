"""Checks over every source's syncs, and the alerts they keep (open -> acknowledged -> resolved).

Each evaluation covers a set of checks; a covered check that fires opens an alert (or
refreshes the unresolved one of the same source and check), a covered check that passes
resolves it. Checks an evaluation cannot judge (no new text to measure, no history yet)
leave their alert as it is. What each check reads:

========================  ======================================================  ==========
check                     measure                                                 kind
========================  ======================================================  ==========
freshness.sync            time since the source's last successful sync            freshness
freshness.change          time since the newest change inside the source          freshness
volume.removed            share of the source's documents one sync removed        volume
volume.documents/.chunks  live totals against their own history (median / MAD)    volume
schema:<object>           columns of a table / CSV / sheet against the accepted   schema
parse.failures            share of the source's documents that fail to parse      parse
parse.sync                the last sync failed as a whole                         parse
quality.garbled / .empty  share of live chunks garbled / live documents empty     quality
quality.duplicates        share of a sync's new chunks that repeat another        quality
drift.canary              probe sentences re-embedded vs their first vectors      drift
drift.centroid            centroid of a sync's new vectors vs the previous one's  drift
quarantine                the last sync was not published (why, and how to)       volume / quality
========================  ======================================================  ==========
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import func, select

from bastion.catalog.db import Catalog
from bastion.catalog.models import (
    AlertRow,
    DocumentRow,
    DocumentVersionRow,
    EmbedderCanaryRow,
    IngestRunRow,
    SourceRow,
    SourceSchemaRow,
    utc_iso,
    utcnow,
)
from bastion.core.config import MonitoringConfig, MonitorThresholds, parse_duration
from bastion.core.errors import WorkspaceError

# alerts on a cited source that make an answer carry a warning
ANSWER_WARNING_KINDS = ("freshness", "quality", "parse", "drift")

# fixed probe sentences (English and Chinese): their vectors from an embedder's first use are
# kept, and each sync re-embeds them; a model swapped behind the same id moves them
CANARY_SENTENCES = (
    "The travel policy caps hotel costs at 200 euros per night.",
    "Quarterly revenue grew by four percent compared with last year.",
    "Reset your password from the account settings page.",
    "The warranty covers manufacturing defects for two years.",
    "员工每年享有十五天带薪年假。",
    "报销申请须在出差结束后三十天内提交。",
    "请勿将客户数据发送到外部邮箱。",
    "新产品将于下个季度在上海发布。",
)


@dataclass
class Finding:
    kind: str
    severity: str  # warn | hard
    message: str
    detail: dict = field(default_factory=dict)


def alert_dict(a: AlertRow) -> dict:
    ts = utc_iso
    return {"id": a.id, "source": a.source, "kind": a.kind, "check": a.check_name, "severity": a.severity,
            "status": a.status, "message": a.message, "detail": a.detail, "run_id": a.run_id,
            "opened_at": ts(a.opened_at), "last_seen_at": ts(a.last_seen_at),
            "acknowledged_at": ts(a.acknowledged_at), "acknowledged_by": a.acknowledged_by,
            "resolved_at": ts(a.resolved_at), "resolved_by": a.resolved_by}


def _cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na and nb else 0.0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


class Monitor:
    """Evaluates checks and keeps alerts for one workspace."""

    def __init__(self, catalog: Catalog, config: MonitoringConfig, notifier=None):
        self.catalog, self.config, self.notifier = catalog, config, notifier

    # -- the quarantine gate (called by the sync pipeline before anything is published) ----
    def gate(self, source: str, metrics: dict) -> list[str]:
        t = self.config.for_source(source)
        d = metrics.get("delta", {})
        reasons = []
        before = d.get("documents_before") or 0
        if t.quarantine_removed is not None and before >= t.quarantine_min_documents \
                and (d.get("removed_ratio") or 0) >= t.quarantine_removed:
            reasons.append(f"volume: {d['removed']} of {before} documents ({_pct(d['removed_ratio'])}) vanished from "
                           f"the source (quarantine_removed {_pct(t.quarantine_removed)})")
        if t.quarantine_garbled is not None and (d.get("chunks") or 0) and \
                d.get("examined", 0) >= min(t.quarantine_min_documents, max(before, 1)) and \
                (d.get("garbled_ratio") or 0) >= t.quarantine_garbled:
            reasons.append(f"quality: {d['garbled_chunks']} of {d['chunks']} new chunks ({_pct(d['garbled_ratio'])}) "
                           f"are garbled text (quarantine_garbled {_pct(t.quarantine_garbled)})")
        return reasons

    # -- evaluation -------------------------------------------------------------------------
    def after_sync(self, source: str, run_id: int, embedder=None, now: datetime | None = None) -> list[dict]:
        """Evaluate a finished sync (any status); returns the source's unresolved alerts."""
        results = self._evaluate(source, run_id, now or utcnow(), embedder)
        self._reconcile(source, run_id, results)
        return self.alerts(source=source)

    def run(self, now: datetime | None = None) -> list[dict]:
        """Evaluate every source now (freshness moves with the clock); returns unresolved alerts."""
        now = now or utcnow()
        with self.catalog.session() as s:
            names = list(s.scalars(select(SourceRow.name).order_by(SourceRow.name)))
        for name in names:
            run_id = self.latest_run_id(name)
            self._reconcile(name, run_id, self._evaluate(name, run_id, now, None))
        if self.notifier is not None:  # retry what earlier events could not deliver, off this call's path
            self.notifier.deliver_in_background()
        return self.alerts()

    def latest_run_id(self, source: str) -> int | None:
        """The source's most recent finished (or failed / quarantined) sync."""
        with self.catalog.session() as s:
            return s.scalar(select(func.max(IngestRunRow.id)).where(IngestRunRow.source == source,
                                                                    IngestRunRow.status != "running"))

    def _evaluate(self, source: str, run_id: int | None, now: datetime, embedder) -> dict[str, Finding | None]:
        t = self.config.for_source(source)
        with self.catalog.session(write=True) as s:  # writes the live state into the run's metrics
            run = s.get(IngestRunRow, run_id) if run_id else None
            runs = list(s.scalars(select(IngestRunRow).where(IngestRunRow.source == source,
                                                             IngestRunRow.status.in_(["completed", "quarantined", "failed"]))
                                  .order_by(IngestRunRow.id.desc()).limit(50)))
            src = s.scalar(select(SourceRow).where(SourceRow.name == source))
            state = self.state(s, src.id) if src else None
            metrics = dict(run.metrics or {}) if run else {}
            if run is not None and state is not None and run.status == "completed":
                metrics["state"] = state
                metrics["freshness"] = self._freshness_at(s, source, run, metrics)
                run.metrics = metrics
            run_status = run.status if run else None
            run_errors = list(run.errors or []) if run else []
            run_embedder = run.embedder_id if run else None
            history = [(r.id, r.status, r.finished_at, r.embedder_id, r.metrics or {}) for r in runs]
        results: dict[str, Finding | None] = {}
        results |= self._freshness(t, history, now)
        if run is None:
            return results
        results |= self._run_checks(t, source, run_id, run_status, run_errors, metrics, state, history)
        results |= self._schema(source, metrics.get("schema") or {}, run_status, accept=bool(metrics.get("accepted")))
        if embedder is not None and run_status == "completed":
            results |= self._canary(t, embedder)
            results |= self._centroid(t, run_id, run_embedder, metrics, history)
        return results

    @staticmethod
    def _freshness_at(s, source: str, run: IngestRunRow, metrics: dict) -> dict:
        """At this sync: time since the previous successful one, and age of the newest change in the source."""
        prev = s.scalar(select(func.max(IngestRunRow.finished_at)).where(
            IngestRunRow.source == source, IngestRunRow.status == "completed", IngestRunRow.id < run.id))
        done = run.finished_at or utcnow()
        newest = (metrics.get("scan") or {}).get("newest_change")
        return {"since_previous_sync_s": round((done - prev).total_seconds()) if prev else None,
                "newest_change_age_s": round(done.replace(tzinfo=timezone.utc).timestamp() - newest)
                if newest is not None else None}

    def state(self, s, source_id: int) -> dict:
        """The live state of a source: documents, chunks, failures, text quality of current versions."""
        rows = s.execute(select(DocumentRow.status, DocumentRow.error, DocumentVersionRow.chunk_count,
                                DocumentVersionRow.size, DocumentVersionRow.stats)
                         .outerjoin(DocumentVersionRow, DocumentVersionRow.id == DocumentRow.current_version_id)
                         .where(DocumentRow.source_id == source_id, DocumentRow.status != "deleted")).all()
        live = [r for r in rows if r.chunk_count is not None]
        failed = sum(1 for r in rows if r.error)
        measured = [r.stats for r in live if r.stats]
        chunks = sum(st["chunks"] for st in measured)
        langs: dict[str, int] = {}
        for st in measured:
            for k, v in st.get("languages", {}).items():
                langs[k] = langs.get(k, 0) + v
        return {
            "documents": len(live), "chunks": sum(r.chunk_count or 0 for r in live),
            "bytes": sum(r.size or 0 for r in live), "known": len(rows), "failed": failed,
            "failed_ratio": round(failed / len(rows), 4) if rows else None,
            "empty_ratio": round(sum(1 for st in measured if not st["chars"]) / len(measured), 4) if measured else None,
            "garbled_ratio": round(sum(st["garbled"] for st in measured) / chunks, 4) if chunks else None,
            "languages": langs,
        }

    # -- the checks ----------------------------------------------------------------------
    def _freshness(self, t: MonitorThresholds, history: list, now: datetime) -> dict[str, Finding | None]:
        out: dict[str, Finding | None] = {}
        done = [h for h in history if h[1] == "completed"]
        if t.sync_sla:
            sla = parse_duration(t.sync_sla)
            if not done:
                out["freshness.sync"] = Finding("freshness", "warn", "the source has never synced successfully",
                                                {"sla": t.sync_sla})
            else:
                age = (now - done[0][2]).total_seconds()
                out["freshness.sync"] = Finding(
                    "freshness", "warn", f"last successful sync {_age(age)} ago, over its SLA of {t.sync_sla}",
                    {"last_sync": utc_iso(done[0][2]), "age_s": round(age), "sla": t.sync_sla}) if age > sla else None
        if t.change_sla:
            scanned = [h for h in history if h[1] in ("completed", "quarantined") and "scan" in h[4]]
            newest = scanned[0][4]["scan"].get("newest_change") if scanned else None
            if newest is not None:
                age = (now - datetime.fromtimestamp(newest, timezone.utc).replace(tzinfo=None)).total_seconds()
                sla = parse_duration(t.change_sla)
                out["freshness.change"] = Finding(
                    "freshness", "warn", f"nothing in the source changed for {_age(age)}, over its SLA of {t.change_sla} "
                    "(a stalled feed or an unmounted share?)",
                    {"newest_change": datetime.fromtimestamp(newest, timezone.utc).isoformat(timespec="seconds"),
                     "age_s": round(age), "sla": t.change_sla}) if age > sla else None
        return out

    def _run_checks(self, t: MonitorThresholds, source: str, run_id: int, status: str, errors: list, metrics: dict,
                    state: dict | None, history: list) -> dict[str, Finding | None]:
        out: dict[str, Finding | None] = {}
        d = metrics.get("delta") or {}
        if status == "failed":
            reason = next((e["reason"] for e in reversed(errors) if e.get("file") is None), "unknown error")
            out["parse.sync"] = Finding("parse", "hard", f"the last sync failed: {reason}", {"run_id": run_id})
        else:
            out["parse.sync"] = None
        if status == "quarantined":
            reasons = metrics.get("quarantine") or []
            kind = "volume" if reasons and reasons[0].startswith("volume") else "quality"
            out["quarantine"] = Finding(kind, "hard", "sync not published: " + "; ".join(reasons) +
                                        f". The previous state stays live; publish it with `bastion sync {source} --accept`.",
                                        {"run_id": run_id, "reasons": reasons})
        elif status == "completed":
            out["quarantine"] = None
        if status in ("completed", "quarantined") and d.get("removed_ratio") is not None:
            r = d["removed_ratio"]
            out["volume.removed"] = Finding(
                "volume", "warn", f"{d['removed']} of {d['documents_before']} documents ({_pct(r)}) vanished in one sync",
                {"removed": d["removed"], "before": d["documents_before"], "ratio": r}) if r >= t.removed_warn else None
        if status == "completed" and state is not None:
            past = [h[4]["state"] for h in history if h[1] == "completed" and h[0] != run_id and "state" in h[4]]
            for measure in ("documents", "chunks"):
                out[f"volume.{measure}"] = _robust(measure, state[measure], [p[measure] for p in past], t)
            if state["failed_ratio"] is not None:
                out["parse.failures"] = Finding(
                    "parse", "warn", f"{state['failed']} of {state['known']} documents ({_pct(state['failed_ratio'])}) "
                    "failed to parse or read", {"failed": state["failed"], "known": state["known"],
                                                "ratio": state["failed_ratio"]}
                ) if state["failed"] and state["failed_ratio"] >= t.parse_failure_warn else None
            if state["garbled_ratio"] is not None:
                out["quality.garbled"] = Finding(
                    "quality", "warn", f"{_pct(state['garbled_ratio'])} of the live chunks are garbled text "
                    "(wrong encoding, mojibake, control characters)", {"ratio": state["garbled_ratio"]}
                ) if state["garbled_ratio"] >= t.garbled_warn else None
            if state["empty_ratio"] is not None:
                out["quality.empty"] = Finding(
                    "quality", "warn", f"{_pct(state['empty_ratio'])} of the live documents have no text",
                    {"ratio": state["empty_ratio"]}) if state["empty_ratio"] >= t.empty_warn else None
            if (d.get("chunks") or 0) >= t.drift_min_chunks and d.get("duplicate_ratio") is not None:
                out["quality.duplicates"] = Finding(
                    "quality", "warn", f"{_pct(d['duplicate_ratio'])} of the sync's new chunks repeat another",
                    {"ratio": d["duplicate_ratio"]}) if d["duplicate_ratio"] >= t.duplicate_warn else None
        return out

    def _schema(self, source: str, observed: dict[str, list], status: str, accept: bool) -> dict[str, Finding | None]:
        out: dict[str, Finding | None] = {}
        with self.catalog.session(write=True) as s:
            for obj, cols in observed.items():
                row = s.get(SourceSchemaRow, (source, obj))
                if row is None or (accept and status == "completed"):
                    if row is None:
                        s.add(SourceSchemaRow(source=source, object=obj, columns=list(cols)))
                    else:
                        row.columns, row.accepted_at = list(cols), utcnow()
                    out[f"schema:{obj}"] = None
                    continue
                if list(row.columns) == list(cols):
                    out[f"schema:{obj}"] = None
                    continue
                before, after = list(row.columns), list(cols)
                removed = [c for c in before if c not in after]
                added = [c for c in after if c not in before]
                what = "; ".join(x for x in (f"removed {removed}" if removed else "", f"added {added}" if added else "",
                                             "" if removed or added else "columns reordered") if x)
                out[f"schema:{obj}"] = Finding("schema", "warn", f"schema of {obj} changed: {what}",
                                               {"object": obj, "before": before, "after": after,
                                                "removed": removed, "added": added})
        return out

    def _canary(self, t: MonitorThresholds, embedder) -> dict[str, Finding | None]:
        vectors = np.asarray(embedder.embed_passages(list(CANARY_SENTENCES)), dtype=np.float32)
        with self.catalog.session(write=True) as s:
            row = s.get(EmbedderCanaryRow, embedder.id)
            if row is None or row.dimension != vectors.shape[1]:
                if row is None:
                    s.add(EmbedderCanaryRow(embedder_id=embedder.id, vectors=vectors.tobytes(), dimension=vectors.shape[1]))
                else:
                    return {"drift.canary": Finding("drift", "hard", f"embedder {embedder.id!r} now returns "
                                                    f"{vectors.shape[1]} dimensions, first seen with {row.dimension}", {})}
                return {"drift.canary": None}
            first = np.frombuffer(row.vectors, dtype=np.float32).reshape(-1, row.dimension)
        cosines = [_cos(a, b) for a, b in zip(first, vectors)]
        worst = min(cosines)
        return {"drift.canary": Finding(
            "drift", "hard", f"embedder {embedder.id!r} no longer embeds like it did (probe cosine {worst:.3f} < "
            f"{t.canary_min_cosine}): the model behind it changed, so new vectors do not match the index; "
            "rebuild with `bastion rebuild` or restore the model", {"min_cosine": round(worst, 4)}
        ) if worst < t.canary_min_cosine else None}

    def _centroid(self, t: MonitorThresholds, run_id: int, embedder_id: str, metrics: dict, history: list) -> dict:
        written = (metrics.get("delta") or {}).get("chunks") or 0
        if "centroid" not in metrics or written < t.drift_min_chunks:
            return {}
        prev = next((h for h in history if h[0] != run_id and h[1] == "completed" and h[3] == embedder_id
                     and "centroid" in h[4] and (h[4].get("delta") or {}).get("chunks", 0) >= t.drift_min_chunks), None)
        if prev is None:
            return {}
        cos = _cos(metrics["centroid"], prev[4]["centroid"])
        return {"drift.centroid": Finding(
            "drift", "warn", f"the new text's embeddings moved away from the previous sync's (centroid cosine "
            f"{cos:.3f} < {t.centroid_min_cosine}): different content, or a different model",
            {"cosine": round(cos, 4), "previous_run": prev[0]}) if cos < t.centroid_min_cosine else None}

    # -- alerts ----------------------------------------------------------------------------
    def _reconcile(self, source: str, run_id: int | None, results: dict[str, Finding | None]) -> None:
        events = []
        now = utcnow()
        with self.catalog.session(write=True) as s:
            for check, finding in results.items():
                row = s.scalar(select(AlertRow).where(AlertRow.source == source, AlertRow.check_name == check,
                                                      AlertRow.status != "resolved"))
                if finding is not None:
                    if row is None:
                        row = AlertRow(source=source, kind=finding.kind, check_name=check, severity=finding.severity,
                                       status="open", message=finding.message, detail=finding.detail, run_id=run_id,
                                       opened_at=now, last_seen_at=now)
                        s.add(row)
                        s.flush()
                        events.append(("opened", alert_dict(row)))
                    else:
                        row.kind, row.severity, row.message, row.detail = finding.kind, finding.severity, finding.message, finding.detail
                        row.last_seen_at, row.run_id = now, run_id
                elif row is not None:
                    row.status, row.resolved_at = "resolved", now
                    events.append(("resolved", alert_dict(row)))
        self._notify(events)

    def _notify(self, events: list[tuple[str, dict]]) -> None:
        if self.notifier is not None and events:
            self.notifier.enqueue(events)

    def alerts(self, *, source: str | None = None, status: str | None = None, include_resolved: bool = False,
               limit: int = 1000) -> list[dict]:
        with self.catalog.session() as s:
            q = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
            if source:
                q = q.where(AlertRow.source == source)
            if status:
                q = q.where(AlertRow.status == status)
            elif not include_resolved:
                q = q.where(AlertRow.status != "resolved")
            return [alert_dict(a) for a in s.scalars(q)]

    def acknowledge(self, alert_id: int, by: str) -> dict:
        return self._transition(alert_id, by, "acknowledged")

    def resolve(self, alert_id: int, by: str) -> dict:
        """Resolve by hand; for a schema alert this accepts the new columns as the source's schema."""
        return self._transition(alert_id, by, "resolved")

    def _transition(self, alert_id: int, by: str, to: str) -> dict:
        with self.catalog.session(write=True) as s:
            row = s.get(AlertRow, alert_id)
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

    def status(self, source: str | None = None, include_resolved: bool = False) -> dict:
        """Alerts plus each source's last sync and live size (``bastion monitor status --json``)."""
        with self.catalog.session() as s:
            names = list(s.scalars(select(SourceRow.name).order_by(SourceRow.name)))
        if source is not None and source not in names:
            raise WorkspaceError(f"no source named {source!r}")
        alerts = self.alerts(source=source, include_resolved=include_resolved)
        sources = []
        for name in names if source is None else [source]:
            hist = self.history(name, limit=10)
            last = hist[0] if hist else None
            state = next((h["metrics"]["state"] for h in hist if h["metrics"].get("state")), {})
            sources.append({"name": name, "last_run": last and {k: last[k] for k in ("run_id", "status", "finished_at")},
                            "documents": state.get("documents"), "chunks": state.get("chunks"),
                            "open_alerts": sum(1 for a in alerts if a["source"] == name and a["status"] != "resolved")})
        pending = self.notifier.pending() if self.notifier is not None else []
        return {"alerts": alerts, "sources": sources, "undelivered_webhooks": len(pending)}

    def warnings_for(self, doc_ids: list[str]) -> list[dict]:
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

    def history(self, source: str, limit: int = 30) -> list[dict]:
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


def _robust(measure: str, value: int, past: list[int], t: MonitorThresholds) -> Finding | None:
    if len(past) < t.min_history:
        return None
    past = past[:20]
    med = statistics.median(past)
    mad = statistics.median(abs(x - med) for x in past)
    limit = max(t.volume_mad_k * 1.4826 * mad, t.volume_deviation * med)
    if abs(value - med) <= limit:
        return None
    direction = "dropped" if value < med else "jumped"
    return Finding("volume", "warn", f"live {measure} {direction} to {value} (usual {med:g}, tolerance ±{limit:.0f} "
                   f"from the last {len(past)} syncs)", {"value": value, "median": med, "mad": mad, "limit": round(limit, 2)})
