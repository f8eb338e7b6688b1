"""Make the catalog's directory-managed users and groups match what a directory holds.

A directory (LDAP, Active Directory) is read into a :class:`Snapshot`; :func:`plan` compares it
with the catalog and lists the changes, :func:`apply` makes them. Only users and groups of the
snapshot's origin are managed: a ``local`` user is never changed, and an LDAP user whose name a
local user already has is reported as a conflict and left out.

A membership is directory-managed when both the user and the group come from the directory; an
administrator's other memberships of a directory user (in a local group) stay.

>>> from bastion.catalog.db import Catalog
>>> from bastion.directory import Directory
>>> d = Directory(Catalog.open("sqlite:///:memory:"))
>>> snap = Snapshot("ldap", users={"ann": ExternalUser("ann", "u-1")},
...                 groups={"finance": ExternalGroup("finance", "g-1", members=frozenset({"ann"}))})
>>> [c.kind for c in plan(d.catalog, snap).changes]
['user.create', 'group.create', 'membership.add']
>>> _ = apply(d, plan(d.catalog, snap)); d.principal("ann").groups == {"finance"}
True
>>> plan(d.catalog, snap).changes
[]
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, select

from bastion.catalog.models import AccountRow, ApiKeyRow, GroupRow, MembershipRow, UserRow, WebSessionRow, utcnow

if TYPE_CHECKING:
    from bastion.catalog.db import Catalog
    from bastion.directory import Directory


@dataclass(frozen=True)
class ExternalUser:
    """A user as the directory has it (``name``: the Bastion user id it maps to)."""

    name: str
    external_id: str
    display_name: str | None = None
    email: str | None = None
    active: bool = True


@dataclass(frozen=True)
class ExternalGroup:
    """A group as the directory has it; ``members``: user names, nested groups already resolved."""

    name: str
    external_id: str
    display_name: str | None = None
    members: frozenset[str] = frozenset()


@dataclass
class Snapshot:
    """Everything read from one directory, with what could not be mapped (``problems``)."""

    origin: str
    users: dict[str, ExternalUser] = field(default_factory=dict)
    groups: dict[str, ExternalGroup] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RoleGroups:
    """The directory groups that make a directory user an admin or an editor; everyone else is a member.

    >>> RoleGroups(admin=frozenset({"it-admins"}), editor=frozenset({"writers"})).role({"writers", "it-admins"})
    'admin'
    """

    admin: frozenset[str] = frozenset()
    editor: frozenset[str] = frozenset()

    def role(self, groups: set[str]) -> str:
        return "admin" if groups & self.admin else "editor" if groups & self.editor else "member"


@dataclass(frozen=True)
class Change:
    """One change: ``kind`` (``user.create``, ``user.disable``, ``membership.add`` ...), its target, why."""

    kind: str
    target: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "target": self.target, "detail": self.detail}


@dataclass
class Plan:
    """The changes that make the catalog match ``snapshot``, and the names left out (``conflicts``)."""

    snapshot: Snapshot
    remove_policy: Literal["disable", "delete"]
    changes: list[Change] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    managed_before: int = 0  # active users of this origin in the catalog before the sync
    active_after: int = 0  # active users of this origin once the plan is applied

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(c.kind for c in self.changes).items()))

    def of(self, kind: str) -> list[str]:
        return [c.target for c in self.changes if c.kind == kind]


def plan(catalog: Catalog, snap: Snapshot, remove: Literal["disable", "delete"] = "disable",
         roles: RoleGroups | None = None) -> Plan:
    """Compare ``snap`` with the catalog; nothing is written. With ``roles``, each directory user's
    role follows their groups (``user.role`` changes); without it roles are left alone."""
    origin = snap.origin
    out = Plan(snap, remove)
    with catalog.session() as s:
        users = {r.id: r for r in s.scalars(select(UserRow))}
        groups = {r.name: r for r in s.scalars(select(GroupRow))}
        members: set[tuple[str, str]] = {(u, g) for u, g in s.execute(select(MembershipRow.user_id, MembershipRow.group_name))}
        current_roles: dict[str, str] = {u: r for u, r in s.execute(select(AccountRow.user_id, AccountRow.role))}
    out.managed_before = sum(1 for r in users.values() if r.origin == origin and r.active)

    managed: set[str] = set()  # directory users that this origin manages (existing or new)
    for u in snap.users.values():
        row = users.get(u.name)
        if row is None:
            out.changes.append(Change("user.create", u.name, "" if u.active else "disabled in the directory"))
        elif row.origin != origin:
            out.conflicts.append(f"user {u.name!r} from {origin} has the name of a {row.origin} user, which is "
                                 f"left untouched; rename one of them (or set a different user id attribute)")
            continue
        else:
            _user_updates(out, row, u)
        managed.add(u.name)
    for row in users.values():
        if row.origin == origin and row.id not in snap.users:
            if remove == "delete":
                out.changes.append(Change("user.delete", row.id, f"no longer in the {origin} directory"))
            elif row.active:
                out.changes.append(Change("user.disable", row.id, f"no longer in the {origin} directory"))

    for g in snap.groups.values():
        grow = groups.get(g.name)
        if grow is None:
            out.changes.append(Change("group.create", g.name))
        elif grow.origin != origin:
            out.changes.append(Change("group.adopt", g.name, f"a {grow.origin} group of this name now follows "
                                      f"the directory; its {grow.origin} members stay"))
        elif (grow.external_id, grow.display_name) != (g.external_id, g.display_name):
            out.changes.append(Change("group.update", g.name))
    managed_groups = set(snap.groups) | {n for n, r in groups.items() if r.origin == origin}

    # memberships of directory users in directory groups follow the directory (removed users keep none)
    wanted = {(u, g.name) for g in snap.groups.values() for u in g.members if u in managed}
    current = {(u, g) for u, g in members if g in managed_groups and u in users and users[u].origin == origin}
    deleted = set(out.of("user.delete"))
    for user, group in sorted(wanted - current):
        out.changes.append(Change("membership.add", f"{user} -> {group}"))
    for user, group in sorted(current - wanted):
        if user not in deleted:  # a deleted user's memberships go with it
            out.changes.append(Change("membership.remove", f"{user} -> {group}"))

    for name, grow in groups.items():
        if grow.origin == origin and name not in snap.groups:
            others = any(g == name and not (u in users and users[u].origin == origin) for u, g in members)
            out.changes.append(Change("group.release" if others else "group.delete", name,
                                      f"no longer in the {origin} directory"
                                      + ("; its other members stay, as a local group" if others else "")))

    if roles is not None:
        _role_changes(out, roles, managed, current_roles)
    active = {u.name for u in snap.users.values() if u.active and u.name in managed}
    out.active_after = len(active)
    return out


def _role_changes(out: Plan, roles: RoleGroups, managed: set[str], current: dict[str, str]) -> None:
    snap = out.snapshot
    groups_of: dict[str, set[str]] = {}
    for g in snap.groups.values():
        for user in g.members:
            groups_of.setdefault(user, set()).add(g.name)
    for name in sorted(managed):
        have, want = current.get(name, "member"), roles.role(groups_of.get(name, set()))
        if have != want:
            out.changes.append(Change("user.role", name, f"{have} -> {want}"))
    for kind, names in (("admin", roles.admin), ("editor", roles.editor)):
        for name in sorted(names - set(snap.groups)):
            out.conflicts.append(f"{kind}_groups names {name!r}, which is not a group from the directory "
                                 f"(after group name mapping); it gives nobody the {kind} role")


def _user_updates(out: Plan, row: UserRow, u: ExternalUser) -> None:
    if row.external_id and u.external_id != row.external_id and not _dn_like(row.external_id, u.external_id):
        # the name now belongs to another directory entry (a person who left, a name reused): what the
        # previous holder had (keys, sessions) must not pass to the new one
        out.changes.append(Change("user.reassign", u.name, "the name now belongs to another directory entry; "
                                  "its API keys are revoked and its sessions ended"))
    elif (row.display_name, row.email, row.external_id) != (u.display_name, u.email, u.external_id):
        out.changes.append(Change("user.update", u.name))
    if row.active and not u.active:
        out.changes.append(Change("user.disable", u.name, "disabled in the directory"))
    elif not row.active and u.active:
        out.changes.append(Change("user.enable", u.name))


def _dn_like(*ids: str) -> bool:
    """DNs change when an entry moves; only a stable id (entryUUID, objectGUID) tells people apart."""
    return all("=" in i for i in ids)


def apply(directory: Directory, p: Plan) -> dict[str, Any]:
    """Make the changes of ``p``; returns what was done (its counts). Users are disabled through
    :meth:`Directory.set_active`, which ends their sessions; a disabled user's keys stop at once."""
    snap, origin, now = p.snapshot, p.snapshot.origin, utcnow()
    kinds: dict[str, set[str]] = {}
    for c in p.changes:
        kinds.setdefault(c.kind, set()).add(c.target)
    with directory.catalog.session(write=True) as s:
        for name in sorted(kinds.get("user.create", ())):
            u = snap.users[name]
            s.add(UserRow(id=name, display_name=u.display_name, origin=origin, external_id=u.external_id,
                          email=u.email, active=u.active, updated_at=now))
        for name in sorted(kinds.get("user.update", set()) | kinds.get("user.reassign", set())):
            u, row = snap.users[name], s.get(UserRow, name)
            if row is not None:
                row.display_name, row.email, row.external_id, row.updated_at = u.display_name, u.email, u.external_id, now
        for name in sorted(kinds.get("user.reassign", ())):
            s.execute(delete(WebSessionRow).where(WebSessionRow.user_id == name))
            for key in s.scalars(select(ApiKeyRow).where(ApiKeyRow.user_id == name, ApiKeyRow.revoked_at.is_(None))):
                key.revoked_at = now
        for name in sorted(kinds.get("group.create", ())):
            g = snap.groups[name]
            s.add(GroupRow(name=name, origin=origin, external_id=g.external_id, display_name=g.display_name,
                           updated_at=now))
        for name in sorted(kinds.get("group.adopt", set()) | kinds.get("group.update", set())):
            g, grow = snap.groups[name], s.get(GroupRow, name)
            if grow is not None:
                grow.origin, grow.external_id, grow.display_name, grow.updated_at = origin, g.external_id, g.display_name, now
        s.flush()
        for target in sorted(kinds.get("membership.add", ())):
            user, _, group = target.partition(" -> ")
            s.add(MembershipRow(user_id=user, group_name=group))
        for target in sorted(kinds.get("membership.remove", ())):
            user, _, group = target.partition(" -> ")
            s.execute(delete(MembershipRow).where(MembershipRow.user_id == user, MembershipRow.group_name == group))
        for c in p.changes:
            if c.kind == "user.role":
                account = s.get(AccountRow, c.target) or AccountRow(user_id=c.target, failed_logins=0)
                account.role = c.detail.rpartition(" -> ")[2]
                s.add(account)
        for name in sorted(kinds.get("group.delete", ())):
            s.execute(delete(MembershipRow).where(MembershipRow.group_name == name))
            s.execute(delete(GroupRow).where(GroupRow.name == name))
        for name in sorted(kinds.get("group.release", ())):
            grow = s.get(GroupRow, name)
            if grow is not None:
                grow.origin, grow.external_id, grow.updated_at = "local", None, now
    for name in sorted(kinds.get("user.disable", ())):
        directory.set_active(name, False)
    for name in sorted(kinds.get("user.enable", ())):
        directory.set_active(name, True)
    for name in sorted(kinds.get("user.delete", ())):
        directory.accounts.end_sessions(name)
        directory.remove_user(name)  # the catalog's foreign keys take its keys, sessions, conversations along
    return p.counts()
