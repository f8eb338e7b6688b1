"""Users, groups and memberships: where a :class:`Principal` comes from."""
from __future__ import annotations

import re
from functools import cached_property

from sqlalchemy import delete, select

from bastion.accounts import ROLES, Accounts
from bastion.catalog.db import Catalog
from bastion.catalog.models import GroupRow, MembershipRow, UserRow, utcnow
from bastion.core.errors import AccessError
from bastion.core.types import Principal

_NAME = re.compile(r"^[A-Za-z0-9_.@\-\u0080-\uffff]{1,200}$")


def _check(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise AccessError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_', '-', '@' (no spaces or commas)")
    return name


class Directory:
    """The catalog's users and groups.

    >>> d = Directory(Catalog.open("sqlite:///:memory:"))
    >>> d.add_user("alice", groups=["finance"]).labels() >= {"group:finance"}
    True
    """

    def __init__(self, catalog: Catalog, accounts: Accounts | None = None):
        self.catalog = catalog
        if accounts is not None:
            self.accounts = accounts

    @cached_property
    def accounts(self) -> Accounts:
        """Where roles are kept (built on first use unless given)."""
        return Accounts(self.catalog)

    def add_user(self, user_id: str, groups: list[str] | None = None, display_name: str | None = None,
                 role: str | None = None) -> Principal:
        """Create a user, or replace an existing user's groups (and role, when given)."""
        _check("user", user_id)
        groups = [_check("group", g) for g in (groups or [])]
        if role is not None and role not in ROLES:
            raise AccessError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
        with self.catalog.session() as s:
            if s.get(UserRow, user_id) is None:
                s.add(UserRow(id=user_id, display_name=display_name))
                s.flush()
            s.execute(delete(MembershipRow).where(MembershipRow.user_id == user_id))
            for g in sorted(set(groups)):
                if s.get(GroupRow, g) is None:
                    s.add(GroupRow(name=g))
                s.flush()
                s.add(MembershipRow(user_id=user_id, group_name=g))
        # the account keeps its role unless one is given (a new account: member)
        self.accounts.set_role(user_id, role or self.accounts.role(user_id))
        return self.principal(user_id)

    def remove_user(self, user_id: str) -> None:
        with self.catalog.session() as s:
            if s.get(UserRow, user_id) is None:
                raise AccessError(f"unknown user {user_id!r}")
            s.execute(delete(MembershipRow).where(MembershipRow.user_id == user_id))
            s.execute(delete(UserRow).where(UserRow.id == user_id))

    def remove_from_group(self, user_id: str, group: str) -> None:
        with self.catalog.session() as s:
            s.execute(delete(MembershipRow).where(MembershipRow.user_id == user_id, MembershipRow.group_name == group))

    def principal(self, user_id: str) -> Principal:
        """The principal of a known, active user; unknown and disabled users get an error, never a default."""
        with self.catalog.session() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise AccessError(f"unknown user {user_id!r}; add it with `bastion user add {user_id} --groups ...`")
            if not row.active:
                raise AccessError(f"user {user_id!r} is disabled")
            groups = s.scalars(select(MembershipRow.group_name).where(MembershipRow.user_id == user_id))
            return Principal(user_id, frozenset(groups))

    def set_active(self, user_id: str, active: bool) -> None:
        """Enable or disable a user. Disabling ends the user's sessions at once; its keys stop
        working because every request resolves the principal, which a disabled user has not."""
        with self.catalog.session() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise AccessError(f"unknown user {user_id!r}")
            row.active = active
            row.updated_at = utcnow()
        if not active:
            self.accounts.end_sessions(user_id)

    def is_active(self, user_id: str) -> bool:
        with self.catalog.session() as s:
            row = s.get(UserRow, user_id)
            return row is not None and bool(row.active)

    def users(self, *, include_disabled: bool = True) -> list[Principal]:
        """Every user's principal (groups as stored), disabled ones too unless told otherwise."""
        with self.catalog.session() as s:
            q = select(UserRow.id).order_by(UserRow.id)
            if not include_disabled:
                q = q.where(UserRow.active.is_(True))
            ids = s.scalars(q).all()
            members: dict[str, set[str]] = {u: set() for u in ids}
            for user, group in s.execute(select(MembershipRow.user_id, MembershipRow.group_name)):
                if user in members:
                    members[user].add(group)
        return [Principal(u, frozenset(members[u])) for u in ids]

    def groups(self) -> dict[str, list[str]]:
        """Group name -> member user ids."""
        with self.catalog.session() as s:
            out: dict[str, list[str]] = {g: [] for g in s.scalars(select(GroupRow.name).order_by(GroupRow.name))}
            for user, group in s.execute(select(MembershipRow.user_id, MembershipRow.group_name).order_by(MembershipRow.user_id)):
                out.setdefault(group, []).append(user)
        return out
