"""Checks over every source's syncs, and the alerts they keep (open -> acknowledged -> resolved).

:class:`Monitor` is the face of two modules: :mod:`~bastion.monitoring.checks` evaluates the checks,
:mod:`~bastion.monitoring.alerts` keeps the alerts and answers the queries over them.

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

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.catalog.db import Catalog
from bastion.catalog.models import SourceRow, utcnow
from bastion.core.config import MonitoringConfig
from bastion.embedding.protocol import Embedder
from bastion.monitoring.alerts import ANSWER_WARNING_KINDS, AlertBook, alert_dict
from bastion.monitoring.checks import CANARY_SENTENCES, Checks, Finding, live_state

if TYPE_CHECKING:
    from bastion.monitoring.notify import Notifier

__all__ = ["ANSWER_WARNING_KINDS", "CANARY_SENTENCES", "Finding", "Monitor", "alert_dict"]


class Monitor:
    """Evaluates checks and keeps alerts for one workspace."""

    def __init__(self, catalog: Catalog, config: MonitoringConfig, notifier: Notifier | None = None):
        self.catalog, self.config = catalog, config
        self.checks = Checks(catalog, config)
        self.book = AlertBook(catalog, notifier)

    @property
    def notifier(self) -> Notifier | None:
        return self.book.notifier

    @notifier.setter
    def notifier(self, value: Notifier | None) -> None:
        self.book.notifier = value

    # -- evaluation -------------------------------------------------------------------------
    def gate(self, source: str, metrics: dict[str, Any]) -> list[str]:
        """Why a sync must not be published (called by the sync pipeline before anything is)."""
        return self.checks.gate(source, metrics)

    def after_sync(self, source: str, run_id: int, embedder: Embedder | None = None,
                   now: datetime | None = None) -> list[dict[str, Any]]:
        """Evaluate a finished sync (any status); returns the source's unresolved alerts."""
        self.book.reconcile(source, run_id, self.checks.evaluate(source, run_id, now or utcnow(), embedder))
        return self.alerts(source=source)

    def run(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Evaluate every source now (freshness moves with the clock); returns unresolved alerts."""
        now = now or utcnow()
        with self.catalog.session() as s:
            names = list(s.scalars(select(SourceRow.name).order_by(SourceRow.name)))
        for name in names:
            run_id = self.latest_run_id(name)
            self.book.reconcile(name, run_id, self.checks.evaluate(name, run_id, now, None))
        if self.notifier is not None:  # retry what earlier events could not deliver, off this call's path
            self.notifier.deliver_in_background()
        return self.alerts()

    def latest_run_id(self, source: str) -> int | None:
        """The source's most recent finished (or failed / quarantined) sync."""
        return self.checks.latest_run_id(source)

    @staticmethod
    def state(s: Session, source_id: int) -> dict[str, Any]:
        """The live state of a source: documents, chunks, failures, text quality of current versions."""
        return live_state(s, source_id)

    # -- alerts ----------------------------------------------------------------------------
    def alerts(self, *, source: str | None = None, status: str | None = None, include_resolved: bool = False,
               limit: int = 1000) -> list[dict[str, Any]]:
        return self.book.alerts(source=source, status=status, include_resolved=include_resolved, limit=limit)

    def acknowledge(self, alert_id: int, by: str) -> dict[str, Any]:
        return self.book.acknowledge(alert_id, by)

    def resolve(self, alert_id: int, by: str) -> dict[str, Any]:
        """Resolve by hand; for a schema alert this accepts the new columns as the source's schema."""
        return self.book.resolve(alert_id, by)

    def status(self, source: str | None = None, include_resolved: bool = False) -> dict[str, Any]:
        """Alerts plus each source's last sync and live size (``bastion monitor status --json``)."""
        return self.book.status(source, include_resolved)

    def warnings_for(self, doc_ids: list[str]) -> list[dict[str, Any]]:
        """Unresolved freshness / quality / parse / drift alerts of the sources these documents come from."""
        return self.book.warnings_for(doc_ids)

    def history(self, source: str, limit: int = 30) -> list[dict[str, Any]]:
        """The source's syncs, newest first, with what each measured."""
        return self.book.history(source, limit)
