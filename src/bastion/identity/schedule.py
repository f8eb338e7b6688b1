"""`bastion serve` syncs the directory every ``[directory.ldap] interval`` in a background thread.

The first sync runs when the server starts; a failed or refused one is logged and recorded
(``bastion directory status``) and the next is tried an interval later.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from bastion.core.durations import parse_duration
from bastion.core.errors import BastionError

if TYPE_CHECKING:
    from bastion.workspace import Workspace

log = logging.getLogger("bastion.directory")


class DirectorySyncSchedule:
    """A daemon thread running :func:`bastion.identity.ldap_sync.sync_ldap` every ``every_s`` seconds."""

    def __init__(self, ws: Workspace, every_s: float) -> None:
        self.ws, self.every_s = ws, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bastion-directory-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> None:
        from bastion.identity.ldap_sync import sync_ldap

        try:
            result = sync_ldap(self.ws, actor="system:directory-schedule", via="server")
            log.info("directory sync: %d changes (%d users, %d groups from %s)", result["total_changes"],
                     result["users"], result["groups"], result["server"])
        except BastionError as exc:
            log.warning("directory sync failed: %s", exc)
        except Exception:  # the server keeps serving; the next interval tries again
            log.exception("directory sync failed unexpectedly")
        self.runs += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._my_turn():
                self.run_once()
            self._stop.wait(self.every_s)

    def _my_turn(self) -> bool:
        """One server of those sharing the catalog runs each interval's sync (a lease on the slot)."""
        from bastion.leases import claim_once

        slot = int(time.time() // self.every_s)
        try:
            return claim_once(self.ws.catalog, f"directory-sync:{slot}", self.every_s)
        except Exception:  # noqa: BLE001 - the catalog cannot be read: the sync itself fails and says why
            return True


@asynccontextmanager
async def scheduled_directory_sync(ws: Workspace) -> AsyncIterator[DirectorySyncSchedule | None]:
    """While the block runs, sync the directory every ``[directory.ldap] interval`` (if set)."""
    import anyio

    cfg = ws.config.directory.ldap
    if cfg is None or not cfg.interval:
        yield None
        return
    schedule = DirectorySyncSchedule(ws, parse_duration(cfg.interval))
    schedule.start()
    try:
        yield schedule
    finally:
        await anyio.to_thread.run_sync(schedule.stop)
