"""Ctrl-C and SIGTERM during ``bastion sync``: stop within about a second, keep what is committed.

The sync runs in a worker thread while the main thread waits for it, so a signal is handled at
once even while the worker is inside a long native call (an embedding batch, an index commit),
where Python cannot run a signal handler. The handler asks the sync to stop at its next safe
point (:class:`~bastion.ingest.control.SyncControl`); the worker then records the run as
``interrupted`` and returns. If it has not reached one within ``grace_s``, the process ends
anyway: every batch committed so far stays published, and ending in the middle of a batch is as
safe as ``kill -9`` (docs/architecture.md, "Crash safety"): the next sync redoes that batch. Either
way the process ends right after saying what was kept, without the interpreter's teardown. A
second signal ends the process at once.

The exit status is 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn, TypeVar

from bastion.cli.output import err_console, styled
from bastion.core.errors import SyncInterrupted
from bastion.ingest.control import SyncControl

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SyncStopper:
    """Install with ``with``; :meth:`run` the sync; on :class:`SyncInterrupted`, :meth:`finish`."""

    def __init__(self, grace_s: float = 1.0):
        self.control = SyncControl()
        self.grace_s = grace_s
        self.signum: int | None = None
        self._worker: threading.Thread | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SyncStopper:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]  # what signal.signal returned before
        self._previous = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # asked twice: stop now
            sys.stderr.write(f"interrupted again: stopped now; {self.control.committed} documents committed, "
                             "the rest will be synced next time\n")
            self._end_process(128 + self.signum)
        self.signum = signum
        self.control.stop(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread; raises :class:`SyncInterrupted` when a signal stopped it, or
        when it did not stop within ``grace_s`` of the signal (then it is left running)."""
        self.control.check()
        outcome: dict[str, object] = {}

        def target() -> None:
            try:
                outcome["value"] = work()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
                outcome["error"] = exc

        self._worker = worker = threading.Thread(target=target, name="bastion-sync", daemon=True)
        worker.start()
        stop_by: float | None = None
        while worker.is_alive():
            worker.join(0.05)
            if self.control.stopping:
                stop_by = stop_by or time.monotonic() + self.grace_s
                if time.monotonic() >= stop_by:
                    raise SyncInterrupted(self.control.message(), committed=self.control.committed)
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]  # a BaseException, stored above
        return outcome["value"]  # type: ignore[return-value]  # work()'s result

    def finish(self, abandon: Callable[[], None] | None = None) -> NoReturn:
        """Say what the interrupted sync kept, and end the process with 128 + the signal's number.

        The process ends at once (``os._exit`` after flushing the output): what the sync committed is
        already durable, and the interpreter's own teardown (dropping the index's handles) can take
        seconds. ``abandon`` records the run as interrupted when the worker did not get to (it gets half
        a second, since the worker may hold the catalog; the next sync records it otherwise)."""
        err_console.print(styled((self.control.message(), "bold yellow")))
        if abandon is not None and self._worker is not None and self._worker.is_alive():
            marker = threading.Thread(target=abandon, name="bastion-sync-abandon", daemon=True)
            marker.start()
            marker.join(0.5)
        self._end_process(self.exit_code)

    @staticmethod
    def _end_process(code: int) -> NoReturn:
        logging.shutdown()  # flushes the structured-event handlers
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
