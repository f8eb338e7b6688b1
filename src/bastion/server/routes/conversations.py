"""The caller's saved conversations: list, start, read, rename, delete.

Every route acts on the caller's own conversations only, an admin's included: another user's
conversation answers exactly like one that does not exist (404). Turns are shown as the caller may
read today (see :mod:`bastion.conversations`). ``POST /api/v1/ask`` adds turns.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from pydantic import Field

from bastion.conversations import ConversationError, ConversationNotFound
from bastion.server.auth import Ctx, require
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, JsonObject, StrictBody, blocking_audited

router = APIRouter(prefix="/api/v1", tags=["conversations"])
T = TypeVar("T")
ConversationId = Annotated[str, PathParam(min_length=1, max_length=64)]
Title = Annotated[str, Field(min_length=1, max_length=200)]
NOT_YOURS = "no such conversation, or it is not yours"


def conversation_problems(work: Callable[[], T]) -> Callable[[], T]:
    """``work`` with conversation errors as problems: 404 for a missing or another user's conversation,
    409 for a limit reached."""

    def run() -> T:
        try:
            return work()
        except ConversationNotFound:
            raise Problem(404, "not-found", NOT_YOURS) from None
        except ConversationError as exc:
            raise Problem(409, "conflict", str(exc)) from None

    return run


@router.get("/conversations", response_model=None, summary="Your conversations, the latest changed first")
async def conversations(ctx: Ctx = Depends(require("member", "conversations.list"))) -> JsonObject:
    found = await blocking_audited(ctx, lambda: ctx.server.ws.conversations.list(ctx.identity.user_id),
                                   entry=lambda found: AuditEntry(detail={"returned": len(found)}))
    return {"conversations": [c.to_dict() for c in found]}


class NewConversation(StrictBody):
    title: Title | None = None


@router.post("/conversations", status_code=201, response_model=None, summary="Start a conversation")
async def create(body: NewConversation | None = None,
                 ctx: Ctx = Depends(require("member", "conversation.create"))) -> JsonObject:
    title = body.title if body else None
    made = await blocking_audited(
        ctx, conversation_problems(lambda: ctx.server.ws.conversations.create(ctx.identity.user_id, title)),
        entry=lambda made: AuditEntry(target=made.id))
    return made.to_dict()


@router.get("/conversations/{conversation_id}", response_model=None,
            summary="One of your conversations with its turns (passages you can no longer read are left out)")
async def conversation(conversation_id: ConversationId,
                       ctx: Ctx = Depends(require("member", "conversation.get"))) -> JsonObject:
    found, turns = await blocking_audited(
        ctx, conversation_problems(lambda: ctx.server.ws.conversations.get(ctx.principal, conversation_id)),
        target=conversation_id, entry=lambda got: AuditEntry(detail={"turns": len(got[1])}))
    return found.to_dict() | {"turns": [t.to_dict() for t in turns]}


class ConversationPatch(StrictBody):
    title: Title


@router.patch("/conversations/{conversation_id}", response_model=None, summary="Rename one of your conversations")
async def rename(conversation_id: ConversationId, body: ConversationPatch,
                 ctx: Ctx = Depends(require("member", "conversation.rename"))) -> JsonObject:
    renamed = await blocking_audited(
        ctx, conversation_problems(
            lambda: ctx.server.ws.conversations.rename(ctx.identity.user_id, conversation_id, body.title)),
        target=conversation_id)
    return renamed.to_dict()


@router.delete("/conversations/{conversation_id}", response_model=None, summary="Delete one of your conversations")
async def remove(conversation_id: ConversationId,
                 ctx: Ctx = Depends(require("member", "conversation.delete"))) -> JsonObject:
    await blocking_audited(
        ctx, conversation_problems(lambda: ctx.server.ws.conversations.remove(ctx.identity.user_id, conversation_id)),
        target=conversation_id)
    return {"deleted": conversation_id}


@router.delete("/conversations", response_model=None, summary="Delete all your conversations")
async def remove_all(ctx: Ctx = Depends(require("member", "conversations.delete"))) -> JsonObject:
    count = await blocking_audited(ctx, lambda: ctx.server.ws.conversations.remove_all(ctx.identity.user_id),
                                   entry=lambda n: AuditEntry(detail={"deleted": n}))
    return {"deleted": count}
