"""Back-pressure for answers in ``bastion serve``: at most ``llm.max_concurrent`` answers are generated at
once, at most ``llm.max_queue`` more wait (each up to ``llm.queue_timeout_s``), and a request beyond
that is refused at once with 503 and ``Retry-After`` instead of piling up.

Answers run in worker threads of their own (a capacity limiter sized running + waiting), never on the
event loop and never in the threads that search, sign-in and the catalog share: however slow the
model, ``/healthz`` and searches answer at their usual speed. A request is admitted (:meth:`AnswerGate.admit`)
before its response starts, so a streamed answer is refused with a real 503 too, not with an error
event after a 200. The slot is held by the thread that answers, so an answer whose request timed out
(504) keeps its slot until the model is done with it: the bound counts what the model really does.
"""
from __future__ import annotations

import functools
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from bastion.server.problems import Problem

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from bastion.core.config import LLMConfig
    from bastion.workspace import Workspace

T = TypeVar("T")
IN_PROCESS_DEFAULT, SERVER_DEFAULT = 1, 4  # llm.max_concurrent when unset: one llama.cpp context; a few per node


class AnswerGate:
    """Admits answers up to ``max_concurrent`` running plus ``max_queue`` waiting.

    >>> gate = AnswerGate(max_concurrent=1, max_queue=0, queue_timeout_s=5, request_timeout_s=60)
    >>> ticket = gate.admit()
    >>> try:
    ...     gate.admit()
    ... except Problem as refused:
    ...     print(refused.status, refused.headers)
    503 {'Retry-After': '5'}
    >>> ticket.done()  # (run() gives the place back when the answer ends)
    >>> gate.admitted
    0
    """

    def __init__(self, max_concurrent: int, max_queue: int, queue_timeout_s: float, request_timeout_s: float,
                 registry: CollectorRegistry | None = None) -> None:
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.queue_timeout_s, self.request_timeout_s = queue_timeout_s, request_timeout_s
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._lock = threading.Lock()
        self.admitted = 0  # running + waiting
        self.running = 0
        self._avg_s = 5.0  # moving average of an answer's seconds, for Retry-After
        self._threads = anyio.CapacityLimiter(max_concurrent + max_queue)
        self._free_threads = anyio.CapacityLimiter(16)  # answers without an LLM (extract mode)
        self._m: dict[str, Any] = {}
        if registry is not None:
            from prometheus_client import Counter, Gauge, Histogram

            Gauge("bastion_answers_running", "Answers being generated", registry=registry).set_function(
                lambda: float(self.running))
            Gauge("bastion_answers_queued", "Answers waiting for a generation slot", registry=registry).set_function(
                lambda: float(self.admitted - self.running))
            self._m["rejected"] = Counter("bastion_answers_rejected", "Answers refused with 503 (queue full, or "
                                          "waited past llm.queue_timeout_s)", ["reason"], registry=registry)
            self._m["wait"] = Histogram("bastion_answer_queue_wait_seconds", "Seconds an answer waited for a slot",
                                        buckets=(.01, .1, .5, 1, 2.5, 5, 10, 30, 60), registry=registry)
            self._m["seconds"] = Histogram("bastion_answer_generation_seconds",
                                           "Seconds an answer held its slot (retrieval + model)",
                                           buckets=(.1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120), registry=registry)

    @classmethod
    def from_config(cls, cfg: LLMConfig, *, in_process: bool, request_timeout_s: float,
                    registry: CollectorRegistry | None = None) -> AnswerGate:
        """The gate ``[llm]`` describes; ``in_process``: the model runs in this process (llama.cpp)."""
        default = IN_PROCESS_DEFAULT if in_process else SERVER_DEFAULT
        return cls(cfg.max_concurrent or default, cfg.max_queue, cfg.queue_timeout_s, request_timeout_s, registry)

    def retry_after_s(self) -> int:
        """Seconds until a refused request is likely to get in: the queue ahead of it, at recent speed."""
        ahead = max(1, self.admitted - self.max_concurrent + 1)
        return max(1, min(120, math.ceil(self._avg_s * ahead / self.max_concurrent)))

    def admit(self, path: str = "", *, llm: bool = True) -> Ticket:
        """A place for one answer, or Problem 503 with ``Retry-After`` when all places are taken (``path``:
        the request's, so that the OpenAI-compatible API gets an OpenAI-style error). An answer that
        uses no LLM (``llm=False``: extract mode) is not counted: it only runs in an answer thread."""
        if not llm:
            return Ticket(self, path, gated=False)
        with self._lock:
            if self.admitted >= self.max_concurrent + self.max_queue:
                full = True
            else:
                full = False
                self.admitted += 1
        if full:
            raise self._refused("full", f"too many answers in progress ({self.max_concurrent} being generated, "
                                        f"{self.max_queue} waiting: llm.max_concurrent / llm.max_queue)", path)
        return Ticket(self, path)

    def _refused(self, reason: str, detail: str, path: str) -> Problem:
        if "rejected" in self._m:
            self._m["rejected"].labels(reason=reason).inc()
        wait = self.retry_after_s()
        extra = {"error": {"message": detail, "type": "server_error", "param": None, "code": "overloaded"}} \
            if path.startswith("/v1/") else None
        return Problem(503, "unavailable", f"{detail}; try again in {wait} s", headers={"Retry-After": str(wait)},
                       extra=extra)

    def _leave(self) -> None:
        with self._lock:
            self.admitted -= 1

    def _work(self, ticket: Ticket, fn: Callable[[], T]) -> T:
        """In the answer's thread: wait for a slot, answer, give the slot back."""
        if not ticket.gated:
            return fn()
        t = time.monotonic()
        try:
            with ticket.state:
                if ticket.abandoned:  # cancelled before this thread began
                    raise Problem(504, "timeout", "the request ended before its answer began")
                ticket.started = True
            if not self._slots.acquire(timeout=self.queue_timeout_s):
                raise self._refused("queue_timeout", f"no answer slot came free within llm.queue_timeout_s = "
                                                     f"{self.queue_timeout_s:g} s", ticket.path)
            if "wait" in self._m:
                self._m["wait"].observe(time.monotonic() - t)
            try:
                if ticket.abandoned:  # the request timed out while waiting: nobody reads this answer
                    raise Problem(504, "timeout", "the request timed out before its answer began")
                with self._lock:
                    self.running += 1
                start = time.monotonic()
                try:
                    return fn()
                finally:
                    took = time.monotonic() - start
                    with self._lock:
                        self.running -= 1
                        self._avg_s = 0.8 * self._avg_s + 0.2 * took
                    if "seconds" in self._m:
                        self._m["seconds"].observe(took)
            finally:
                self._slots.release()
        finally:
            ticket.done()


class Ticket:
    """One admitted answer: :meth:`run` it once; a ticket dropped unrun gives its place back."""

    def __init__(self, gate: AnswerGate, path: str, *, gated: bool = True) -> None:
        self.gate, self.path, self.gated = gate, path, gated
        self.abandoned = self.started = False
        self.state = threading.Lock()
        # gives the place back once: at done(), or when the ticket is dropped unrun
        self._done = weakref.finalize(self, gate._leave) if gated else None

    def done(self) -> None:
        if self._done is not None:
            self._done()


    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in an answer thread once a slot is free, within ``server.request_timeout_s``."""
        work = functools.partial(self.gate._work, self, functools.partial(fn, *args, **kwargs))
        limit = self.gate.request_timeout_s
        try:
            with anyio.fail_after(limit):
                threads = self.gate._threads if self.gated else self.gate._free_threads
                return await anyio.to_thread.run_sync(work, limiter=threads, abandon_on_cancel=True)
        except TimeoutError:
            raise Problem(504, "timeout", f"no result within server.request_timeout_s = {limit:g} s") from None
        finally:
            with self.state:
                self.abandoned = True
                started = self.started
            if not started:  # cancelled while waiting for a thread: give the place back now
                self.done()




def for_workspace(ws: Workspace, registry: CollectorRegistry | None = None) -> AnswerGate:
    """The gate of ``bastion serve`` on ``ws``: the ``llm.max_concurrent`` default follows the configured
    model (a model server takes several answers at once; an in-process model, or one that cannot be
    looked up now, one)."""
    try:
        in_process = ws.models.get(ws.config.llm.model).kind != "http"
    except Exception:  # noqa: BLE001 - an unregistered model fails when asked, with its own message
        in_process = True
    return AnswerGate.from_config(ws.config.llm, in_process=in_process,
                                  request_timeout_s=ws.config.server.request_timeout_s, registry=registry)


def uses_llm(ws: Workspace, assistant: str, mode: str | None) -> bool:
    """Whether an answer by ``assistant`` in ``mode`` (None: the assistant's) prompts the LLM."""
    spec = ws.assistants().get(assistant)
    return (mode or (spec.mode if spec is not None else None) or ws.config.answer.mode) != "extract"


__all__ = ["AnswerGate", "Ticket", "for_workspace", "uses_llm"]
