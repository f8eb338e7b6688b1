"""Who is calling: API keys, OIDC/JWT bearer tokens and web sessions, then roles.

The principal comes only from the credential. Every route declares the least role it needs
with ``Depends(require("member", "search"))``; the returned :class:`Ctx` writes the route's
audit entry.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from fastapi import Request

from bastion.accounts import KEY_PREFIX, ROLES, role_rank
from bastion.core.config import JwtConfig
from bastion.core.errors import AccessError
from bastion.core.types import Principal
from bastion.server.frontends import forwarded_identity
from bastion.server.problems import Problem
from bastion.server.tokens import JwtValidator

if TYPE_CHECKING:
    from bastion.server.app import BastionServer

SESSION_COOKIE = "bastion_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# reads a web UI repeats (polling) are audited for keys and tokens, not for every UI refresh
QUIET_FOR_SESSIONS = {"me", "jobs.get", "jobs.list", "models.list", "sources.list"}
# a chat front end acts for its users in their questions, not with their credentials
NOT_FOR_FRONTENDS = {"key.create", "key.revoke", "logout.all"}


@dataclass
class Identity:
    user_id: str
    principal: Principal
    role: str
    via: str  # key | jwt | session
    key_id: str | None = None
    csrf: str | None = None
    session_token: str | None = None
    frontend: str | None = None  # via "frontend": the user owning the front end's key (key_id)

    def at_least(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)


def _trusted(address: str | None, trusted: list[str]) -> bool:
    """Whether ``address`` is one of the ``server.trusted_proxies`` (addresses or networks)."""
    if not address or not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(t, strict=False) for t in trusted)


def _forwarded_for(request: Request) -> list[str]:
    """The ``X-Forwarded-For`` hops, client first, over every such header in order."""
    return [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]


def client_ip(request: Request, trusted: list[str]) -> str | None:
    """The client's address: the direct peer, unless that is a trusted proxy.

    Then ``X-Forwarded-For`` is walked from the right (each proxy appends the address it saw) past
    the trusted proxies: the first hop that is not one is the client. Hops left of it are whatever
    the client sent, so they are never believed; a hop that is not an IP address ends the walk."""
    address = request.client.host if request.client else None
    hops = _forwarded_for(request)
    while hops and _trusted(address, trusted):
        hop = hops.pop()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        address = hop
    return address[:100] if address else address


def request_scheme(request: Request, trusted: list[str]) -> str:
    """``https`` or ``http`` as the client used it: ``X-Forwarded-Proto`` counts only from a trusted proxy."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
    if forwarded in ("http", "https") and _trusted(peer, trusted):
        return forwarded
    return request.url.scheme


class Authenticator:
    def __init__(self, server: BastionServer) -> None:
        self.server = server
        ws = server.ws
        self.jwt = JwtValidator(ws.config.auth.jwt, ws.home) if ws.config.auth.jwt else None

    def _principal(self, user_id: str) -> Principal:
        return self.server.ws.principal(user_id)

    def identify(self, request: Request) -> Identity:
        """Blocking (catalog reads): called in a worker thread. A trusted chat front end's key may act
        for the user its request names (:mod:`bastion.server.frontends`)."""
        return forwarded_identity(self.server, request, self._credential(request))

    def _credential(self, request: Request) -> Identity:
        srv = self.server
        header = request.headers.get("authorization")
        if header:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise self._refuse(request, "authorization header must be 'Bearer <API key or token>'", "auth")
            if token.startswith(KEY_PREFIX):
                info = srv.accounts.authenticate_key(token)
                if info is None:
                    raise self._refuse(request, "invalid API key", "auth.key")
                if not info.active:
                    why = "revoked" if info.revoked_at else "expired"
                    raise self._refuse(request, f"API key {info.id} is {why}", "auth.key", actor=info.user_id)
                try:
                    principal = self._principal(info.user_id)
                except AccessError as exc:
                    why = "is disabled" if "disabled" in str(exc) else "no longer exists"
                    raise self._refuse(request, f"the key's user {why}", "auth.key", actor=info.user_id) from None
                return Identity(info.user_id, principal, srv.accounts.role(info.user_id), "key", key_id=info.id)
            if self.jwt is None:
                raise self._refuse(request, "bearer token is not an API key and no JWT issuer is configured", "auth")
            try:
                claims = self.jwt.validate(token)
            except AccessError as exc:
                raise self._refuse(request, str(exc), "auth.jwt") from None
            return self._jwt_identity(request, claims, self.jwt.cfg)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            found = srv.accounts.session(cookie)
            if found is None:
                raise Problem(401, "unauthenticated", "session expired; log in again",
                              headers={"WWW-Authenticate": "Bearer"})
            user_id, csrf = found
            try:
                principal = self._principal(user_id)
            except AccessError:
                raise Problem(401, "unauthenticated", "the session's user is disabled or no longer exists") from None
            if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != csrf:
                raise Problem(403, "csrf", f"send the session's CSRF token in the {CSRF_HEADER} header")
            return Identity(user_id, principal, srv.accounts.role(user_id), "session", csrf=csrf, session_token=cookie)
        raise Problem(401, "unauthenticated", "send 'Authorization: Bearer <API key or token>' or log in",
                      headers={"WWW-Authenticate": "Bearer"})

    def _jwt_identity(self, request: Request, claims: dict, cfg: JwtConfig) -> Identity:
        user_id = claims.get(cfg.user_claim)
        if not isinstance(user_id, str) or not user_id or len(user_id) > 200 or "," in user_id:
            raise self._refuse(request, f"token claim {cfg.user_claim!r} is not a usable user id", "auth.jwt")
        groups: set[str] = set()
        raw = claims.get(cfg.groups_claim) if cfg.groups_claim else None
        if isinstance(raw, str):
            raw = raw.split(",")
        if isinstance(raw, list):
            groups = {g.strip() for g in raw if isinstance(g, str) and g.strip() and "," not in g}
        role = "member"
        try:
            known = self._principal(user_id)
            groups |= set(known.groups)
            role = self.server.accounts.role(user_id)
        except AccessError:
            if not cfg.allow_unknown_users:  # never added, or removed: as good as a revoked key
                raise self._refuse(request, f"token user {user_id!r} is not a user of this workspace",
                                   "auth.jwt", actor=user_id) from None
        if cfg.role_claim and claims.get(cfg.role_claim) in ROLES:
            role = claims[cfg.role_claim]
        return Identity(user_id, Principal(user_id, frozenset(groups)), role, "jwt")

    def _refuse(self, request: Request, detail: str, action: str, actor: str | None = None) -> Problem:
        self.server.audit.record(actor=actor, via="bearer", action=action, outcome="denied", detail={"reason": detail},
                                 ip=client_ip(request, self.server.ws.config.server.trusted_proxies),
                                 request_id=getattr(request.state, "request_id", None), target=request.url.path)
        return Problem(401, "unauthenticated", detail, headers={"WWW-Authenticate": "Bearer"})


@dataclass
class Ctx:
    """The authenticated caller of one request, and that request's audit entry."""

    identity: Identity
    request: Request
    action: str
    server: BastionServer
    audited: bool = False
    target: str | None = None
    detail: dict = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        return self.identity.principal

    def audit(self, outcome: str = "ok", *, target: str | None = None, lineage_id: str | None = None,
              detail: dict | None = None, action: str | None = None) -> None:
        """Write this request's audit entry (blocking). Raises when it cannot be written: the request fails."""
        ident = self.identity
        if ident.via == "session" and (action or self.action) in QUIET_FOR_SESSIONS and outcome == "ok":
            self.audited = True
            return
        extra = {"key_id": ident.key_id} if ident.key_id else {}
        if ident.frontend:
            extra["frontend"] = ident.frontend
        try:
            self._record(ident, outcome, target, lineage_id, detail, action, extra)
        except Exception as exc:
            import logging

            logging.getLogger("bastion.server").exception("audit write failed")
            self.audited = True  # do not try again for the failure response
            raise Problem(503, "audit-unavailable", "the audit log cannot be written, so the request was not "
                                                    "carried out; try again later") from exc
        self.audited = True

    def _record(self, ident, outcome, target, lineage_id, detail, action, extra) -> None:
        self.server.audit.record(actor=ident.user_id, via=ident.via, action=action or self.action, outcome=outcome,
                                 target=target if target is not None else self.target,
                                 ip=client_ip(self.request, self.server.ws.config.server.trusted_proxies),
                                 lineage_id=lineage_id, request_id=getattr(self.request.state, "request_id", None),
                                 detail={**extra, "role": ident.role, **self.detail, **(detail or {})})

    async def audit_async(self, outcome: str = "ok", **kw) -> None:
        await anyio.to_thread.run_sync(lambda: self.audit(outcome, **kw))


def require(role: str, action: str) -> Callable[[Request], Awaitable[Ctx]]:
    """A FastAPI dependency: authenticate, check the role, hand the route its :class:`Ctx`."""
    if role not in ROLES:
        raise ValueError(role)

    async def dependency(request: Request) -> Ctx:
        server = request.app.state.server
        identity = await server.blocking(server.auth.identify, request)
        ctx = Ctx(identity, request, action, server)
        request.state.ctx = ctx
        if not identity.at_least(role):
            raise Problem(403, "forbidden", f"this needs the {role} role; {identity.user_id} is {identity.role}")
        if identity.via == "frontend" and action in NOT_FOR_FRONTENDS:
            raise Problem(403, "forbidden", f"{action} is not allowed through a chat front end; "
                                            f"{identity.user_id} can do it signed in to Bastion")
        return ctx

    dependency.__name__ = f"require_{role}"
    return dependency
