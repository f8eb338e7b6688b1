"""Keep a served workspace's search indexes in memory: when the server starts, and after each change.

A sync (``bastion sync``, a cron job, or the server's own child process) rewrites index files when it
optimizes; the server notices by the table version and loads the changed indexes in this background
thread, so the first searches after a sync do not load them on the request path.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.workspace import Workspace

log = logging.getLogger("bastion.server")


class IndexWarmer:
    """A daemon thread calling ``store.warm()`` at start and whenever the table version moved."""

    def __init__(self, ws: Workspace, every_s: float,
                 on_warm: Callable[[list[str], float], None] | None = None) -> None:
        self.ws, self.every_s = ws, every_s
        self.on_warm = on_warm  # called with (index names, seconds) after each load
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._version: int | None = None
        self._last_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bastion-warm", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def check(self) -> list[str]:
        """One round: load the changed indexes if the table moved since the last round."""
        store = self.ws.store
        warm, table_version = getattr(store, "warm", None), getattr(store, "table_version", None)
        if warm is None or table_version is None:  # a store without an index cache (pgvector, the test fakes)
            return []
        version = table_version()
        if version == self._version:
            return []
        t0 = time.perf_counter()
        names = warm()
        self._version = version
        if names and self.on_warm is not None:
            self.on_warm(names, time.perf_counter() - t0)
        return names

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                names = self.check()
                if names:
                    log.info("loaded search indexes into memory: %s", ", ".join(names))
                self._last_error = None
            except Exception as exc:  # noqa: BLE001 - searches still work, only colder; say so once
                if str(exc) != self._last_error:
                    log.warning("could not load the search indexes into memory: %s", exc)
                    self._last_error = str(exc)
            self._stop.wait(self.every_s)
