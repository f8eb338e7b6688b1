"""Stored evaluation runs: one row per run, one per item and configuration.

A run's dictionary (``EvalRuns.get(run_id)``) is what ``bastion eval run --json`` prints, what
the HTTP API returns and what the HTML report is drawn from::

    {"run_id", "set": {"name", "version", "items"}, "status", "trigger", "started_by",
     "started_at", "finished_at", "error",
     "configs": [{"name", "spec", "fingerprint", "metrics": {...}, "items": [outcome + scores]}],
     "comparison": {"baseline", "against", "metrics": {metric: paired difference}} | None}
"""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import EvalResultRow, EvalRunRow, EvalSetRow, utc_iso, utcnow
from bastion.core.errors import ConfigError
from bastion.evaluation.items import Outcome
from bastion.evaluation.metrics import score_item


class EvalRuns:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def start(self, set_id: int, *, trigger: str, started_by: str | None) -> str:
        run_id = uuid.uuid4().hex
        with self.catalog.session(write=True) as s:
            s.add(EvalRunRow(id=run_id, set_id=set_id, status="running", trigger=trigger[:80], started_by=started_by,
                             configs=[]))
        return run_id

    def add_config(self, run_id: str, name: str, spec: dict[str, Any], fingerprint: str, metrics: dict[str, Any],
                   outcomes: list[Outcome]) -> None:
        """Store one configuration's outcomes and metrics as soon as it finishes."""
        with self.catalog.session(write=True) as s:
            row = s.get(EvalRunRow, run_id)
            if row is None:
                raise ConfigError(f"no evaluation run {run_id!r}")
            row.configs = [*row.configs, {"name": name, "spec": spec, "fingerprint": fingerprint, "metrics": metrics}]
            for o in outcomes:
                s.add(EvalResultRow(run_id=run_id, config=name, item_id=o.item.id, outcome=o.to_dict(),
                                    scores=score_item(o)))

    def finish(self, run_id: str, *, comparison: dict[str, Any] | None = None, error: str | None = None) -> None:
        with self.catalog.session(write=True) as s:
            row = s.get(EvalRunRow, run_id)
            if row is not None:
                row.status = "failed" if error else "completed"
                row.error, row.comparison, row.finished_at = error, comparison, utcnow()

    # -- reading ---------------------------------------------------------------------------
    def get(self, run_id: str, *, items: bool = True) -> dict[str, Any]:
        with self.catalog.session() as s:
            row = s.get(EvalRunRow, run_id)
            if row is None:
                raise ConfigError(f"no evaluation run {run_id!r}; list them with `bastion eval runs`")
            data = _run_dict(row, s.get(EvalSetRow, row.set_id))
            if items:
                by_config: dict[str, list[dict[str, Any]]] = {}
                for r in s.scalars(select(EvalResultRow).where(EvalResultRow.run_id == run_id).order_by(EvalResultRow.id)):
                    by_config.setdefault(r.config, []).append({**r.outcome, "scores": r.scores})
                for c in data["configs"]:
                    c["items"] = by_config.get(c["name"], [])
            return data

    def outcomes(self, run_id: str, config: str) -> list[Outcome]:
        with self.catalog.session() as s:
            rows = s.scalars(select(EvalResultRow).where(EvalResultRow.run_id == run_id, EvalResultRow.config == config)
                             .order_by(EvalResultRow.id))
            return [Outcome.from_dict(r.outcome) for r in rows]

    def set_id(self, run_id: str) -> int:
        with self.catalog.session() as s:
            row = s.get(EvalRunRow, run_id)
            if row is None:
                raise ConfigError(f"no evaluation run {run_id!r}; list them with `bastion eval runs`")
            return row.set_id

    def recent(self, *, set_ids: list[int] | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Runs, newest first, with their metrics but not their items."""
        with self.catalog.session() as s:
            q = select(EvalRunRow).order_by(EvalRunRow.started_at.desc(), EvalRunRow.id).limit(limit)
            if set_ids is not None:
                q = q.where(EvalRunRow.set_id.in_(set_ids))
            rows = list(s.scalars(q))
            sets = {r.id: r for r in s.scalars(select(EvalSetRow).where(EvalSetRow.id.in_({r.set_id for r in rows})))}
            return [_run_dict(r, sets.get(r.set_id)) for r in rows]


def _run_dict(row: EvalRunRow, eval_set: EvalSetRow | None) -> dict[str, Any]:
    return {
        "run_id": row.id,
        "set": ({"name": eval_set.name, "version": eval_set.version, "items": eval_set.item_count, "id": eval_set.id}
                if eval_set is not None else {"name": None, "version": None, "items": None, "id": row.set_id}),
        "status": row.status, "trigger": row.trigger, "started_by": row.started_by,
        "started_at": utc_iso(row.started_at), "finished_at": utc_iso(row.finished_at), "error": row.error,
        "configs": [dict(c) for c in row.configs], "comparison": row.comparison,
    }


__all__ = ["EvalRuns"]
