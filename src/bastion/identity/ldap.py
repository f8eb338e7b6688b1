"""Read users and groups from an LDAP server or Active Directory (``[directory.ldap]``) with ldap3.

:func:`read_directory` binds, runs paged searches for users and groups, resolves nested groups
(cycles included) and returns a :class:`~bastion.identity.reconcile.Snapshot` in Bastion's names:
user ids from ``user_id_attribute``, group names from ``group_name_attribute`` (lower case, runs
of characters a group name cannot hold as ``-``, with ``group_prefix`` in front:
``cn=Finance Team,ou=groups,...`` becomes ``finance-team``).

>>> group_name("Finance Team", lowercase=True, prefix="")
'finance-team'
>>> group_name("R&D, Berlin", lowercase=False, prefix="ldap-")
'ldap-R-D-Berlin'
"""
from __future__ import annotations

import os
import re
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.core.errors import BastionError
from bastion.identity.reconcile import ExternalGroup, ExternalUser, Snapshot

if TYPE_CHECKING:
    from ldap3 import Connection

    from bastion.core.config import LdapDirectoryConfig

# what bastion.directory accepts as a user or group name
_NAME = re.compile(r"^[A-Za-z0-9_.@\-\u0080-\uffff]{1,200}$")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.@\-\u0080-\uffff]+")
_ACCOUNTDISABLE = 0x2  # Active Directory userAccountControl: the account is disabled


class DirectoryError(BastionError):
    """The directory cannot be read (unreachable, bind refused, bad base or filter), or a sync was refused."""


class SyncRefused(DirectoryError):
    """A sync would disable too many users at once (a misconfigured base?); ``--force`` overrides."""


def group_name(raw: str, *, lowercase: bool, prefix: str) -> str | None:
    """The Bastion group name of a directory group's name (None: nothing usable left)."""
    name = _NOT_IN_NAME.sub("-", raw.strip()).strip("-")
    if lowercase:
        name = name.lower()
    return f"{prefix}{name}" if name and _NAME.match(f"{prefix}{name}") else None


def normal_dn(dn: str) -> str:
    """A DN compared case- and space-insensitively (``CN=A, DC=x`` == ``cn=a,dc=x``)."""
    from ldap3.core.exceptions import LDAPInvalidDnError
    from ldap3.utils.dn import parse_dn

    try:
        return ",".join(f"{t.lower()}={v.lower()}" for t, v, _ in parse_dn(dn, strip=True))
    except (LDAPInvalidDnError, ValueError):
        return dn.strip().lower()


def bind_password(cfg: LdapDirectoryConfig, home: Path) -> str | None:
    """The bind password from the environment variable or file the config names (None: no password)."""
    if cfg.bind_password_env:
        value = os.environ.get(cfg.bind_password_env)
        if not value:
            raise DirectoryError(f"directory.ldap.bind_password_env names {cfg.bind_password_env!r}, which is not set "
                                 "in the environment; set it to the bind password of "
                                 f"{cfg.bind_dn!r}")
        return value
    if cfg.bind_password_file:
        path = home / cfg.bind_password_file
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise DirectoryError(f"directory.ldap.bind_password_file {str(path)!r} cannot be read: "
                                 f"{exc.strerror or exc}") from None
    return None


def connect(cfg: LdapDirectoryConfig, home: Path) -> tuple[Connection, str]:
    """A bound, read-only connection to the first server of ``cfg.url`` that answers, and its URL."""
    try:
        from ldap3 import NONE, Connection, Server, Tls
    except ImportError:
        raise DirectoryError("directory sync from LDAP needs the ldap3 package: pip install 'bastion[ldap]'") from None
    from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPInvalidCredentialsResult

    password = bind_password(cfg, home)
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file and str(home / cfg.ca_file))
    failures = []
    for url in cfg.url:
        conn = Connection(Server(url, get_info=NONE, connect_timeout=cfg.timeout_s, tls=tls),
                          user=cfg.bind_dn, password=password, read_only=True, raise_exceptions=True,
                          receive_timeout=int(max(1, cfg.timeout_s)), auto_referrals=False)
        try:
            conn.open()
        except LDAPException as exc:
            failures.append(f"{url}: {_reason(exc)}")
            continue
        except Exception as exc:  # noqa: BLE001 - ldap3 raises assorted errors on a peer that does not speak LDAP
            failures.append(f"{url}: {_not_ldap(exc)}")
            continue
        try:
            if cfg.start_tls:
                try:
                    conn.start_tls()
                except LDAPException as exc:
                    raise DirectoryError(f"LDAP server {url}: StartTLS failed: {_reason(exc)}") from None
            conn.bind()
        except (LDAPBindError, LDAPInvalidCredentialsResult) as exc:
            _close(conn)
            raise DirectoryError(f"LDAP server {url} refused the bind as {cfg.bind_dn or '(anonymous)'!r}: "
                                 f"{_reason(exc)}; check bind_dn and the bind password") from None
        except LDAPException as exc:
            _close(conn)
            raise DirectoryError(f"LDAP server {url}: bind failed: {_reason(exc)}") from None
        except DirectoryError:
            _close(conn)
            raise
        except Exception as exc:  # noqa: BLE001 - ldap3 raises assorted errors on a peer that does not speak LDAP
            _close(conn)
            raise DirectoryError(f"{url}: {_not_ldap(exc)}") from None
        return conn, url
    raise DirectoryError("no LDAP server could be reached: " + "; ".join(failures)
                         + f" (timeout {cfg.timeout_s:g} s; check directory.ldap.url and the network)")


def _close(conn: Connection) -> None:
    try:
        conn.unbind()
    except Exception:  # noqa: BLE001 - the connection is already broken; the error that broke it is reported
        pass


def _not_ldap(exc: Exception) -> str:
    return f"the answer is not LDAP ({type(exc).__name__}: {exc}); is this the LDAP port, and ldaps:// vs ldap:// right?"


def _reason(exc: Exception) -> str:
    from ldap3.core.exceptions import LDAPOperationResult

    if isinstance(exc, LDAPOperationResult):  # a result code of the server: its name, and its message if any
        message = str(exc.message or "").strip()
        return f"{exc.description} (result {exc.result})" + (f": {message}" if message else "")
    text = str(exc).strip()
    while len(text) > 1 and text[0] in "([" and text[-1] in ")]":  # ldap3 nests its messages in tuples
        text = text[1:-1].strip().rstrip(",").strip().strip("\"'")
    return (text or type(exc).__name__).replace("socket connection error while opening: ", "")


@dataclass
class _Entry:
    dn: str
    attrs: dict[str, list[bytes]]  # attribute name (lower case, options kept) -> raw values

    def text(self, name: str) -> str | None:
        values = self.attrs.get(name.lower())
        return values[0].decode("utf-8", "replace").strip() if values else None

    def texts(self, name: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.attrs.get(name.lower(), [])]


@dataclass
class _Group:
    entry: _Entry
    name: str
    member_dns: list[str] = field(default_factory=list)
    member_uids: list[str] = field(default_factory=list)


def _search(conn: Connection, base: str, flt: str, attrs: list[str], page_size: int, what: str,
            settings: str) -> Iterator[_Entry]:
    from ldap3 import SUBTREE
    from ldap3.core.exceptions import LDAPException

    try:
        for item in conn.extend.standard.paged_search(base, flt, SUBTREE, attributes=attrs, paged_size=page_size,
                                                      generator=True):
            if item.get("type") == "searchResEntry":
                yield _Entry(item["dn"], {k.lower(): list(v) for k, v in item["raw_attributes"].items()})
    except LDAPException as exc:
        raise DirectoryError(f"LDAP search for {what} under {base!r} with filter {flt!r} failed: {_reason(exc)}; "
                             f"check {settings} (and that the bind account may read there)") from None


def _external_id(entry: _Entry, attribute: str) -> str:
    if attribute.lower() in ("dn", "entrydn", "distinguishedname"):
        return entry.dn
    values = entry.attrs.get(attribute.lower())
    if not values:
        return entry.dn
    if attribute.lower() == "objectguid" and len(values[0]) == 16:
        return str(uuid.UUID(bytes_le=values[0]))
    return values[0].decode("utf-8", "replace")


def _full_range(conn: Connection, entry: _Entry) -> None:
    """Active Directory hands out large attributes (``member`` of a big group) in ranges: fetch the rest."""
    from ldap3 import BASE

    for key in [k for k in entry.attrs if ";range=" in k]:
        attr, _, span = key.partition(";range=")
        values, end = list(entry.attrs.pop(key)), span.partition("-")[2]
        while end != "*":
            start = int(end) + 1
            conn.search(entry.dn, "(objectClass=*)", BASE, attributes=[f"{attr};range={start}-*"])
            got = {k.lower(): v for e in conn.response if e.get("type") == "searchResEntry"
                   for k, v in e["raw_attributes"].items()}
            part = next((k for k in got if k.startswith(f"{attr};range=")), None)
            if part is None:
                break
            values.extend(got[part])
            end = part.partition(";range=")[2].partition("-")[2]
        entry.attrs[attr] = entry.attrs.get(attr, []) + values


def read_directory(cfg: LdapDirectoryConfig, home: Path) -> tuple[Snapshot, str]:
    """Users and groups of the directory ``cfg`` names, and the URL of the server that answered."""
    conn, url = connect(cfg, home)
    try:
        snap = Snapshot("ldap")
        users_by_dn, uid_names = _read_users(conn, cfg, snap)
        _read_groups(conn, cfg, snap, users_by_dn, uid_names)
        return snap, url
    finally:
        _close(conn)


def _read_users(conn: Connection, cfg: LdapDirectoryConfig, snap: Snapshot) -> tuple[dict[str, str], dict[str, str]]:
    attrs = sorted({cfg.user_id_attribute, cfg.display_name_attribute, cfg.mail_attribute, "userAccountControl",
                    *([cfg.external_id_attribute] if cfg.external_id_attribute.lower() != "dn" else []),
                    *([cfg.disabled_attribute] if cfg.disabled_attribute else [])})
    disabled: set[str] = set()
    if cfg.disabled_filter:
        flt = f"(&{cfg.user_filter}{cfg.disabled_filter})"
        disabled = {normal_dn(e.dn) for e in _search(conn, cfg.user_base, flt, ["1.1"], cfg.page_size, "disabled users",
                                                    "user_base, user_filter and disabled_filter")}
    users_by_dn: dict[str, str] = {}
    uid_names: dict[str, str] = {}  # the id attribute's value as memberUid holds it -> user name
    for e in sorted(_search(conn, cfg.user_base, cfg.user_filter, attrs, cfg.page_size, "users",
                                   "user_base and user_filter"), key=lambda e: e.dn):
        raw = e.text(cfg.user_id_attribute)
        if not raw:
            snap.problems.append(f"user entry {e.dn!r} has no {cfg.user_id_attribute}; skipped")
            continue
        name = raw.lower() if cfg.lowercase_names else raw
        if not _NAME.match(name):
            snap.problems.append(f"user {raw!r} ({e.dn}) is not a usable user id (letters, digits, '.', '_', '-', "
                                 "'@'; no spaces or commas); skipped")
            continue
        if name in snap.users:
            snap.problems.append(f"user {name!r} comes from two entries; {e.dn!r} skipped")
            continue
        uac = e.text("userAccountControl")
        off = (normal_dn(e.dn) in disabled or bool(cfg.disabled_attribute and e.attrs.get(cfg.disabled_attribute.lower()))
               or bool(uac and uac.lstrip("-").isdigit() and int(uac) & _ACCOUNTDISABLE))
        snap.users[name] = ExternalUser(name, _external_id(e, cfg.external_id_attribute),
                                        e.text(cfg.display_name_attribute), e.text(cfg.mail_attribute), not off)
        users_by_dn[normal_dn(e.dn)] = name
        uid_names[raw.lower()] = name
    return users_by_dn, uid_names


def _read_groups(conn: Connection, cfg: LdapDirectoryConfig, snap: Snapshot, users_by_dn: dict[str, str],
                 uid_names: dict[str, str]) -> None:
    member_attrs = [a.lower() for a in cfg.member_attributes]
    attrs = sorted({cfg.group_name_attribute, *cfg.member_attributes,
                    *([cfg.external_id_attribute] if cfg.external_id_attribute.lower() != "dn" else [])})
    groups: dict[str, _Group] = {}  # normal DN -> group
    taken: dict[str, str] = {}
    base = cfg.group_base or cfg.user_base
    for e in sorted(_search(conn, base, cfg.group_filter, attrs, cfg.page_size, "groups",
                                   "group_base and group_filter"), key=lambda e: e.dn):
        _full_range(conn, e)
        raw = e.text(cfg.group_name_attribute)
        name = group_name(raw, lowercase=cfg.lowercase_names, prefix=cfg.group_prefix) if raw else None
        if name is None:
            snap.problems.append(f"group entry {e.dn!r} has no usable {cfg.group_name_attribute}; skipped")
            continue
        if name in taken:
            snap.problems.append(f"groups {taken[name]!r} and {e.dn!r} both map to the group name {name!r}; "
                                 "the second is skipped (set group_prefix or rename one)")
            continue
        taken[name] = e.dn
        g = _Group(e, name)
        for a in member_attrs:
            (g.member_uids if a == "memberuid" else g.member_dns).extend(e.texts(a))
        groups[normal_dn(e.dn)] = g
    for dn, g in groups.items():
        members = _members(dn, groups, users_by_dn, uid_names)
        snap.groups[g.name] = ExternalGroup(g.name, _external_id(g.entry, cfg.external_id_attribute),
                                            g.entry.text(cfg.group_name_attribute), frozenset(members))


def _members(start: str, groups: dict[str, _Group], users_by_dn: dict[str, str], uid_names: dict[str, str]) -> set[str]:
    """The users of group ``start`` and of every group nested in it, however deep; a cycle ends the walk."""
    seen, todo = {start}, [start]
    users: set[str] = set()
    while todo:
        g = groups[todo.pop()]
        users.update(uid_names[u.lower()] for u in g.member_uids if u.lower() in uid_names)
        for member in g.member_dns:
            key = normal_dn(member)
            if key in users_by_dn:
                users.add(users_by_dn[key])
            elif key in groups and key not in seen:
                seen.add(key)
                todo.append(key)
    return users
