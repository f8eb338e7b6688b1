"""Roles, passwords, API keys and web sessions: how a caller proves who they are.

Secrets are never stored: API keys and session tokens are kept as their sha256 (they are
random 256-bit values, so a fast hash is enough), passwords as argon2id hashes. A key is
shown once, when it is created. Revocation and expiry are checked on every use.

>>> from bastion.catalog.db import Catalog
>>> from bastion.directory import Directory
>>> cat = Catalog.open("sqlite:///:memory:")
>>> _ = Directory(cat).add_user("alice")
>>> acc = Accounts(cat)
>>> key_id, key = acc.create_key("alice")
>>> acc.authenticate_key(key).user_id
'alice'
>>> acc.revoke_key(key_id); acc.authenticate_key(key) is None
True
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import AccountRow, ApiKeyRow, UserRow, WebSessionRow, utcnow
from bastion.core.errors import AccessError, AuthError

ROLES = ("member", "editor", "admin")
KEY_PREFIX = "bst_"
MIN_PASSWORD = 10
LAST_USED_RESOLUTION = timedelta(minutes=1)
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def role_rank(role: str) -> int:
    return ROLES.index(role)


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` -> timedelta."""
    m = _DURATION.match(text or "")
    if not m or int(m.group(1)) <= 0:
        raise AccessError(f"invalid duration {text!r}: use a positive number with s, m, h, d or w, e.g. 30d")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    id: str
    user_id: str
    name: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > utcnow())

    def to_dict(self) -> dict:
        iso = lambda t: t.isoformat() + "Z" if t else None  # noqa: E731
        return {"id": self.id, "user": self.user_id, "name": self.name, "created_by": self.created_by,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "revoked_at": iso(self.revoked_at), "last_used_at": iso(self.last_used_at), "active": self.active}


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    user_id: str | None = None
    reason: str | None = None  # bad-credentials | locked | no-password
    retry_after_s: int = 0


class Accounts:
    """Roles, passwords, API keys and web sessions of the catalog's users."""

    def __init__(self, catalog: Catalog, *, max_failures: int = 5, lockout_base_s: int = 30,
                 lockout_max_s: int = 900):
        self.catalog = catalog
        self.max_failures, self.lockout_base_s, self.lockout_max_s = max_failures, lockout_base_s, lockout_max_s
        from argon2 import PasswordHasher

        self._hasher = PasswordHasher()
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    # -- roles -------------------------------------------------------------------------------
    def _account(self, s, user_id: str) -> AccountRow:
        if s.get(UserRow, user_id) is None:
            raise AccessError(f"unknown user {user_id!r}; add it with `bastion user add {user_id}`")
        acc = s.get(AccountRow, user_id)
        if acc is None:
            acc = AccountRow(user_id=user_id, role="member", failed_logins=0)
            s.add(acc)
        return acc

    def set_role(self, user_id: str, role: str) -> None:
        if role not in ROLES:
            raise AccessError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
        with self.catalog.session() as s:
            self._account(s, user_id).role = role

    def role(self, user_id: str) -> str:
        with self.catalog.session() as s:
            acc = s.get(AccountRow, user_id)
            return acc.role if acc else "member"

    def roles(self) -> dict[str, str]:
        with self.catalog.session() as s:
            return dict(s.execute(select(AccountRow.user_id, AccountRow.role)).all())

    def admins(self) -> list[str]:
        with self.catalog.session() as s:
            return list(s.scalars(select(AccountRow.user_id).where(AccountRow.role == "admin")))

    # -- passwords ---------------------------------------------------------------------------
    def set_password(self, user_id: str, password: str) -> None:
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise AccessError(f"password too short: use at least {MIN_PASSWORD} characters")
        if len(password) > 1024:
            raise AccessError("password too long: at most 1024 characters")
        with self.catalog.session() as s:
            acc = self._account(s, user_id)
            acc.password_hash = self._hasher.hash(password)
            acc.failed_logins, acc.locked_until = 0, None

    def verify_password(self, user_id: str, password: str) -> LoginResult:
        """Check a login; repeated failures lock the account for a doubling time (30 s, 60 s, ... 15 min)."""
        from argon2.exceptions import InvalidHashError, VerificationError

        now = utcnow()
        with self.catalog.session() as s:
            acc = s.get(AccountRow, user_id) if isinstance(user_id, str) else None
            if acc is None or acc.password_hash is None:
                try:  # the same work as a real check, so timing does not tell which users exist
                    self._hasher.verify(self._dummy_hash, password or "")
                except (VerificationError, InvalidHashError):
                    pass
                return LoginResult(False, None, "bad-credentials")
            if acc.locked_until and acc.locked_until > now:
                return LoginResult(False, user_id, "locked", int((acc.locked_until - now).total_seconds()) + 1)
            try:
                self._hasher.verify(acc.password_hash, password or "")
            except (VerificationError, InvalidHashError):
                acc.failed_logins += 1
                over = acc.failed_logins - self.max_failures
                if over >= 0:
                    wait = min(self.lockout_base_s * 2 ** over, self.lockout_max_s)
                    acc.locked_until = now + timedelta(seconds=wait)
                    return LoginResult(False, user_id, "locked", wait)
                return LoginResult(False, user_id, "bad-credentials")
            if self._hasher.check_needs_rehash(acc.password_hash):
                acc.password_hash = self._hasher.hash(password)
            acc.failed_logins, acc.locked_until, acc.last_login_at = 0, None, now
            return LoginResult(True, user_id)

    # -- API keys ----------------------------------------------------------------------------
    def create_key(self, user_id: str, *, name: str | None = None, expires_in: timedelta | None = None,
                   created_by: str | None = None) -> tuple[str, str]:
        """A new key for ``user_id``: returns (key id, the key). The key itself is not stored."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.catalog.session() as s:
            self._account(s, user_id)
            s.add(ApiKeyRow(id=key_id, user_id=user_id, name=name, secret_hash=_sha256(secret), created_by=created_by,
                            expires_at=utcnow() + expires_in if expires_in else None))
        return key_id, f"{KEY_PREFIX}{key_id}_{secret}"

    def list_keys(self, user_id: str | None = None) -> list[KeyInfo]:
        with self.catalog.session() as s:
            q = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
            if user_id is not None:
                q = q.where(ApiKeyRow.user_id == user_id)
            return [KeyInfo(r.id, r.user_id, r.name, r.created_by, r.created_at, r.expires_at, r.revoked_at,
                            r.last_used_at) for r in s.scalars(q)]

    def key_owner(self, key_id: str) -> str:
        with self.catalog.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise AccessError(f"unknown API key id {key_id!r}")
            return row.user_id

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key; the next request that uses it is refused."""
        with self.catalog.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise AccessError(f"unknown API key id {key_id!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()

    def authenticate_key(self, key: str) -> KeyInfo | None:
        """The active key ``key`` is, or None (unknown, wrong secret, revoked or expired). Records the use."""
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        key_id, _, secret = key[len(KEY_PREFIX):].partition("_")
        with self.catalog.session(write=True) as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or not hmac.compare_digest(row.secret_hash, _sha256(secret)):
                return None
            info = KeyInfo(row.id, row.user_id, row.name, row.created_by, row.created_at, row.expires_at,
                           row.revoked_at, row.last_used_at)
            if not info.active:
                return info  # the caller refuses it, naming why
            now = utcnow()
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
                row.last_used_at = now  # to the minute: a catalog write per request would cost every search
            return info

    # -- web sessions ------------------------------------------------------------------------
    def create_session(self, user_id: str, ttl: timedelta, ip: str | None = None) -> tuple[str, str]:
        """A new web session: returns (cookie token, CSRF token)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        with self.catalog.session() as s:
            s.add(WebSessionRow(token_hash=_sha256(token), user_id=user_id, csrf_token=csrf,
                                expires_at=utcnow() + ttl, ip=ip))
        return token, csrf

    def session(self, token: str) -> tuple[str, str] | None:
        """(user id, CSRF token) of a live session, or None."""
        if not isinstance(token, str) or not token or len(token) > 200:
            return None
        with self.catalog.session() as s:
            row = s.get(WebSessionRow, _sha256(token))
            if row is None or row.expires_at <= utcnow():
                return None
            return row.user_id, row.csrf_token

    def end_session(self, token: str) -> None:
        from sqlalchemy import delete

        with self.catalog.session() as s:
            s.execute(delete(WebSessionRow).where(WebSessionRow.token_hash == _sha256(token or "")))


__all__ = ["Accounts", "AuthError", "KeyInfo", "LoginResult", "ROLES", "parse_duration", "role_rank"]
