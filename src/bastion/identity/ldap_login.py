r"""Check a directory user's password by binding to the LDAP server as that user (``password_login``).

The service account (``bind_dn``) looks the user's entry up by ``user_id_attribute`` (the value
escaped, so a user name cannot change the filter), then the same connection, with the same TLS
settings as the sync, binds as that entry's DN with the password given. An empty password is
refused before anything is sent: many servers answer an empty-password bind as an anonymous
success. A user the directory marks as disabled (``disabled_filter``) is not found.

>>> from bastion.core.config import LdapDirectoryConfig
>>> cfg = LdapDirectoryConfig(url="ldap://localhost", user_base="ou=people,dc=example,dc=org")
>>> print(user_filter(cfg, "*)(uid=*"))
(&(objectClass=inetOrgPerson)(uid=\2a\29\28uid=\2a))
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bastion.identity.ldap import DirectoryError, _close, _reason, connect

if TYPE_CHECKING:
    from bastion.core.config import LdapDirectoryConfig


def user_filter(cfg: LdapDirectoryConfig, user_id: str) -> str:
    """The search filter that finds the active entry of ``user_id`` and nothing else."""
    from ldap3.utils.conv import escape_filter_chars

    parts = [cfg.user_filter, f"({cfg.user_id_attribute}={escape_filter_chars(user_id)})"]
    if cfg.disabled_filter:
        parts.append(f"(!{cfg.disabled_filter})")
    return "(&" + "".join(parts) + ")"


def check_password(cfg: LdapDirectoryConfig, home: Path, user_id: str, password: str) -> bool:
    """Whether ``password`` is ``user_id``'s directory password.

    Raises:
        DirectoryError: the directory cannot be reached or refuses the service account (nothing
            was learnt about the password).
    """
    if not isinstance(password, str) or not password or not isinstance(user_id, str) or not user_id:
        return False
    from ldap3 import SUBTREE
    from ldap3.core.exceptions import LDAPException, LDAPOperationResult, LDAPSizeLimitExceededResult

    conn, url = connect(cfg, home)
    try:
        try:
            conn.search(cfg.user_base, user_filter(cfg, user_id), SUBTREE, attributes=["1.1"], size_limit=2)
        except LDAPSizeLimitExceededResult:
            return False  # more than one entry has this user id: no password can be right
        except LDAPException as exc:
            raise DirectoryError(f"LDAP server {url}: looking up user {user_id!r} failed: {_reason(exc)}") from None
        dns = [e["dn"] for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if len(dns) != 1:
            return False  # unknown there, disabled there, or ambiguous: no password can be right
        try:
            conn.rebind(user=dns[0], password=password)
        except LDAPOperationResult:
            return False  # the server answered: wrong password, or the account is locked or expired there
        except LDAPException as exc:
            raise DirectoryError(f"LDAP server {url}: bind as {dns[0]!r} failed: {_reason(exc)}") from None
        return bool(conn.bound)
    finally:
        _close(conn)
