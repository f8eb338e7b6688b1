"""The pieces of the model-server client that are about time and places, not about the protocol.

:class:`Nodes` picks which model server a try goes to: round-robin over the healthy ones, and a node
that just failed sits out ``cooldown_s`` so the next tries go elsewhere. :class:`Watchdog` ends a
stream that broke a time limit (no first token, silent mid-answer, past the deadline) by shutting its
socket from another thread: a blocked read cannot otherwise be interrupted in time, and an HTTP read
timeout alone can say neither "no first token after 60 s" nor "silent for 30 s mid-answer".

>>> nodes = Nodes(["http://a/v1", "http://b/v1"], cooldown_s=30)
>>> nodes.order()
['http://a/v1', 'http://b/v1']
>>> nodes.failed("http://a/v1")
>>> nodes.order()[0]
'http://b/v1'
"""
from __future__ import annotations

import email.utils
import socket
import threading
import time
from collections.abc import Callable, Sequence


class Nodes:
    """Model servers that serve the same model, with a short cool-down for the ones that failed."""

    def __init__(self, urls: Sequence[str], cooldown_s: float = 30.0) -> None:
        self.urls = list(dict.fromkeys(u.rstrip("/") for u in urls))
        self.cooldown_s = cooldown_s
        self._resting: dict[str, float] = {}  # url -> monotonic time its cool-down ends
        self._next = 0
        self._lock = threading.Lock()

    def order(self) -> list[str]:
        """The nodes in the order this call tries them: the healthy ones round-robin, then the
        resting ones, soonest back first (a cool-down never leaves a call with no node at all)."""
        with self._lock:
            start = self._next % len(self.urls)
            self._next += 1
            now = time.monotonic()
            ring = self.urls[start:] + self.urls[:start]
            healthy = [u for u in ring if self._resting.get(u, 0.0) <= now]
            resting = sorted((u for u in ring if u not in healthy), key=lambda u: self._resting[u])
            return healthy + resting

    def failed(self, url: str, rest_s: float | None = None) -> None:
        """``url`` failed (cannot connect, overloaded): skip it for ``rest_s`` (default ``cooldown_s``)."""
        with self._lock:
            self._resting[url] = time.monotonic() + (self.cooldown_s if rest_s is None else rest_s)

    def ok(self, url: str) -> None:
        with self._lock:
            self._resting.pop(url, None)


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Watchdog:
    """Shuts a stream's socket when the time set with :meth:`arm` passes; ``fired`` says why.

    One thread per generation, which sleeps on a condition: re-arming per token costs a lock, not a thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: float | None = None
        self._why = ""
        self._kill: Callable[[], None] | None = None
        self._stopped = False
        self.fired: str | None = None
        self._thread = threading.Thread(target=self._run, name="bastion-llm-watchdog", daemon=True)
        self._thread.start()

    def arm(self, due: float, why: str, sock: socket.socket | None) -> None:
        """At monotonic time ``due``, shut ``sock`` and record ``why`` (replaces any earlier setting)."""
        with self._cond:
            self._due, self._why = due, why
            self._kill = (lambda: _shut(sock)) if sock is not None else None
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._due = None
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._due is None:
                    self._cond.wait()
                    continue
                left = self._due - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self.fired, self._due = self._why, None
                if self._kill is not None:
                    self._kill()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv(); close() alone would not
    except OSError:
        pass


__all__ = ["Nodes", "Watchdog", "retry_after_s"]
