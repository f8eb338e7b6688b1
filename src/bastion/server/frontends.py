"""Chat front ends that act for their users: one API key, the user named in a header.

Open WebUI, LibreChat and the like call the OpenAI-compatible API with one key for all their users.
With ``[auth.trusted_frontends]`` the keys listed there (by id, or every key of a listed user) may
name the user a request is for in ``user_header``; the request then runs as that user, with their
groups and their role capped at ``max_role``, and is audited as that user ``via="frontend"`` with
the front end's key id. Everyone else who sends one of the ``headers`` is refused, so nobody can
pick an identity by adding a header, and a forwarded user who is unknown or disabled is refused
rather than served as the front end.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy import func, select

from bastion.accounts import role_rank
from bastion.catalog.models import UserRow
from bastion.core.config import TrustedFrontendsConfig
from bastion.core.errors import AccessError
from bastion.server.problems import Problem

if TYPE_CHECKING:
    from bastion.server.app import BastionServer
    from bastion.server.auth import Identity

MAX_VALUE = 320  # an email address's limit


def forwarded_identity(server: BastionServer, request: Request, identity: Identity) -> Identity:
    """``identity`` itself, or, when a trusted front end names a user, that user's identity.

    Raises:
        Problem: 403 when the caller may not forward a user, or the named user is unknown,
            disabled or ambiguous; 400 when the header's value is unusable.
    """
    cfg = server.ws.config.auth.trusted_frontends
    sent = [name for name in cfg.all_headers if name in request.headers]
    if not sent:
        return identity
    named = ", ".join(sent)
    if not _is_frontend(cfg, identity):
        who = f"API key {identity.key_id}" if identity.key_id else f"a {identity.via} credential"
        raise _refuse(server, request, identity, 403, "forbidden",
                      f"the request names a forwarded user ({named}), but {who} is not a trusted front end "
                      "(auth.trusted_frontends); send it without that header")
    if cfg.addresses:
        from bastion.server.auth import _trusted, client_ip  # auth imports this module

        address = client_ip(request, server.ws.config.server.trusted_proxies)
        if not _trusted(address, cfg.addresses):
            raise _refuse(server, request, identity, 403, "forbidden",
                          f"front-end key {identity.key_id} may forward users only from "
                          f"auth.trusted_frontends.addresses, not from {address}")
    values = request.headers.getlist(cfg.user_header)
    if not values:
        return identity  # Open WebUI's other headers without the one that names the user: the key's own identity
    value = values[0].strip()
    if len(values) > 1 or not value or len(value) > MAX_VALUE or not value.isprintable():
        raise _refuse(server, request, identity, 400, "bad-request",
                      f"header {cfg.user_header} must hold one user {'email' if cfg.match == 'email' else 'id'}")
    found = _user_ids(server, cfg, value)
    if len(found) != 1:
        raise _refuse(server, request, identity, 403, "forbidden",
                      f"forwarded email {value!r} belongs to more than one user; give each user their own email"
                      if found else f"forwarded user {value!r} ({cfg.user_header}) is not a user of this workspace")
    user_id = found[0]
    try:
        principal = server.ws.principal(user_id)
    except AccessError as exc:  # disabled (or removed meanwhile)
        raise _refuse(server, request, identity, 403, "forbidden", f"forwarded user: {exc}") from None
    role = server.accounts.role(user_id)
    if role_rank(role) > role_rank(cfg.max_role):
        role = cfg.max_role
    return replace(identity, user_id=user_id, principal=principal, role=role, via="frontend",
                   frontend=identity.user_id, csrf=None, session_token=None)


def _is_frontend(cfg: TrustedFrontendsConfig, identity: Identity) -> bool:
    return identity.via == "key" and (identity.key_id in cfg.keys or identity.user_id in cfg.users)


def _user_ids(server: BastionServer, cfg: TrustedFrontendsConfig, value: str) -> list[str]:
    """The users ``value`` names: the user with that id, or those with that email (case-insensitive)."""
    with server.ws.catalog.session() as s:
        if cfg.match == "id":
            return [value] if s.get(UserRow, value) is not None else []
        return list(s.scalars(select(UserRow.id).where(func.lower(UserRow.email) == value.lower()).limit(2)))


def _refuse(server: BastionServer, request: Request, identity: Identity, status: int, kind: str,
            detail: str) -> Problem:
    """The refusal, audited as the front end's (or caller's) denied ``auth.frontend`` request."""
    from bastion.server.auth import client_ip

    server.audit.record(actor=identity.user_id, via=identity.via, action="auth.frontend", outcome="denied",
                        target=request.url.path, ip=client_ip(request, server.ws.config.server.trusted_proxies),
                        request_id=getattr(request.state, "request_id", None),
                        detail={"reason": detail, **({"key_id": identity.key_id} if identity.key_id else {})})
    return Problem(status, kind, detail)


__all__ = ["forwarded_identity"]
