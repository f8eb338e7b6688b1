"""The checks over a source's syncs: each one reads the catalog and returns findings.

A check returns ``{check name: Finding | None}``: a finding when it fires, None when it passes,
nothing for a check it cannot judge (no new text to measure, no history yet). The table of
checks is in :mod:`bastion.monitoring.monitor`; :class:`Checks` runs them for one source, and
:func:`gate` decides, before a sync is published, whether it is quarantined.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.catalog.db import Catalog
from bastion.catalog.models import (
    DocumentRow,
    DocumentVersionRow,
    EmbedderCanaryRow,
    IngestRunRow,
    SourceRow,
    SourceSchemaRow,
    utc_iso,
    utcnow,
)
from bastion.core.config import MonitoringConfig, MonitorThresholds
from bastion.core.durations import parse_duration
from bastion.embedding.protocol import Embedder

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
FINISHED = ("completed", "quarantined", "failed")


@dataclass
class Finding:
    """What a check that fires reports; it opens (or refreshes) the alert of its check."""

    kind: str
    severity: str  # warn | hard
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


Findings = dict[str, "Finding | None"]


class PastRun(NamedTuple):
    """A finished sync of the source, as the checks compare against it."""

    id: int
    status: str
    finished_at: datetime | None
    embedder_id: str | None
    metrics: dict[str, Any]


@dataclass
class SyncFacts:
    """The sync being judged, read in one catalog session."""

    run_id: int
    status: str
    errors: list[dict[str, Any]]
    metrics: dict[str, Any]
    state: dict[str, Any] | None
    embedder_id: str | None

    @property
    def delta(self) -> dict[str, Any]:
        return self.metrics.get("delta") or {}


def _cos(a: Any, b: Any) -> float:
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


# -- the quarantine gate (called by the sync pipeline before anything is published) ----------
def gate(t: MonitorThresholds, metrics: dict[str, Any]) -> list[str]:
    """Why a sync must not be published (empty: publish it)."""
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


# -- freshness -------------------------------------------------------------------------------
def freshness(t: MonitorThresholds, history: list[PastRun], now: datetime) -> Findings:
    return _sync_age(t, history, now) | _change_age(t, history, now)


def _sync_age(t: MonitorThresholds, history: list[PastRun], now: datetime) -> Findings:
    if not t.sync_sla:
        return {}
    done = [h for h in history if h.status == "completed"]
    if not done:
        return {"freshness.sync": Finding("freshness", "warn", "the source has never synced successfully",
                                          {"sla": t.sync_sla})}
    last = done[0].finished_at
    assert last is not None  # a completed sync has finished
    age = (now - last).total_seconds()
    return {"freshness.sync": Finding(
        "freshness", "warn", f"last successful sync {_age(age)} ago, over its SLA of {t.sync_sla}",
        {"last_sync": utc_iso(last), "age_s": round(age), "sla": t.sync_sla})
        if age > parse_duration(t.sync_sla) else None}


def _change_age(t: MonitorThresholds, history: list[PastRun], now: datetime) -> Findings:
    if not t.change_sla:
        return {}
    scanned = [h for h in history if h.status in ("completed", "quarantined") and "scan" in h.metrics]
    newest = scanned[0].metrics["scan"].get("newest_change") if scanned else None
    if newest is None:
        return {}
    changed = datetime.fromtimestamp(newest, UTC)
    age = (now - changed.replace(tzinfo=None)).total_seconds()
    return {"freshness.change": Finding(
        "freshness", "warn", f"nothing in the source changed for {_age(age)}, over its SLA of {t.change_sla} "
        "(a stalled feed or an unmounted share?)",
        {"newest_change": changed.isoformat(timespec="seconds"), "age_s": round(age), "sla": t.change_sla})
        if age > parse_duration(t.change_sla) else None}


# -- the sync's outcome, volume, parsing and text quality ---------------------------------------
def sync_checks(t: MonitorThresholds, source: str, run: SyncFacts, history: list[PastRun]) -> Findings:
    out = _sync_failure(run) | _quarantine(source, run) | _removed(t, run)
    if run.status == "completed" and run.state is not None:
        out |= _volume(t, run.run_id, run.state, history)
        out |= _parse_failures(t, run.state) | _garbled(t, run.state) | _empty(t, run.state)
        out |= _duplicates(t, run.delta)
    return out


def _sync_failure(run: SyncFacts) -> Findings:
    if run.status == "interrupted":  # stopped on request (Ctrl-C, SIGTERM): says nothing about the source
        return {}
    if run.status != "failed":
        return {"parse.sync": None}
    reason = next((e["reason"] for e in reversed(run.errors) if e.get("file") is None), "unknown error")
    return {"parse.sync": Finding("parse", "hard", f"the last sync failed: {reason}", {"run_id": run.run_id})}


def _quarantine(source: str, run: SyncFacts) -> Findings:
    if run.status == "completed":
        return {"quarantine": None}
    if run.status != "quarantined":
        return {}
    reasons = run.metrics.get("quarantine") or []
    kind = "volume" if reasons and reasons[0].startswith("volume") else "quality"
    return {"quarantine": Finding(kind, "hard", "sync not published: " + "; ".join(reasons) +
                                  f". The previous state stays live; publish it with `bastion sync {source} --accept`.",
                                  {"run_id": run.run_id, "reasons": reasons})}


def _removed(t: MonitorThresholds, run: SyncFacts) -> Findings:
    d = run.delta
    if run.status not in ("completed", "quarantined") or d.get("removed_ratio") is None:
        return {}
    r = d["removed_ratio"]
    return {"volume.removed": Finding(
        "volume", "warn", f"{d['removed']} of {d['documents_before']} documents ({_pct(r)}) vanished in one sync",
        {"removed": d["removed"], "before": d["documents_before"], "ratio": r}) if r >= t.removed_warn else None}


def _volume(t: MonitorThresholds, run_id: int, state: dict[str, Any], history: list[PastRun]) -> Findings:
    past = [h.metrics["state"] for h in history if h.status == "completed" and h.id != run_id and "state" in h.metrics]
    return {f"volume.{measure}": robust_outlier(measure, state[measure], [p[measure] for p in past], t)
            for measure in ("documents", "chunks")}


def _parse_failures(t: MonitorThresholds, state: dict[str, Any]) -> Findings:
    if state["failed_ratio"] is None:
        return {}
    return {"parse.failures": Finding(
        "parse", "warn", f"{state['failed']} of {state['known']} documents ({_pct(state['failed_ratio'])}) "
        "failed to parse or read", {"failed": state["failed"], "known": state["known"], "ratio": state["failed_ratio"]}
    ) if state["failed"] and state["failed_ratio"] >= t.parse_failure_warn else None}


def _garbled(t: MonitorThresholds, state: dict[str, Any]) -> Findings:
    if state["garbled_ratio"] is None:
        return {}
    return {"quality.garbled": Finding(
        "quality", "warn", f"{_pct(state['garbled_ratio'])} of the live chunks are garbled text "
        "(wrong encoding, mojibake, control characters)", {"ratio": state["garbled_ratio"]}
    ) if state["garbled_ratio"] >= t.garbled_warn else None}


def _empty(t: MonitorThresholds, state: dict[str, Any]) -> Findings:
    if state["empty_ratio"] is None:
        return {}
    return {"quality.empty": Finding(
        "quality", "warn", f"{_pct(state['empty_ratio'])} of the live documents have no text",
        {"ratio": state["empty_ratio"]}) if state["empty_ratio"] >= t.empty_warn else None}


def _duplicates(t: MonitorThresholds, d: dict[str, Any]) -> Findings:
    if (d.get("chunks") or 0) < t.drift_min_chunks or d.get("duplicate_ratio") is None:
        return {}
    return {"quality.duplicates": Finding(
        "quality", "warn", f"{_pct(d['duplicate_ratio'])} of the sync's new chunks repeat another",
        {"ratio": d["duplicate_ratio"]}) if d["duplicate_ratio"] >= t.duplicate_warn else None}


def robust_outlier(measure: str, value: int, past: list[int], t: MonitorThresholds) -> Finding | None:
    """A live total far from its own history: beyond k scaled MADs and a share of the median."""
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


# -- embedding drift --------------------------------------------------------------------------
def centroid(t: MonitorThresholds, run: SyncFacts, history: list[PastRun]) -> Findings:
    written = run.delta.get("chunks") or 0
    if "centroid" not in run.metrics or written < t.drift_min_chunks:
        return {}
    prev = next((h for h in history if h.id != run.run_id and h.status == "completed" and h.embedder_id == run.embedder_id
                 and "centroid" in h.metrics and (h.metrics.get("delta") or {}).get("chunks", 0) >= t.drift_min_chunks),
                None)
    if prev is None:
        return {}
    cos = _cos(run.metrics["centroid"], prev.metrics["centroid"])
    return {"drift.centroid": Finding(
        "drift", "warn", f"the new text's embeddings moved away from the previous sync's (centroid cosine "
        f"{cos:.3f} < {t.centroid_min_cosine}): different content, or a different model",
        {"cosine": round(cos, 4), "previous_run": prev.id}) if cos < t.centroid_min_cosine else None}


def live_state(s: Session, source_id: int) -> dict[str, Any]:
    """The live state of a source: documents, chunks, failures, text quality of current versions."""
    rows = s.execute(select(DocumentRow.status, DocumentRow.error, DocumentVersionRow.chunk_count,
                            DocumentVersionRow.size, DocumentVersionRow.stats)
                     .outerjoin(DocumentVersionRow, DocumentVersionRow.id == DocumentRow.current_version_id)
                     .where(DocumentRow.source_id == source_id, DocumentRow.status != "deleted")).all()
    live = [r for r in rows if r.chunk_count is not None]
    failed = sum(1 for r in rows if r.error)
    measured = [r.stats for r in live if r.stats]
    chunks = sum(st["chunks"] for st in measured)
    return {
        "documents": len(live), "chunks": sum(r.chunk_count or 0 for r in live),
        "bytes": sum(r.size or 0 for r in live), "known": len(rows), "failed": failed,
        "failed_ratio": _ratio(failed, len(rows)),
        "empty_ratio": _ratio(sum(1 for st in measured if not st["chars"]), len(measured)),
        "garbled_ratio": _ratio(sum(st["garbled"] for st in measured), chunks),
        "languages": _languages(measured),
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _languages(measured: list[dict[str, Any]]) -> dict[str, int]:
    """Chunks per language over the documents' stats."""
    langs: dict[str, int] = {}
    for st in measured:
        for k, v in st.get("languages", {}).items():
            langs[k] = langs.get(k, 0) + v
    return langs


def _freshness_at(s: Session, source: str, run: IngestRunRow, metrics: dict[str, Any]) -> dict[str, Any]:
    """At this sync: time since the previous successful one, and age of the newest change in the source."""
    prev = s.scalar(select(func.max(IngestRunRow.finished_at)).where(
        IngestRunRow.source == source, IngestRunRow.status == "completed", IngestRunRow.id < run.id))
    done = run.finished_at or utcnow()
    newest = (metrics.get("scan") or {}).get("newest_change")
    return {"since_previous_sync_s": round((done - prev).total_seconds()) if prev else None,
            "newest_change_age_s": round(done.replace(tzinfo=UTC).timestamp() - newest)
            if newest is not None else None}


class Checks:
    """Runs every check for a source against the catalog (schema and canary checks also record)."""

    def __init__(self, catalog: Catalog, config: MonitoringConfig):
        self.catalog, self.config = catalog, config

    def gate(self, source: str, metrics: dict[str, Any]) -> list[str]:
        return gate(self.config.for_source(source), metrics)

    def latest_run_id(self, source: str) -> int | None:
        """The source's most recent finished (or failed / quarantined) sync; running and interrupted
        ones do not count."""
        with self.catalog.session() as s:
            run_id: int | None = s.scalar(select(func.max(IngestRunRow.id)).where(
                IngestRunRow.source == source, IngestRunRow.status.in_(FINISHED)))
            return run_id

    def evaluate(self, source: str, run_id: int | None, now: datetime, embedder: Embedder | None) -> Findings:
        """Every check this sync (None: only the clock's) lets us judge, in a fixed order."""
        t = self.config.for_source(source)
        run, history = self._read(source, run_id)
        results = freshness(t, history, now)
        if run is None:
            return results
        results |= sync_checks(t, source, run, history)
        results |= self.schema(source, run.metrics.get("schema") or {}, run.status,
                               accept=bool(run.metrics.get("accepted")))
        if embedder is not None and run.status == "completed":
            results |= self.canary(t, embedder)
            results |= centroid(t, run, history)
        return results

    def _read(self, source: str, run_id: int | None) -> tuple[SyncFacts | None, list[PastRun]]:
        """The sync and the source's last 50 finished ones; a completed sync's metrics gain the live state."""
        with self.catalog.session(write=True) as s:  # writes the live state into the run's metrics
            run = s.get(IngestRunRow, run_id) if run_id else None
            runs = list(s.scalars(select(IngestRunRow).where(IngestRunRow.source == source, IngestRunRow.status.in_(FINISHED))
                             .order_by(IngestRunRow.id.desc()).limit(50)))
            facts = None
            if run is not None:
                src = s.scalar(select(SourceRow).where(SourceRow.name == source))
                state = live_state(s, src.id) if src else None
                metrics = dict(run.metrics or {})
                if state is not None and run.status == "completed":
                    metrics["state"] = state
                    metrics["freshness"] = _freshness_at(s, source, run, metrics)
                    run.metrics = metrics
                facts = SyncFacts(run.id, run.status, list(run.errors or []), metrics, state, run.embedder_id)
            history = [PastRun(r.id, r.status, r.finished_at, r.embedder_id, r.metrics or {}) for r in runs]
            return facts, history

    def schema(self, source: str, observed: dict[str, list[str]], status: str, accept: bool) -> Findings:
        """Columns of each table / CSV / sheet against the accepted ones (recorded on first sight)."""
        out: Findings = {}
        with self.catalog.session(write=True) as s:
            for obj, cols in observed.items():
                row = s.get(SourceSchemaRow, (source, obj))
                if row is None or (accept and status == "completed"):
                    if row is None:
                        s.add(SourceSchemaRow(source=source, object=obj, columns=list(cols)))
                    else:
                        row.columns, row.accepted_at = list(cols), utcnow()
                    out[f"schema:{obj}"] = None
                elif list(row.columns) == list(cols):
                    out[f"schema:{obj}"] = None
                else:
                    out[f"schema:{obj}"] = _schema_change(obj, list(row.columns), list(cols))
        return out

    def canary(self, t: MonitorThresholds, embedder: Embedder) -> Findings:
        """The probe sentences re-embedded against their vectors of the embedder's first use."""
        vectors = np.asarray(embedder.embed_passages(list(CANARY_SENTENCES)), dtype=np.float32)
        with self.catalog.session(write=True) as s:
            row = s.get(EmbedderCanaryRow, embedder.id)
            if row is None:
                s.add(EmbedderCanaryRow(embedder_id=embedder.id, vectors=vectors.tobytes(), dimension=vectors.shape[1]))
                return {"drift.canary": None}
            if row.dimension != vectors.shape[1]:
                return {"drift.canary": Finding("drift", "hard", f"embedder {embedder.id!r} now returns "
                                                f"{vectors.shape[1]} dimensions, first seen with {row.dimension}", {})}
            first = np.frombuffer(row.vectors, dtype=np.float32).reshape(-1, row.dimension)
        worst = min(_cos(a, b) for a, b in zip(first, vectors))
        return {"drift.canary": Finding(
            "drift", "hard", f"embedder {embedder.id!r} no longer embeds like it did (probe cosine {worst:.3f} < "
            f"{t.canary_min_cosine}): the model behind it changed, so new vectors do not match the index; "
            "rebuild with `bastion rebuild` or restore the model", {"min_cosine": round(worst, 4)}
        ) if worst < t.canary_min_cosine else None}


def _schema_change(obj: str, before: list[str], after: list[str]) -> Finding:
    removed = [c for c in before if c not in after]
    added = [c for c in after if c not in before]
    what = "; ".join(x for x in (f"removed {removed}" if removed else "", f"added {added}" if added else "",
                                 "" if removed or added else "columns reordered") if x)
    return Finding("schema", "warn", f"schema of {obj} changed: {what}",
                   {"object": obj, "before": before, "after": after, "removed": removed, "added": added})
