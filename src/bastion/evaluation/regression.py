"""Pinned regression sets and promotion: the drift and forgetting audit.

A pinned set runs under its configuration (``current`` unless said otherwise) when it has never
run, when what its answers depend on changed (model file, prompt template, answer or retrieval
settings: :mod:`~bastion.evaluation.fingerprint`), when a sync changed more than ``sync_change``
of a source since its last run, and every ``every`` (``bastion monitor run`` checks). Each run
is compared with the set's baseline run: a pinned metric that dropped by more than
``tolerance``, or any leak, opens an alert of kind ``answer_quality`` (source ``eval:<set>``)
through the monitoring alerts and their webhooks; a run within tolerance resolves it.

Promotion makes a configuration the workspace's default (it writes ``bastion.toml``) only when a
fresh run of a set shows it is not worse than ``current`` on any pinned metric beyond the
tolerance, and never when it leaks; ``force`` overrides the quality check and is audited.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bastion.catalog.models import EvalPinRow, IngestRunRow, utc_iso, utcnow
from bastion.core.durations import parse_duration
from bastion.core.errors import ConfigError
from bastion.evaluation.configs import CURRENT
from bastion.evaluation.fingerprint import fingerprint
from bastion.evaluation.metrics import HIGHER_IS_BETTER
from bastion.monitoring.checks import Finding

if TYPE_CHECKING:
    from bastion.evaluation.runner import Progress
    from bastion.evaluation.service import Evaluation

PINNED_DEFAULT = ("contains", "f1", "citation_accuracy", "abstention_recall_unanswerable",
                  "abstention_recall_forbidden")
ALERT_CHECK = "answer_quality"
ALERT_PREFIX = "eval:"


def regressions(baseline: dict[str, Any], current: dict[str, Any], metrics: Sequence[str],
                tolerance: float) -> list[dict[str, Any]]:
    """The pinned metrics that got worse than ``baseline`` by more than ``tolerance``, and any leak.

    >>> regressions({"f1": 0.60, "leaks": 0}, {"f1": 0.50, "leaks": 0}, ["f1"], 0.05)
    [{'metric': 'f1', 'baseline': 0.6, 'now': 0.5, 'change': -0.1}]
    >>> regressions({"f1": 0.60}, {"f1": 0.58, "leaks": 0}, ["f1"], 0.05)
    []
    """
    out = []
    for m in metrics:
        old, new = baseline.get(m), current.get(m)
        if old is None or new is None:
            continue
        change = round(new - old, 4)
        worse = -change if HIGHER_IS_BETTER.get(m, True) else change
        if worse > tolerance:
            out.append({"metric": m, "baseline": old, "now": new, "change": change})
    if current.get("leaks"):
        out.append({"metric": "leaks", "baseline": baseline.get("leaks"), "now": current["leaks"],
                    "change": current["leaks"] - (baseline.get("leaks") or 0)})
    return out


def _pin_dict(p: EvalPinRow) -> dict[str, Any]:
    return {"set": p.set_name, "config": p.config, "metrics": list(p.metrics), "tolerance": p.tolerance,
            "every": p.every, "sync_change": p.sync_change, "baseline_run_id": p.baseline_run_id,
            "last_run_id": p.last_run_id, "last_run_at": utc_iso(p.last_run_at), "pinned_by": p.pinned_by}


class Regression:
    def __init__(self, evaluation: Evaluation):
        self.ev = evaluation
        self.ws = evaluation.ws

    # -- pins ------------------------------------------------------------------------------
    def pin(self, set_name: str, *, config: str = CURRENT, metrics: Sequence[str] = PINNED_DEFAULT,
            tolerance: float = 0.05, every: str | None = None, sync_change: float = 0.2,
            baseline_run_id: str | None = None, by: str | None = None) -> dict[str, Any]:
        self.ev.sets.get(set_name)
        self.ev.configs.get(config)
        unknown = [m for m in metrics if m not in HIGHER_IS_BETTER]
        if unknown:
            raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; pin some of: {', '.join(sorted(HIGHER_IS_BETTER))}")
        if not 0 <= tolerance <= 1:
            raise ConfigError(f"--tolerance {tolerance}: give a number between 0 and 1")
        if not 0 < sync_change <= 1:
            raise ConfigError(f"--sync-change {sync_change}: give a share between 0 and 1")
        if every is not None:
            parse_duration(every)
        if baseline_run_id is not None:
            self._check_baseline(set_name, config, baseline_run_id)
        with self.ws.catalog.session(write=True) as s:
            row = s.get(EvalPinRow, set_name) or EvalPinRow(set_name=set_name)
            row.config, row.metrics, row.tolerance, row.every = config, list(metrics), tolerance, every
            row.sync_change, row.pinned_by, row.pinned_at = sync_change, by, utcnow()
            row.baseline_run_id = baseline_run_id
            s.merge(row)
        return self.get(set_name)

    def _check_baseline(self, set_name: str, config: str, run_id: str) -> None:
        run = self.ev.runs.get(run_id, items=False)
        if run["set"]["name"] != set_name or config not in {c["name"] for c in run["configs"]}:
            raise ConfigError(f"run {run_id} is not a run of set {set_name!r} under configuration {config!r}")

    def unpin(self, set_name: str) -> None:
        with self.ws.catalog.session(write=True) as s:
            row = s.get(EvalPinRow, set_name)
            if row is None:
                raise ConfigError(f"set {set_name!r} is not pinned")
            s.delete(row)

    def get(self, set_name: str) -> dict[str, Any]:
        with self.ws.catalog.session() as s:
            row = s.get(EvalPinRow, set_name)
            if row is None:
                raise ConfigError(f"set {set_name!r} is not pinned")
            return _pin_dict(row)

    def pins(self) -> list[dict[str, Any]]:
        with self.ws.catalog.session() as s:
            return [_pin_dict(r) for r in s.scalars(select(EvalPinRow).order_by(EvalPinRow.set_name))]

    # -- when a pinned set is due --------------------------------------------------------------
    def why_due(self, pin: dict[str, Any], now: datetime | None = None) -> str | None:
        """Why the pinned set must run now (``first``, ``change``, ``sync:<source>``, ``schedule``), or None."""
        now = now or utcnow()
        if pin["last_run_id"] is None:
            return "first"
        fingerprint_then, last = self._last_run(pin["set"])
        if self._fingerprint(pin) != fingerprint_then:
            return "change"
        changed = self._changed_source(last, pin["sync_change"]) if last else None
        if changed:
            return f"sync:{changed}"
        if pin["every"] and last is not None and (now - last).total_seconds() >= parse_duration(pin["every"]):
            return "schedule"
        return None

    def _fingerprint(self, pin: dict[str, Any]) -> str:
        return fingerprint(self.ws, self.ev.configs.get(pin["config"]))

    def _last_run(self, set_name: str) -> tuple[str | None, datetime | None]:
        """The fingerprint and the (exact) time of the pinned set's last run."""
        with self.ws.catalog.session() as s:
            row = s.get(EvalPinRow, set_name)
            return (row.last_fingerprint, row.last_run_at) if row is not None else (None, None)

    def _changed_source(self, since: datetime, share: float) -> str | None:
        """A source that syncs since ``since`` changed by at least ``share`` of its documents."""
        with self.ws.catalog.session() as s:
            for run in s.scalars(select(IngestRunRow).where(IngestRunRow.finished_at > since,
                                                            IngestRunRow.status == "completed")):
                c = run.counts or {}
                moved = sum(int(c.get(k) or 0) for k in ("documents_added", "documents_updated", "documents_deleted",
                                                          "documents_acl_changed"))
                total = moved + int(c.get("documents_unchanged") or 0)
                if total and moved / total >= share:
                    return run.source
        return None

    # -- running ---------------------------------------------------------------------------
    def run_due(self, *, now: datetime | None = None, only: Sequence[str] | None = None,
                reason: str | None = None, progress: Progress | None = None) -> list[dict[str, Any]]:
        """Run every pinned set that is due (or those in ``only``, for ``reason``); returns what each run found."""
        out = []
        for pin in self.pins():
            if only is not None and pin["set"] not in only:
                continue
            why = reason or self.why_due(pin, now)
            if why is None:
                continue
            out.append(self.run_pin(pin, why, progress))
        return out

    def run_pin(self, pin: dict[str, Any], why: str, progress: Progress | None = None) -> dict[str, Any]:
        run = self.ev.run(pin["set"], [pin["config"]], trigger=why, started_by="monitor", progress=progress)
        config = run["configs"][0]
        metrics = config["metrics"]
        baseline_id = pin["baseline_run_id"]
        baseline = self.ev.runs.get(baseline_id, items=False)["configs"][0]["metrics"] if baseline_id else None
        # with no baseline yet only a leak counts
        dropped = regressions(baseline or {}, metrics, pin["metrics"] if baseline else [], pin["tolerance"])
        with self.ws.catalog.session(write=True) as s:
            row = s.get(EvalPinRow, pin["set"])
            if row is not None:
                row.last_run_id, row.last_run_at, row.last_fingerprint = run["run_id"], utcnow(), config["fingerprint"]
                if row.baseline_run_id is None and not dropped:
                    row.baseline_run_id = run["run_id"]
        finding = None
        if dropped:
            leak = any(d["metric"] == "leaks" for d in dropped)
            what = ", ".join(f"{d['metric']} {d['baseline']} → {d['now']}" for d in dropped)
            finding = Finding(kind=ALERT_CHECK, severity="hard" if leak else "warn",
                              message=f"answer quality on pinned set {pin['set']!r} ({pin['config']}) dropped beyond "
                                      f"tolerance {pin['tolerance']} after {why}: {what}. See `bastion eval report "
                                      f"{run['run_id']}`; if the change is intended, re-pin with the new baseline.",
                              detail={"run_id": run["run_id"], "baseline_run_id": baseline_id, "trigger": why,
                                      "regressions": dropped})
        self.ws.monitor.book.reconcile(ALERT_PREFIX + pin["set"], None, {ALERT_CHECK: finding})
        return {"set": pin["set"], "config": pin["config"], "trigger": why, "run_id": run["run_id"],
                "baseline_run_id": baseline_id or run["run_id"], "metrics": metrics, "regressions": dropped}

    def after_sync(self, reports: Sequence[Any]) -> list[dict[str, Any]]:
        """Run the pinned sets a sync changed enough (called by ``Workspace.sync``)."""
        results = []
        for pin in self.pins():
            for r in reports:
                moved = r.documents_added + r.documents_updated + r.documents_deleted + r.documents_acl_changed
                total = moved + r.documents_unchanged
                if r.status == "completed" and total and moved / total >= pin["sync_change"]:
                    results.append(self.run_pin(pin, f"sync:{r.source}"))
                    break
        return results

    # -- promotion -------------------------------------------------------------------------
    def promote(self, config: str, set_ref: str, *, tolerance: float = 0.02,
                metrics: Sequence[str] = PINNED_DEFAULT, force: bool = False, by: str | None = None,
                progress: Progress | None = None) -> dict[str, Any]:
        """Run ``set_ref`` under ``current`` and ``config`` and make ``config`` the default if it is no worse."""
        from bastion.evaluation.promote import write_defaults

        if config == CURRENT:
            raise ConfigError(f"{CURRENT!r} is already the workspace's configuration")
        spec = self.ev.configs.get(config)
        if spec.approach == "prompt-only":
            raise ConfigError("a prompt-only configuration answers without sources and cannot be the workspace's default")
        run = self.ev.run(set_ref, [CURRENT, config], trigger="promote", started_by=by, progress=progress)
        now, cand = run["configs"][0]["metrics"], run["configs"][1]["metrics"]
        dropped = regressions(now, cand, metrics, tolerance)
        decision = {"config": config, "run_id": run["run_id"], "tolerance": tolerance, "metrics": list(metrics),
                    "regressions": dropped, "forced": False, "promoted": False,
                    "comparison": run["comparison"]}
        if dropped and not force:
            return decision
        resolved = spec.resolve(self.ws.config)
        decision["changed"] = write_defaults(self.ws.home, resolved)
        decision.update(promoted=True, forced=bool(dropped))
        return decision


__all__ = ["ALERT_CHECK", "ALERT_PREFIX", "PINNED_DEFAULT", "Regression", "regressions"]
