"""Directory sync with the Active Directory settings of docs/directory.md, against a real slapd that
holds AD-shaped entries (Microsoft's user schema as Debian ships it in /etc/ldap/schema/msuser.schema):
sAMAccountName, displayName, binary objectGUID, userAccountControl and nested ``group`` objects."""
from __future__ import annotations

import uuid

import pytest

from bastion.catalog.models import UserRow
from bastion.core.config import LdapDirectoryConfig
from bastion.identity.ldap_sync import sync_ldap
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.identity.conftest import ADMIN_DN, ADMIN_PW, SCHEMAS, SUFFIX, running_slapd

USERS = f"OU=Staff,{SUFFIX}"
GROUPS = f"OU=Groups,{SUFFIX}"
NORMAL, DISABLED, NORMAL_NO_EXPIRY = 512, 514, 66048  # userAccountControl: bit 2 (0x2) is "disabled"
_MSTOP = {"instanceType": 4, "nTSecurityDescriptor": b"\x01\x00"}


def _admin(url: str):
    from ldap3 import Connection, Server

    return Connection(Server(url), ADMIN_DN, ADMIN_PW, auto_bind=True, raise_exceptions=True)


def _populate(url: str) -> dict[str, uuid.UUID]:
    guids = {name: uuid.uuid4() for name in ("ALee", "BSmith", "CDoe")}
    with _admin(url) as c:
        c.add(SUFFIX, ["dcObject", "organization"], {"dc": "example", "o": "Example"})
        for ou in (USERS, GROUPS):
            c.add(ou, ["organizationalUnit"], {"ou": ou.split(",")[0][3:]})
        for sam, full, uac in (("ALee", "Ann Lee", NORMAL), ("BSmith", "Bo Smith", DISABLED),
                               ("CDoe", "Cy Doe", NORMAL_NO_EXPIRY)):
            c.add(f"CN={full},{USERS}", ["user", "extensibleObject"],
                  {"cn": full, "sn": full.split()[-1], "sAMAccountName": sam, "displayName": full,
                   "mail": f"{sam.lower()}@corp.example", "userAccountControl": uac, "objectGUID": guids[sam].bytes_le,
                   "objectCategory": f"CN=Person,CN=Schema,{SUFFIX}", **_MSTOP})
        for cn, members in (("EMEA Accountants", [f"CN=Cy Doe,{USERS}"]),
                            ("Finance Team", [f"CN=Ann Lee,{USERS}", f"CN=EMEA Accountants,{GROUPS}"])):
            c.add(f"CN={cn},{GROUPS}", ["group"], {"cn": cn, "groupType": -2147483646, "member": members,
                                                   "objectGUID": uuid.uuid4().bytes_le,
                                                   "objectCategory": f"CN=Group,CN=Schema,{SUFFIX}", **_MSTOP})
    return guids


@pytest.fixture
def ad(tmp_path_factory):
    with running_slapd(tmp_path_factory.mktemp("ad"), SCHEMAS + ("msuser",)) as url:
        yield url, _populate(url)


def test_active_directory_users_groups_and_disabled_accounts(ad, tmp_path, monkeypatch):
    url, guids = ad
    monkeypatch.setenv("AD_BIND_PASSWORD", ADMIN_PW)
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    # the Active Directory example of docs/directory.md; slapd has no objectCategory=person shorthand
    ws.config.directory.ldap = LdapDirectoryConfig(
        url=[url], bind_dn=ADMIN_DN, bind_password_env="AD_BIND_PASSWORD", user_base=USERS,
        user_filter="(objectClass=user)", user_id_attribute="sAMAccountName", display_name_attribute="displayName",
        external_id_attribute="objectGUID", group_base=GROUPS, group_filter="(objectClass=group)",
        member_attributes=["member"])
    result = sync_ldap(ws)
    assert result["disabled_in_directory"] == 1
    assert ws.directory.principal("alee").groups == {"finance-team"}
    assert ws.directory.principal("cdoe").groups == {"emea-accountants", "finance-team"}  # nested
    assert not ws.directory.is_active("bsmith")  # userAccountControl 514
    with ws.catalog.session() as s:
        row = s.get(UserRow, "alee")
        assert (row.external_id, row.display_name) == (str(guids["ALee"]), "Ann Lee")
    from ldap3 import MODIFY_REPLACE

    with _admin(url) as c:
        c.modify(f"CN=Ann Lee,{USERS}", {"userAccountControl": [(MODIFY_REPLACE, [DISABLED])]})
    assert sync_ldap(ws)["changes"] == {"user.disable": 1}
    assert not ws.directory.is_active("alee") and ws.directory.is_active("cdoe")
    ws.close()
