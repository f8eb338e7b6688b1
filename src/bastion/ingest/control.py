"""Stopping a running sync from another thread (a signal handler, a server shutting down).

The sync checks :meth:`SyncControl.check` at its safe points: before each document it examines,
between embedding batches and before each index commit. There it raises
:class:`~bastion.core.errors.SyncInterrupted`; every batch committed before stays published
(the write order of bastion.ingest.pipeline), and the next sync picks up the rest.

>>> control = SyncControl()
>>> control.committed += 3
>>> control.stop("SIGINT")
>>> control.check()
Traceback (most recent call last):
...
bastion.core.errors.SyncInterrupted: sync interrupted (SIGINT); 3 documents committed, the rest will be synced next time
"""
from __future__ import annotations

import threading

from bastion.core.errors import SyncInterrupted


class SyncControl:
    """A stop request shared with a running sync, and how many documents it has committed so far."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.reason = ""
        self.committed = 0  # documents whose new state (or removal) the sync has published
        self.run_id: int | None = None  # the run of the source being synced

    def stop(self, reason: str) -> None:
        """Ask the sync to stop at its next safe point (any thread, a signal handler included)."""
        self.reason = self.reason or reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def message(self) -> str:
        n = self.committed
        return (f"sync interrupted ({self.reason}); {n} document{'' if n == 1 else 's'} committed, "
                "the rest will be synced next time")

    def check(self) -> None:
        """Raise :class:`SyncInterrupted` when a stop was asked for."""
        if self._stop.is_set():
            raise SyncInterrupted(self.message(), committed=self.committed)
