"""Streamed chat completions (``stream: true``) and the ``usage`` of an answer.

The stream opens at once with the assistant's role chunk, and while the question is rewritten,
retrieved and answered an SSE comment (``: keep-alive``) goes out every :data:`KEEPALIVE_S` seconds,
so clients with short read timeouts wait. The answer's text comes sentence by sentence, each once it
passed the citation check (:class:`~bastion.generation.streaming.CheckedStream`); quotes,
abstentions and cached answers come whole when they are ready. The last chunk with choices carries
``finish_reason`` and the ``bastion`` extension; with ``stream_options.include_usage`` a chunk with
no choices and the ``usage`` follows, as OpenAI sends it. A failure after the stream opened is an
``error`` object in the stream (the OpenAI client raises it).
"""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from bastion.core.errors import BastionError
from bastion.generation.streaming import CheckedStream
from bastion.server.problems import INTERNAL_DETAIL, Problem, audit_failure, from_bastion_error
from bastion.server.routes.ask import run_ask
from bastion.server.routes.common import JsonObject

if TYPE_CHECKING:
    from bastion.generation.results import Answer
    from bastion.server.answer_gate import Ticket
    from bastion.server.auth import Ctx

log = logging.getLogger("bastion.server")
KEEPALIVE_S = 10.0  # seconds between keep-alive comments while nothing else is sent


@dataclass(frozen=True)
class Completion:
    """One chat completion request, checked: what to answer and how to reply."""

    id: str
    created: int
    model: str
    question: str
    history: list[dict[str, Any]]
    include_usage: bool = False

    def chunk(self, choices: list[JsonObject], **extra: Any) -> str:
        data = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": choices} | extra
        return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"

    def delta(self, delta: JsonObject, finish: str | None = None, **extra: Any) -> str:
        return self.chunk([{"index": 0, "delta": delta, "finish_reason": finish}], **extra)


def usage_of(ctx: Ctx, req: Completion, ans: Answer) -> tuple[JsonObject, str]:
    """``usage`` and what counted it (blocking). When a model wrote a draft, its own counts of the
    prompt it read and the tokens it wrote (a draft replaced by quotes still cost them); otherwise
    (quotes, abstentions, cached answers) the question, its history and the reply counted with the
    embedder's tokenizer, the one ``/v1/embeddings`` reports."""
    tokens = ctx.server.ws.lineage(ans.lineage_id).get("tokens") or {}
    prompt, completion = tokens.get("prompt"), tokens.get("completion")
    if isinstance(prompt, int) and isinstance(completion, int):
        counted_by = "model"
    else:
        count = ctx.server.ws.embedder.count_tokens
        prompt = count(req.question) + sum(count(t["content"]) for t in req.history)
        completion = count(ans.answer)
        counted_by = "embedder"
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}, counted_by


@dataclass
class _Done:
    answer: Answer
    rest: str
    usage: JsonObject
    counted_by: str
    released: int  # sentences sent while the model wrote
    superseded: bool


async def completion_events(ctx: Ctx, req: Completion, extension: Callable[[Answer], JsonObject],
                            ticket: Ticket | None = None) -> AsyncIterator[str]:
    """The SSE body of a streamed completion."""
    send, receive = anyio.create_memory_object_stream[tuple[str, Any]](1000)

    def emit(text: str) -> None:  # called in the worker thread that answers
        try:
            anyio.from_thread.run_sync(send.send_nowait, ("text", text))
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    gate = CheckedStream(emit)

    def answer() -> _Done:
        ans = run_ask(ctx, req.question, assistant=req.model, mode=None, history=req.history, on_token=gate)
        rest = gate.finish(ans)
        usage, counted_by = usage_of(ctx, req, ans)
        return _Done(ans, rest, usage, counted_by, len(gate.sent), gate.superseded)

    async def produce() -> None:
        try:
            await send.send(("done", await (ticket.run(answer) if ticket else ctx.server.blocking(answer))))
        except Exception as exc:  # noqa: BLE001 - any failure becomes the stream's error object, logged in _failure
            await send.send(("error", await _failure(ctx, exc)))
        finally:
            await send.aclose()

    yield req.delta({"role": "assistant", "content": ""})
    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        async with receive:
            while True:
                item = None
                with anyio.move_on_after(KEEPALIVE_S):
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        break
                if item is None:
                    yield ": keep-alive\n\n"
                    continue
                kind, data = item
                if kind == "text":
                    yield req.delta({"content": data})
                elif kind == "error":
                    yield "data: " + json.dumps({"error": data}, ensure_ascii=False) + "\n\n"
                else:
                    for event in _closing(req, data, extension):
                        yield event
    yield "data: [DONE]\n\n"


def _closing(req: Completion, done: _Done, extension: Callable[[Answer], JsonObject]) -> list[str]:
    ext = extension(done.answer) | {"usage_counted_by": done.counted_by,
                                    "stream": {"sentences_released": done.released, "superseded": done.superseded}}
    events = [req.delta({"content": done.rest})] if done.rest else []
    events.append(req.delta({}, "stop", bastion=ext))
    if req.include_usage:
        events.append(req.chunk([], usage=done.usage))
    return events


async def _failure(ctx: Ctx, exc: Exception) -> JsonObject:
    """An OpenAI error object for a failure after the stream opened; the request is audited as failed."""
    if isinstance(exc, Problem):
        status, kind, detail = exc.status, exc.kind, exc.detail
    elif isinstance(exc, BastionError):
        p = from_bastion_error(exc)
        status, kind, detail = p.status, p.kind, p.detail
    else:
        log.error("streamed chat completion failed", exc_info=exc)
        status, kind, detail = 500, "internal", INTERNAL_DETAIL
    await audit_failure(ctx.request, status)
    return {"message": detail, "type": kind, "param": None, "code": status}


__all__ = ["KEEPALIVE_S", "Completion", "completion_events", "usage_of"]
