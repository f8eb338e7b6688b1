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
>>> acc.revoke_key(key_id); acc.authenticate_key(key).active
False
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bastion.catalog.db import Catalog
from bastion.catalog.models import AccountRow, ApiKeyRow, UserRow, WebSessionRow, utc_iso, utcnow
from bastion.core import durations
from bastion.core.durations import MAX_DURATION_DAYS, DurationError, DurationTooLong
from bastion.core.errors import AccessError, AuthError
from bastion.login_throttle import LoginThrottle

ROLES = ("member", "editor", "admin")
KEY_PREFIX = "bst_"
MIN_PASSWORD = 10
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_DURATION = timedelta(days=MAX_DURATION_DAYS)


def role_rank(role: str) -> int:
    return ROLES.index(role)


def parse_lifetime(text: str) -> timedelta:
    """An API key's lifetime: ``30d``, ``12h``, ``90m``, ``2w``, ``45s`` (whole numbers), at most
    :data:`MAX_DURATION` (about 10 years). Parsed by :func:`bastion.core.durations.parse_duration`.

    >>> parse_lifetime("2w")
    datetime.timedelta(days=14)
    >>> parse_lifetime("999999999d")
    Traceback (most recent call last):
    ...
    bastion.core.errors.AccessError: duration '999999999d' is too long: at most 3650d (about 10 years)
    """
    try:
        return timedelta(seconds=durations.parse_duration(text, whole=True))
    except DurationTooLong as exc:
        raise AccessError(str(exc)) from None
    except DurationError:
        raise AccessError(f"invalid duration {text!r}: use a positive number with s, m, h, d or w, e.g. 30d") from None


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
        iso = utc_iso
        return {"id": self.id, "user": self.user_id, "name": self.name, "created_by": self.created_by,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "revoked_at": iso(self.revoked_at), "last_used_at": iso(self.last_used_at), "active": self.active}


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    user_id: str | None = None
    reason: str | None = None  # bad-credentials | locked | unavailable (the directory could not be reached)
    retry_after_s: int = 0
    method: str = "password"  # password (stored here) | ldap (a bind to the directory)
    error: str | None = None  # why the directory could not be reached (for the audit log, not the client)


class Accounts:
    """Roles, passwords, API keys and web sessions of the catalog's users."""

    def __init__(self, catalog: Catalog, *, max_failures: int = 5, lockout_base_s: int = 30,
                 lockout_max_s: int = 900, max_failures_per_address: int = 20, failure_window_s: int = 900):
        self.catalog = catalog
        # in the catalog, so every server on it counts the same failures (bastion.login_throttle)
        self.throttle = LoginThrottle(catalog, max_per_pair=max_failures, max_per_address=max_failures_per_address,
                                      base_s=lockout_base_s, max_s=lockout_max_s, window_s=failure_window_s)
        from argon2 import PasswordHasher

        self._hasher = PasswordHasher()
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    # -- roles -------------------------------------------------------------------------------
    @staticmethod
    def _known(s: Session, user_id: str) -> None:
        if s.get(UserRow, user_id) is None:
            raise AccessError(f"unknown user {user_id!r}; add it with `bastion user add {user_id}`")

    def _account(self, s: Session, user_id: str) -> AccountRow:
        self._known(s, user_id)
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
    def set_password(self, user_id: str, password: str) -> int:
        """Set a password and end the user's web sessions (a reset locks out whoever held one).

        Returns how many sessions were ended. An unknown user is refused before the password is
        looked at."""
        with self.catalog.session() as s:
            self._known(s, user_id)
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise AccessError(f"password too short: use at least {MIN_PASSWORD} characters")
        if len(password) > 1024:
            raise AccessError("password too long: at most 1024 characters")
        with self.catalog.session() as s:
            acc = self._account(s, user_id)
            acc.password_hash = self._hasher.hash(password)
            acc.failed_logins, acc.locked_until = 0, None
            ended = self._end_sessions(s, user_id)
        self.throttle.forget_user(user_id)
        return ended

    def verify_password(self, user_id: str, password: str, client: str | None = None, *,
                        directory_check: Callable[[str, str], bool] | None = None) -> LoginResult:
        """Check a login from the client address ``client``.

        Failures are counted per (user name, address) and per address (:class:`LoginThrottle`), for
        unknown user names too, which also cost the same argon2 work as a wrong password: the answers
        and their timing do not tell which users exist. A disabled user's login fails like a wrong
        password.

        A directory user (origin ``ldap``) is checked by ``directory_check(user_id, password)`` (a bind
        to the directory as them), never against a password stored here; without a check such users
        cannot log in with a password. If the directory cannot be reached (``directory_check``
        raises :class:`~bastion.core.errors.BastionError`) the result's reason is ``unavailable`` and
        no failure is counted."""
        from argon2.exceptions import InvalidHashError, VerificationError

        from bastion.core.errors import BastionError

        if not isinstance(user_id, str):
            return LoginResult(False, None, "bad-credentials")
        wait = self.throttle.wait(user_id, client)
        with self.catalog.session() as s:
            user, acc = s.get(UserRow, user_id), s.get(AccountRow, user_id)
            known = user_id if user is not None else None
            by_directory = user is not None and user.origin == "ldap"
            active = user is not None and bool(user.active)
            stored = acc.password_hash if acc is not None and acc.password_hash and not by_directory else None
        method = "ldap" if by_directory else "password"
        if wait:
            return LoginResult(False, known, "locked", wait, method=method)
        try:  # the same argon2 work whoever is named, directory users included
            self._hasher.verify(stored or self._dummy_hash, password or "")
            ok = stored is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if by_directory and active and directory_check is not None and isinstance(password, str) and password:
            try:  # never an empty password: many directories take that bind as an anonymous success
                ok = directory_check(user_id, password) is True
            except BastionError as exc:
                return LoginResult(False, known, "unavailable", method=method, error=str(exc))
        if not (ok and active):
            wait = self.throttle.failed(user_id, client)
            return LoginResult(False, known, "locked" if wait else "bad-credentials", wait, method=method)
        with self.catalog.session() as s:
            acc = self._account(s, user_id)
            if stored is not None and self._hasher.check_needs_rehash(stored):
                acc.password_hash = self._hasher.hash(password)
            acc.last_login_at = utcnow()
        self.throttle.succeeded(user_id, client)
        return LoginResult(True, user_id, method=method)

    # -- API keys ----------------------------------------------------------------------------
    def create_key(self, user_id: str, *, name: str | None = None, expires_in: timedelta | None = None,
                   created_by: str | None = None) -> tuple[str, str]:
        """A new key for ``user_id``: returns (key id, the key). The key itself is not stored."""
        if name is not None and len(name) > 200:
            raise AccessError(f"API key name too long ({len(name)} characters): at most 200")
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
        with self.catalog.session() as s:
            s.execute(delete(WebSessionRow).where(WebSessionRow.token_hash == _sha256(token or "")))

    def end_sessions(self, user_id: str) -> int:
        """Log ``user_id`` out everywhere: end all their web sessions; returns how many there were."""
        with self.catalog.session() as s:
            if s.get(UserRow, user_id) is None:
                raise AccessError(f"unknown user {user_id!r}")
            return self._end_sessions(s, user_id)

    @staticmethod
    def _end_sessions(s: Session, user_id: str) -> int:
        result = s.execute(delete(WebSessionRow).where(WebSessionRow.user_id == user_id))
        return int(getattr(result, "rowcount", 0) or 0)  # a DELETE's CursorResult has rowcount


__all__ = ["Accounts", "AuthError", "KeyInfo", "LoginResult", "LoginThrottle", "MAX_DURATION", "ROLES",
           "parse_lifetime", "role_rank"]
