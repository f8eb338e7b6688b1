"""Cited answers: ``POST /api/v1/ask``, whole or as server-sent events, and :func:`run_ask`, which the
OpenAI-compatible API shares."""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import Field

from bastion.core.errors import BastionError
from bastion.generation.protocol import ChatMessage
from bastion.server.auth import Ctx, require
from bastion.server.problems import INTERNAL_DETAIL, Problem, audit_failure, from_bastion_error, problem_body
from bastion.server.routes.common import JsonObject, Name, StrictBody, Text

if TYPE_CHECKING:
    from bastion.generation.results import Answer

log = logging.getLogger("bastion.server")
router = APIRouter(prefix="/api/v1", tags=["knowledge"])


class Turn(StrictBody):
    role: Literal["user", "assistant"]
    content: Annotated[str, Field(max_length=20000)]


class AskBody(StrictBody):
    question: Text
    mode: Literal["answer", "extract"] | None = None
    assistant: Name = "bastion"
    history: list[Turn] = Field(default_factory=list, max_length=50)
    stream: bool = False


def run_ask(ctx: Ctx, question: str, *, assistant: str, mode: str | None, history: list[dict[str, Any]],
            on_token: Callable[[str], None] | None = None) -> Answer:
    """Answer as the caller with an assistant (``history``: role/content dicts); audits the read with its
    lineage id (blocking)."""
    chosen = ctx.server.ws.answerer_for(assistant)
    turns = [ChatMessage(t["role"], t["content"]) for t in history or []]
    ans = chosen.answerer.ask(question, ctx.principal, mode=mode, history=turns, source=chosen.sources,
                              on_token=on_token)
    ctx.server.m_answers.labels(ans.decision).inc()
    ctx.audit(target=question, lineage_id=ans.lineage_id,
              detail={"assistant": assistant, "decision": ans.decision,
                      "chunks": [c.chunk_id for c in ans.citations]})
    return ans


@router.post("/ask", response_model=None,
             summary="A cited answer from what the caller may read (SSE with stream=true)")
async def ask(body: AskBody, ctx: Ctx = Depends(require("member", "ask"))) -> JsonObject | StreamingResponse:
    if not body.stream:
        ans = await ctx.server.blocking(run_ask, ctx, body.question, assistant=body.assistant, mode=body.mode,
                                        history=[t.model_dump() for t in body.history])
        return ans.to_dict()
    return StreamingResponse(_ask_events(ctx, body), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


def sse(event: str, data: JsonObject) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _ask_events(ctx: Ctx, body: AskBody) -> AsyncIterator[str]:
    """``draft`` events carry the model's tokens as they come (not yet checked); ``answer`` carries the
    checked answer, which replaces the draft; ``error`` a problem document."""
    send, receive = anyio.create_memory_object_stream[tuple[str, JsonObject]](1000)

    def on_token(text: str) -> None:
        try:
            anyio.from_thread.run_sync(send.send_nowait, ("draft", {"text": text}))
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async def failed(status: int, kind: str, detail: str) -> None:
        await _stream_failed(ctx, status)
        await send.send(("error", problem_body(status, kind, detail)))

    async def produce() -> None:
        try:
            ans = await ctx.server.blocking(run_ask, ctx, body.question, assistant=body.assistant, mode=body.mode,
                                            history=[t.model_dump() for t in body.history], on_token=on_token)
            await send.send(("answer", ans.to_dict()))
        except Problem as p:
            await failed(p.status, p.kind, p.detail)
        except BastionError as exc:
            problem = from_bastion_error(exc)
            await failed(problem.status, problem.kind, problem.detail)
        except Exception:
            log.exception("streamed answer failed")
            await failed(500, "internal", INTERNAL_DETAIL)
        finally:
            await send.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        async with receive:
            async for event, data in receive:
                yield sse(event, data)


async def _stream_failed(ctx: Ctx, status: int) -> None:
    """A streamed answer that failed after its 200 went out still leaves its audit entry."""
    await audit_failure(ctx.request, status)
