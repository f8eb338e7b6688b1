"""Administration: users, their groups, roles and sessions; groups; the audit log."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal, NamedTuple

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import Field

from bastion.audit import AuditQuery
from bastion.core.errors import AccessError
from bastion.core.types import Principal
from bastion.server.auth import Ctx, require
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, JsonObject, Name, Password, StrictBody, blocking_audited

router = APIRouter(prefix="/api/v1", tags=["admin"])
GroupName = Annotated[str, Field(min_length=1, max_length=200)]
Role = Literal["member", "editor", "admin"]
Outcome = Literal["ok", "denied", "failed", "error"]


def _user_dict(ctx: Ctx, p: Principal) -> JsonObject:
    return {"user": p.user_id, "groups": sorted(p.groups), "role": ctx.server.accounts.role(p.user_id)}


@router.get("/users", response_model=None, summary="Users, their groups and roles")
async def users(ctx: Ctx = Depends(require("admin", "users.list"))) -> JsonObject:
    found = await blocking_audited(ctx, lambda: [_user_dict(ctx, p) for p in ctx.server.ws.directory.users()])
    return {"users": found}


class UserBody(StrictBody):
    user: Name
    groups: list[GroupName] = Field(default_factory=list, max_length=200)
    role: Role = "member"
    password: Password | None = None
    replace: bool = False  # an existing user's groups and role are replaced only when asked


class UserPatch(StrictBody):
    groups: list[GroupName] | None = Field(None, max_length=200)
    role: Role | None = None
    password: Password | None = None


class _UserSaved(NamedTuple):
    user: JsonObject
    sessions_ended: int


def _save_user(ctx: Ctx, user_id: str, groups: list[str], role: str | None, password: str | None) -> _UserSaved:
    """Set a user's groups and role, and their password if given (which ends every web session of theirs,
    the caller's own too if it is theirs)."""
    p = ctx.server.ws.directory.add_user(user_id, groups, role=role)
    ended = ctx.server.accounts.set_password(user_id, password) if password else 0
    return _UserSaved(_user_dict(ctx, p), ended)


def _user_changed(body: UserBody | UserPatch) -> Callable[[_UserSaved], AuditEntry]:
    return lambda saved: AuditEntry(detail={"groups": body.groups, "role": body.role,
                                            "password_set": bool(body.password),
                                            "sessions_ended": saved.sessions_ended})


@router.post("/users", status_code=201, response_model=None, summary="Add a user (or replace their groups and role)")
async def add_user(body: UserBody, ctx: Ctx = Depends(require("admin", "user.add"))) -> JsonObject:
    def save() -> _UserSaved:
        ws = ctx.server.ws
        if not body.replace and _user_exists(ctx, body.user):
            raise Problem(409, "conflict", f"user {body.user!r} already exists; PATCH /api/v1/users/{body.user} "
                                           "changes them, or send replace: true to replace their groups and role")
        groups_before = set(ws.directory.groups())
        saved = _save_user(ctx, body.user, body.groups, body.role, body.password)
        saved.user["new_groups"] = sorted(set(body.groups) - groups_before)
        return saved

    saved = await blocking_audited(ctx, save, target=body.user, entry=_user_changed(body))
    return saved.user


@router.patch("/users/{user_id}", response_model=None,
              summary="Change a user's groups, role or password (a new password ends their web sessions)")
async def patch_user(user_id: Annotated[str, PathParam(max_length=200)], body: UserPatch,
                     ctx: Ctx = Depends(require("admin", "user.change"))) -> JsonObject:
    saved = await blocking_audited(ctx, lambda: _change_user(ctx, user_id, body), target=user_id,
                                   entry=_user_changed(body))
    return saved.user | {"sessions_ended": saved.sessions_ended}


def _change_user(ctx: Ctx, user_id: str, change: UserPatch) -> _UserSaved:
    """Change what ``change`` names of an existing user; never take the role of the only admin away."""
    current = _existing_user(ctx, user_id)
    _keep_an_admin(ctx, user_id, change.role)
    groups = change.groups if change.groups is not None else sorted(current.groups)
    return _save_user(ctx, user_id, groups, change.role, change.password)


def _user_exists(ctx: Ctx, user_id: str) -> bool:
    try:
        ctx.server.ws.principal(user_id)
    except AccessError:
        return False
    return True


def _existing_user(ctx: Ctx, user_id: str) -> Principal:
    try:
        return ctx.server.ws.principal(user_id)
    except AccessError:
        raise Problem(404, "not-found", f"no user {user_id!r}") from None


def _keep_an_admin(ctx: Ctx, user_id: str, new_role: str | None) -> None:
    if ctx.server.accounts.admins() == [user_id] and new_role != "admin":
        raise Problem(409, "conflict", f"{user_id} is the only admin; make another admin first")


@router.delete("/users/{user_id}", response_model=None,
               summary="Remove a user: their keys and sessions stop working at once; their conversations are deleted")
async def delete_user(user_id: Annotated[str, PathParam(max_length=200)],
                      ctx: Ctx = Depends(require("admin", "user.remove"))) -> JsonObject:
    await blocking_audited(ctx, lambda: _remove_user(ctx, user_id), target=user_id)
    return {"removed": user_id}


def _remove_user(ctx: Ctx, user_id: str) -> None:
    _existing_user(ctx, user_id)
    _keep_an_admin(ctx, user_id, None)
    ctx.server.ws.conversations.remove_all(user_id)  # the catalog's foreign keys cascade too
    ctx.server.ws.directory.remove_user(user_id)


@router.delete("/users/{user_id}/sessions", response_model=None,
               summary="Log a user out everywhere: end their web sessions")
async def end_user_sessions(user_id: Annotated[str, PathParam(max_length=200)],
                            ctx: Ctx = Depends(require("admin", "user.sessions.end"))) -> JsonObject:
    ended = await blocking_audited(ctx, lambda: _end_sessions(ctx, user_id), target=user_id,
                                   entry=lambda ended: AuditEntry(detail={"sessions_ended": ended}))
    return {"user": user_id, "sessions_ended": ended}


def _end_sessions(ctx: Ctx, user_id: str) -> int:
    _existing_user(ctx, user_id)
    return ctx.server.accounts.end_sessions(user_id)


@router.get("/groups", response_model=None, summary="Groups and their members")
async def groups(ctx: Ctx = Depends(require("admin", "groups.list"))) -> JsonObject:
    return {"groups": await blocking_audited(ctx, ctx.server.ws.directory.groups)}


def _audit_query(actor: str | None, action: str | None, outcome: str | None, since: datetime | None,
                 until: datetime | None, lineage_id: str | None, after_id: int | None, limit: int,
                 before_id: int | None = None, newest_first: bool = False) -> AuditQuery:
    return AuditQuery(actor=actor, action=action, outcome=outcome, since=_naive(since), until=_naive(until),
                      lineage_id=lineage_id, after_id=after_id, limit=limit, before_id=before_id,
                      newest_first=newest_first)


def _naive(t: datetime | None) -> datetime | None:
    if t is None or t.tzinfo is None:
        return t
    try:
        return t.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is past the last representable time in UTC
        raise Problem(422, "validation", f"time {t.isoformat()!r} is out of range in UTC") from None


@router.get("/audit", response_model=None,
            summary="Audit entries, filtered; oldest first, or newest first with order=desc")
async def audit(ctx: Ctx = Depends(require("admin", "audit.read")),
                actor: Annotated[str | None, Query(max_length=200)] = None,
                action: Annotated[str | None, Query(max_length=80)] = None,
                outcome: Annotated[Outcome | None, Query()] = None,
                since: datetime | None = None, until: datetime | None = None,
                lineage_id: Annotated[str | None, Query(max_length=64)] = None,
                after_id: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,  # the catalog's id range
                before_id: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,  # the catalog's id range
                order: Literal["asc", "desc"] = "asc",
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JsonObject:
    q = _audit_query(actor, action, outcome, since, until, lineage_id, after_id, limit, before_id, order == "desc")
    filters = {k: v for k, v in dict(actor=actor, action=action, outcome=outcome).items() if v}
    entries = await blocking_audited(ctx, lambda: ctx.server.audit.query(q),
                                     entry=AuditEntry(detail={"filters": filters}))
    return {"entries": entries}


@router.get("/audit/export", summary="Audit entries as JSON Lines",
            response_class=StreamingResponse, responses={200: {"content": {"application/x-ndjson": {}}}})
async def audit_export(ctx: Ctx = Depends(require("admin", "audit.export")),
                       actor: Annotated[str | None, Query(max_length=200)] = None,
                       action: Annotated[str | None, Query(max_length=80)] = None,
                       outcome: Annotated[Outcome | None, Query()] = None,
                       since: datetime | None = None, until: datetime | None = None) -> Response:
    q = _audit_query(actor, action, outcome, since, until, None, None, 1000)
    await ctx.audit_async()
    rows = await ctx.server.blocking(lambda: list(ctx.server.audit.iter_all(q)))
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return Response(body, media_type="application/x-ndjson",
                    headers={"content-disposition": 'attachment; filename="bastion-audit.jsonl"'})
