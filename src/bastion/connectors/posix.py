"""Who may read a file, as the file system says: owner, group, mode bits and POSIX ACLs.

A folder source with ``permissions = "posix"`` labels each file with the principals that may
read it *and* traverse (``x``) every folder from the source root down to it:

- the owner's uid becomes ``user:<name>`` and a group's gid ``group:<name>``, the names looked
  up through NSS (:mod:`pwd`, :mod:`grp`), so users and groups from LDAP or SSSD work;
- named users and groups of a POSIX ACL count as well, their permissions masked by the ACL's
  mask entry;
- the "other" bits grant ``posix_other`` (``None``: nobody);
- the superuser (uid 0, gid 0) is never a principal, and a uid or gid without a name is left
  out and reported, never widened.

Labels cannot say "group staff except bob". When an entry denies a user or group whom a
granting group or "other" would include, that granting entry is left out (a group is replaced
by its listed members who are not denied): the result may be narrower than the file system,
never wider. The access ACL is read from the ``system.posix_acl_access`` extended attribute,
whose binary layout (Linux ``posix_acl_xattr``) is decoded here.

>>> perms = Permissions(uid=1000, gid=1000, owner=6, group=4, other=0)
>>> perms.allows(READ).owner
True
"""
from __future__ import annotations

import errno
import grp
import os
import pwd
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from bastion.core.errors import IngestError
from bastion.core.types import EVERYONE

XATTR = "system.posix_acl_access"
READ, EXECUTE = 4, 1
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_HEADER, _ENTRY = struct.Struct("<I"), struct.Struct("<HHI")


class PosixAclError(IngestError):
    """An access ACL that cannot be decoded: the file is withheld, never read as open."""


@dataclass(frozen=True)
class Permissions:
    """One inode's owner, group and permission bits (``rwx`` as 4, 2, 1), with its ACL entries.

    ``group`` is the owning group's own bits (with an ACL, not the mask); ``mask`` is ``None``
    when the file has no extended ACL.
    """

    uid: int
    gid: int
    owner: int
    group: int
    other: int
    users: tuple[tuple[int, int], ...] = ()
    groups: tuple[tuple[int, int], ...] = ()
    mask: int | None = None

    def allows(self, bit: int) -> Grant:
        """Which entries grant ``bit`` (the mask applied) and which deny it."""
        masked = self.mask if self.mask is not None else 7
        named_users = [(uid, bool(p & masked & bit)) for uid, p in self.users]
        group_class = [(self.gid, bool(self.group & masked & bit))] + [(g, bool(p & masked & bit)) for g, p in self.groups]
        return Grant(
            owner_uid=self.uid, owner=bool(self.owner & bit),
            users=frozenset(u for u, ok in named_users if ok), denied_users=frozenset(u for u, ok in named_users if not ok),
            groups=frozenset(g for g, ok in group_class if ok), denied_groups=frozenset(g for g, ok in group_class if not ok),
            other=bool(self.other & bit))


@dataclass(frozen=True)
class Grant:
    """The entries of one inode that grant (or deny) one permission bit."""

    owner_uid: int
    owner: bool
    users: frozenset[int]
    denied_users: frozenset[int]
    groups: frozenset[int]
    denied_groups: frozenset[int]
    other: bool


def decode_acl(data: bytes) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...], int | None, int | None]:
    """Decode a ``system.posix_acl_access`` value: (named users, named groups, owning group's
    bits, mask), each named entry as (id, bits). Raises :class:`PosixAclError` on anything but
    a well-formed version-2 ACL.

    >>> raw = bytes.fromhex("02000000" "0100060000000000" "0200040064000000" "0400040000000000"
    ...                     "1000040000000000" "2000000000000000")
    >>> decode_acl(raw)
    (((100, 4),), (), 4, 4)
    """
    if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size:
        raise PosixAclError(f"POSIX ACL of {len(data)} bytes is not a header and whole entries")
    (version,) = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise PosixAclError(f"POSIX ACL version {version} is not the supported version {_VERSION}")
    users: list[tuple[int, int]] = []
    groups: list[tuple[int, int]] = []
    group_obj: int | None = None
    mask: int | None = None
    for tag, perm, ident in _ENTRY.iter_unpack(data[_HEADER.size:]):
        if perm & ~7:
            raise PosixAclError(f"POSIX ACL entry with permission bits {perm:#x}")
        if tag == _USER:
            users.append((ident, perm))
        elif tag == _GROUP:
            groups.append((ident, perm))
        elif tag == _GROUP_OBJ:
            group_obj = perm
        elif tag == _MASK:
            mask = perm
        elif tag not in (_USER_OBJ, _OTHER):
            raise PosixAclError(f"POSIX ACL entry with unknown tag {tag:#x}")
    if (users or groups) and mask is None:
        raise PosixAclError("POSIX ACL with named entries but no mask")
    return tuple(users), tuple(groups), group_obj, mask


def permissions(fd: int) -> Permissions:
    """The permissions of the open file or folder ``fd``: its mode plus its access ACL, if any.
    Raises :class:`PosixAclError` (an ACL that cannot be decoded) or ``OSError``."""
    st = os.fstat(fd)
    mode = st.st_mode
    try:
        data = os.getxattr(fd, XATTR)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        data = b""
    base = Permissions(uid=st.st_uid, gid=st.st_gid, owner=(mode >> 6) & 7, group=(mode >> 3) & 7, other=mode & 7)
    if not data:
        return base
    users, groups, group_obj, mask = decode_acl(data)
    return Permissions(uid=base.uid, gid=base.gid, owner=base.owner, other=base.other, users=users, groups=groups,
                       group=group_obj if group_obj is not None else base.group, mask=mask)


@dataclass
class Names:
    """uid/gid -> principal through NSS, with group membership; remembers what it could not map.

    ``other``: the principal the "other" bits grant (``None``: nobody).
    """

    other: str | None = None
    unmapped: set[str] = field(default_factory=set)
    _users: dict[int, str | None] = field(default_factory=dict)
    _groups: dict[int, str | None] = field(default_factory=dict)
    _member_of: dict[str, frozenset[int]] = field(default_factory=dict)

    def user(self, uid: int) -> str | None:
        if uid == 0:
            return None  # the superuser is not a principal
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = None
        name = self._users[uid]
        if name is None:
            self.unmapped.add(f"uid {uid}")
        return name

    def group(self, gid: int) -> str | None:
        if gid == 0:
            return None  # the superuser's group is not a principal
        if gid not in self._groups:
            try:
                self._groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self._groups[gid] = None
        name = self._groups[gid]
        if name is None:
            self.unmapped.add(f"gid {gid}")
        return name

    def gids_of(self, user: str) -> frozenset[int]:
        """The gids NSS says ``user`` belongs to (primary and supplementary)."""
        if user not in self._member_of:
            try:
                entry = pwd.getpwnam(user)
                self._member_of[user] = frozenset(os.getgrouplist(user, entry.pw_gid))
            except (KeyError, OSError):
                self._member_of[user] = frozenset()
        return self._member_of[user]

    def gid(self, group: str) -> int | None:
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            return None

    def members(self, group: str) -> frozenset[str]:
        """The users NSS lists as members of ``group`` (members by primary group only are not listed)."""
        try:
            listed = grp.getgrnam(group).gr_mem
        except KeyError:
            return frozenset()
        return frozenset(u for u in listed if u != "root")

    def in_group(self, user: str, group: str) -> bool:
        gid = self.gid(group)
        return gid is not None and gid in self.gids_of(user)

    def principals(self, grant: Grant, other: str | None) -> frozenset[str]:
        """The labels ``grant`` admits (``other``: the label the "other" entry grants), leaving
        out any granting group or "other" that would admit a user or group the same inode
        denies (labels cannot express the exception)."""
        denied_users = {n for n in map(self.user, grant.denied_users) if n}
        owner_denied = not grant.owner and grant.owner_uid != 0
        if owner_denied and (owner := self.user(grant.owner_uid)):
            denied_users.add(owner)
        labels: set[str] = set()
        if grant.owner and (owner := self.user(grant.owner_uid)):
            labels.add(f"user:{owner}")
        labels |= {f"user:{n}" for n in map(self.user, grant.users) if n}
        for name in filter(None, map(self.group, grant.groups)):
            if any(self.in_group(u, name) for u in denied_users):
                labels |= {f"user:{m}" for m in self.members(name) - denied_users}
            else:
                labels.add(f"group:{name}")
        if grant.other and other and not (grant.denied_users or grant.denied_groups or owner_denied):
            labels.add(other)
        return frozenset(labels)

    def meet(self, first: frozenset[str], second: frozenset[str]) -> frozenset[str]:
        """The labels admitting exactly the principals both sets admit (as NSS knows them; a
        group NSS does not know contributes only where both sets name it)."""
        if EVERYONE in first:
            return second
        if EVERYONE in second:
            return first
        out = set(first & second)
        for a, b in ((first, second), (second, first)):
            groups_b = [label[6:] for label in b if label.startswith("group:")]
            for label in a - b:
                if label.startswith("user:") and any(self.in_group(label[5:], g) for g in groups_b):
                    out.add(label)
        for g in (label[6:] for label in first - second if label.startswith("group:")):
            for h in (label[6:] for label in second - first if label.startswith("group:")):
                out |= {f"user:{u}" for u in self.members(g) & self.members(h)}
        return frozenset(out)


def readers(chain: Iterable[Permissions], file: Permissions, names: Names) -> frozenset[str]:
    """Who may read ``file`` when reached through the folders ``chain`` (root first)."""
    result = names.principals(file.allows(READ), names.other)
    for folder in chain:
        if not result:
            break
        # a folder's "other" x bit lets anyone through: it admits nobody by itself, the file's
        # own read bits still decide who reads
        result = names.meet(result, names.principals(folder.allows(EXECUTE), EVERYONE))
    return result
