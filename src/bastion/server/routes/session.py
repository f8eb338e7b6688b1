"""Sessions and credentials: password login for the web UI, logout, who am I, API keys."""
from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import Field, field_validator

from bastion.accounts import parse_lifetime
from bastion.core.errors import AccessError
from bastion.identity.ldap_login import check_password as check_ldap_password
from bastion.server.auth import SESSION_COOKIE, Ctx, client_ip, request_scheme, require
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, JsonObject, Name, Password, StrictBody, blocking_audited

if TYPE_CHECKING:
    from bastion.server.app import BastionServer

router = APIRouter(prefix="/api/v1", tags=["auth"])


class LoginBody(StrictBody):
    username: Name
    password: Password


@router.post("/auth/login", response_model=None, summary="Log in with a password; sets the session cookie")
async def login(body: LoginBody, request: Request, response: Response) -> JsonObject:
    server: BastionServer = request.app.state.server
    trusted = server.ws.config.server.trusted_proxies
    ip = client_ip(request, trusted)
    oidc = server.ws.config.auth.oidc
    if oidc is not None and not oidc.password_login:  # [auth.oidc] password_login = false
        raise Problem(403, "password-login-disabled", f"password sign-in is turned off; sign in with {oidc.label}")
    ldap = server.ws.config.directory.ldap
    check = partial(check_ldap_password, ldap, server.ws.home) if ldap is not None and ldap.password_login else None
    result = await server.blocking(server.accounts.verify_password, body.username, body.password, ip,
                                   directory_check=check)

    def record(outcome: str, reason: str | None = None) -> None:
        server.audit.record(actor=body.username if result.user_id else None, via=result.method, action="login",
                            outcome=outcome, ip=ip, request_id=request.state.request_id,
                            detail={"username": body.username[:200]} | ({"reason": reason} if reason else {})
                            | ({"error": result.error} if result.error else {}))

    if not result.ok:
        await server.blocking(record, "failed" if result.reason == "unavailable" else "denied", result.reason)
        if result.reason == "unavailable":
            raise Problem(503, "directory-unavailable",
                          "the directory could not be reached to check the password; try again later")
        if result.reason == "locked":
            raise Problem(429, "locked", f"too many failed logins; try again in {result.retry_after_s} s",
                          headers={"Retry-After": str(result.retry_after_s)})
        raise Problem(401, "unauthenticated", "wrong username or password")
    hours = server.ws.config.auth.session_hours
    token, csrf = await server.blocking(server.accounts.create_session, result.user_id, timedelta(hours=hours), ip)
    await server.blocking(record, "ok")
    secure = server.ws.config.auth.cookie_secure
    if secure is None:
        secure = request_scheme(request, trusted) == "https"
    response.set_cookie(SESSION_COOKIE, token, max_age=int(hours * 3600), httponly=True, secure=secure,
                        samesite="strict", path="/")
    principal = await server.blocking(server.ws.principal, result.user_id)
    return {"user": result.user_id, "role": await server.blocking(server.accounts.role, result.user_id),
            "groups": sorted(principal.groups), "csrf_token": csrf}


@router.post("/auth/logout", response_model=None, summary="End the web session")
async def logout(response: Response, ctx: Ctx = Depends(require("member", "logout"))) -> JsonObject:
    if ctx.identity.session_token:
        await ctx.server.blocking(ctx.server.accounts.end_session, ctx.identity.session_token)
    response.delete_cookie(SESSION_COOKIE, path="/")
    await ctx.audit_async()
    return {"ok": True}


@router.post("/auth/logout-all", response_model=None,
             summary="Log out everywhere: end all of the caller's web sessions")
async def logout_all(response: Response, ctx: Ctx = Depends(require("member", "logout.all"))) -> JsonObject:
    user_id = ctx.identity.user_id
    ended = await blocking_audited(ctx, lambda: ctx.server.accounts.end_sessions(user_id),
                                   entry=lambda ended: AuditEntry(target=user_id, detail={"sessions_ended": ended}))
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"user": user_id, "sessions_ended": ended}


@router.get("/auth/me", response_model=None, summary="Who the credential belongs to")
async def me(ctx: Ctx = Depends(require("member", "me"))) -> JsonObject:
    i = ctx.identity
    await ctx.audit_async()
    return {"user": i.user_id, "role": i.role, "groups": sorted(i.principal.groups), "via": i.via,
            "csrf_token": i.csrf}


class KeyBody(StrictBody):
    user: Name | None = None  # admins may create keys for others
    name: Annotated[str, Field(max_length=200)] | None = None
    expires_in: Annotated[str, Field(max_length=20, description="e.g. 30d, 12h, 2w; at most 3650d")] | None = None

    @field_validator("expires_in")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_lifetime(value)
            except AccessError as exc:
                raise ValueError(str(exc)) from None
        return value


@router.get("/keys", response_model=None, summary="API keys: your own (admins: everyone's, or ?user=)")
async def list_keys(ctx: Ctx = Depends(require("member", "keys.list")),
                    user: Annotated[str | None, Query(max_length=200)] = None) -> JsonObject:
    who = user if ctx.identity.at_least("admin") else ctx.identity.user_id
    keys = await blocking_audited(ctx, lambda: [k.to_dict() for k in ctx.server.accounts.list_keys(who)],
                                  entry=AuditEntry(target=who))
    return {"keys": keys}


@router.post("/keys", status_code=201, response_model=None, summary="Create an API key (shown once)")
async def create_key(body: KeyBody, ctx: Ctx = Depends(require("member", "key.create"))) -> JsonObject:
    owner = body.user or ctx.identity.user_id
    return await blocking_audited(
        ctx, lambda: _create_key(ctx, owner, body), target=owner,
        entry=lambda key: AuditEntry(detail={"key": key["id"], "expires_in": body.expires_in}))


def _create_key(ctx: Ctx, owner: str, body: KeyBody) -> JsonObject:
    """The new key's listing, with the key itself (shown this once)."""
    if owner != ctx.identity.user_id and not ctx.identity.at_least("admin"):
        raise Problem(403, "forbidden", "only admins create keys for other users")
    accounts = ctx.server.accounts
    expires = parse_lifetime(body.expires_in) if body.expires_in else None
    key_id, key = accounts.create_key(owner, name=body.name, expires_in=expires, created_by=ctx.identity.user_id)
    info = next(k for k in accounts.list_keys(owner) if k.id == key_id)
    return info.to_dict() | {"key": key}


@router.delete("/keys/{key_id}", response_model=None,
               summary="Revoke an API key (yours; admins: any); effective at once")
async def revoke_key(key_id: Annotated[str, PathParam(max_length=64)],
                     ctx: Ctx = Depends(require("member", "key.revoke"))) -> JsonObject:
    await blocking_audited(ctx, lambda: _revoke_key(ctx, key_id), target=key_id,
                           entry=lambda owner: AuditEntry(detail={"owner": owner}))
    return {"revoked": key_id}


def _revoke_key(ctx: Ctx, key_id: str) -> str:
    """Revoke a key the caller may revoke; its owner. A key of someone else is as missing as none."""
    try:
        owner = ctx.server.accounts.key_owner(key_id)
    except AccessError:
        raise Problem(404, "not-found", f"no API key {key_id!r}") from None
    if owner != ctx.identity.user_id and not ctx.identity.at_least("admin"):
        raise Problem(404, "not-found", f"no API key {key_id!r}")
    ctx.server.accounts.revoke_key(key_id)
    return owner
