"""Who a single sign-on is: the user name, groups and role the provider's claims map to, and
admission into the directory by the ``auth.oidc.jit`` policy."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.core.config import OidcConfig
from bastion.server.oidc import SsoRefused

if TYPE_CHECKING:
    from bastion.workspace import Workspace

log = logging.getLogger("bastion.server.oidc")
_NAME = re.compile(r"^[A-Za-z0-9_.@\-\u0080-\uffff]{1,200}$")  # the directory's rule for user and group names


@dataclass(frozen=True)
class SsoIdentity:
    """The person a valid ID token names, in Bastion's terms."""

    user: str
    subject: str
    groups: tuple[str, ...]
    role: str | None  # None: no role mapping configured
    email: str | None
    name: str | None


def _claimed_groups(cfg: OidcConfig, claims: dict[str, Any]) -> list[str]:
    raw = claims.get(cfg.groups_claim) if cfg.groups_claim else None
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list):
        return []
    return [g.strip() for g in raw if isinstance(g, str) and g.strip()]


def map_identity(cfg: OidcConfig, claims: dict[str, Any]) -> SsoIdentity:
    """The user name, Bastion groups and role that ``claims`` map to under ``cfg``.

    >>> cfg = OidcConfig(issuer="https://idp.example.com", client_id="bastion", admin_groups=["admins"])
    >>> who = map_identity(cfg, {"sub": "1f3a", "preferred_username": "dana", "groups": ["admins", "finance"]})
    >>> who.user, who.groups, who.role
    ('dana', ('admins', 'finance'), 'admin')
    """
    user = claims.get(cfg.username_claim)
    if not isinstance(user, str) or not _NAME.match(user):
        raise SsoRefused(f"the identity provider's claim {cfg.username_claim!r} ({str(user)[:80]!r}) is not a usable "
                         "user name (letters, digits, '.', '_', '-', '@'); set auth.oidc.username_claim",
                         "bad-username")
    claimed = _claimed_groups(cfg, claims)
    kept = [g for g in claimed if cfg.allowed_groups is None or g in cfg.allowed_groups]
    groups: list[str] = []
    for g in kept:
        name = cfg.group_prefix + cfg.group_map.get(g, g)
        if _NAME.match(name):
            groups.append(name)
        else:
            log.warning("single sign-on: group %r of %s skipped: not a valid group name", name[:200], user)
    role = None
    if cfg.admin_groups or cfg.editor_groups:
        role = ("admin" if set(claimed) & set(cfg.admin_groups)
                else "editor" if set(claimed) & set(cfg.editor_groups) else "member")
    email, display = claims.get("email"), claims.get("name")
    return SsoIdentity(user, str(claims["sub"]), tuple(sorted(set(groups))), role,
                       email[:320] if isinstance(email, str) else None,
                       display[:200] if isinstance(display, str) else None)


def admit(ws: Workspace, cfg: OidcConfig, who: SsoIdentity) -> str:
    """The directory user ``who`` signs in as, created or refreshed by the ``jit`` policy.

    ``create``: an unknown user is added with origin ``oidc``; a user of origin ``oidc`` gets the
    claimed groups (and mapped role) at every sign-in, and must keep its subject. Users from elsewhere
    (local, LDAP, SCIM) keep what their own source gave them. ``existing``: only users already in the
    directory sign in. A disabled user never does."""
    from bastion.catalog.models import UserRow, utcnow

    with ws.catalog.session() as s:
        row = s.get(UserRow, who.user)
        known = row is not None
        origin, subject, active = (row.origin, row.external_id, row.active) if row is not None else (None, None, True)
    if not known and cfg.jit == "existing":
        raise SsoRefused(f"{who.user} is not a user of this Bastion; ask an administrator to add you",
                         "unknown-user", user=who.user)
    if not active:
        raise SsoRefused(f"the account {who.user} is disabled; ask an administrator", "disabled-user", user=who.user)
    if origin == "oidc" and subject and subject != who.subject:
        raise SsoRefused(f"the user name {who.user} belongs to another account of the identity provider",
                         "subject-mismatch", user=who.user)
    if known and origin != "oidc":
        return who.user
    ws.directory.add_user(who.user, groups=list(who.groups), display_name=who.name, role=who.role)
    with ws.catalog.session() as s:
        row = s.get(UserRow, who.user)
        if row is not None:
            row.origin, row.external_id, row.email, row.updated_at = "oidc", who.subject, who.email, utcnow()
            if who.name:
                row.display_name = who.name
    return who.user
