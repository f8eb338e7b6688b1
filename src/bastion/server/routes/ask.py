"""Cited answers: ``POST /api/v1/ask``, whole or as server-sent events, and :func:`run_ask`, which the
OpenAI-compatible API shares.

An answer over this route also carries ``message`` (one plain sentence for employees) and
``conversation_id``: with ``conversation_id`` (one of the caller's conversations) the question and its
answer are added to it as a turn, and with ``save: true`` and no id they start a new conversation titled
from the question. Without ``history``, a conversation's earlier turns are the history.
"""
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
from bastion.server.answer_gate import uses_llm
from bastion.server.auth import Ctx, require
from bastion.server.plain_language import member_reason, message
from bastion.server.problems import INTERNAL_DETAIL, Problem, audit_failure, from_bastion_error, problem_body
from bastion.server.routes.common import JsonObject, Name, StrictBody, Text
from bastion.server.routes.conversations import conversation_problems
from bastion.server.routes.knowledge import empty_index_note

if TYPE_CHECKING:
    from bastion.generation.results import Answer
    from bastion.server.answer_gate import Ticket

log = logging.getLogger("bastion.server")
router = APIRouter(prefix="/api/v1", tags=["knowledge"])
HISTORY_TURNS = 25  # stored turns a follow-up in a conversation is read with (answer.history_turns uses the last)


class Turn(StrictBody):
    role: Literal["user", "assistant"]
    content: Annotated[str, Field(max_length=20000)]


class AskBody(StrictBody):
    question: Text
    mode: Literal["answer", "extract"] | None = None
    assistant: Name = "bastion"
    history: list[Turn] = Field(default_factory=list, max_length=50)
    stream: bool = False
    conversation_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    save: bool = False

    @property
    def saving(self) -> bool:
        """Whether the answer is kept as a turn of a conversation."""
        return self.save or self.conversation_id is not None


def run_ask(ctx: Ctx, question: str, *, assistant: str, mode: str | None, history: list[dict[str, Any]],
            on_token: Callable[[str], None] | None = None) -> Answer:
    """Answer as the caller with an assistant (``history``: role/content dicts); audits the read with its
    lineage id (blocking)."""
    chosen = ctx.server.ws.answerer_for(assistant)
    turns = [ChatMessage(t["role"], t["content"]) for t in history or []]
    ans = chosen.answerer.ask(question, ctx.principal, mode=mode, history=turns, source=chosen.sources,
                              on_token=on_token)
    ctx.server.m_answers.labels(ans.decision).inc()
    if not ctx.identity.at_least("admin"):
        ans.reason = member_reason(ans.reason)
    ctx.audit(target=question, lineage_id=ans.lineage_id,
              detail={"assistant": assistant, "decision": ans.decision,
                      "chunks": [s.get("chunk_id") for c in ans.citations for s in c.sources or [c.to_dict()]]})
    return ans


def answer_dict(ans: Answer) -> JsonObject:
    """The answer as this API returns it: with ``message``, and ``sources`` on every citation."""
    out = ans.to_dict() | {"message": message(ans.decision, ans.language), "conversation_id": None}
    for c in out["citations"]:
        if not c.get("sources"):  # an answer cached before citations listed their sources
            c["sources"] = [{k: c.get(k) for k in ("chunk_id", "doc_id", "document", "path", "page", "version_id")}
                            | {"source": None}]
    return out


def _prepare(ctx: Ctx, body: AskBody) -> list[dict[str, Any]]:
    """Check the request before anything is answered; returns the history to answer with (blocking)."""
    ws = ctx.server.ws
    if body.assistant not in ws.assistants():
        raise Problem(422, "validation", f"unknown assistant {body.assistant!r}; GET /api/v1/assistants lists them")
    if body.conversation_id:
        ctx.detail["conversation"] = body.conversation_id
    if body.saving:
        conversation_problems(lambda: ws.conversations.check_room(ctx.identity.user_id, body.conversation_id))()
    if body.history or not body.conversation_id:
        return [t.model_dump() for t in body.history]
    cid = body.conversation_id
    _, turns = conversation_problems(lambda: ws.conversations.get(ctx.principal, cid))()
    return [{"role": role, "content": text} for t in turns[-HISTORY_TURNS:]
            for role, text in (("user", t.question), ("assistant", t.answer))]


def _answer(ctx: Ctx, body: AskBody, history: list[dict[str, Any]],
            on_token: Callable[[str], None] | None = None) -> JsonObject:
    """Answer, then keep the turn when asked to (blocking)."""
    from bastion.conversations import Turn as StoredTurn

    ans = run_ask(ctx, body.question, assistant=body.assistant, mode=body.mode, history=history, on_token=on_token)
    out = answer_dict(ans) | {"index_empty": False}
    if ans.decision == "abstained" and not ans.citations:
        note = empty_index_note(ctx, ctx.server.ws.answerer_for(body.assistant).sources, ans.language)
        if note is not None:
            out |= {"index_empty": True, "message": note}
    if body.saving:
        turn = StoredTurn(question=ans.question, answer=ans.answer, citations=out["citations"], decision=ans.decision,
                          message=out["message"], lineage_id=ans.lineage_id)
        saved = conversation_problems(lambda: ctx.server.ws.conversations.append(ctx.identity.user_id,
                                                                                 body.conversation_id, turn))()
        out["conversation_id"] = saved.id
    return out


@router.post("/ask", response_model=None,
             summary="A cited answer from what the caller may read (SSE with stream=true)")
async def ask(body: AskBody, ctx: Ctx = Depends(require("member", "ask"))) -> JsonObject | StreamingResponse:
    history = await ctx.server.blocking(_prepare, ctx, body)
    # 503 + Retry-After when too many answers are in progress (docs/model-servers.md)
    ticket = ctx.server.answers.admit(ctx.request.url.path, llm=uses_llm(ctx.server.ws, body.assistant, body.mode))
    if not body.stream:
        return await ticket.run(_answer, ctx, body, history)
    return StreamingResponse(_ask_events(ctx, body, history, ticket), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


def sse(event: str, data: JsonObject) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _ask_events(ctx: Ctx, body: AskBody, history: list[dict[str, Any]], ticket: Ticket) -> AsyncIterator[str]:
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
            await send.send(("answer", await ticket.run(_answer, ctx, body, history, on_token=on_token)))
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
