"""Web sign-in with the directory password (``password_login``) and roles from directory groups,
against a real OpenLDAP server (tests/identity/conftest.py starts one per test)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bastion.audit import AuditQuery
from bastion.core.config import LdapDirectoryConfig
from bastion.identity.ldap_login import check_password
from bastion.identity.ldap_sync import sync_ldap
from bastion.server import create_app
from tests.identity.conftest import free_port, ldap_settings, ssha

LOGIN = "/api/v1/auth/login"
ALICE_LDAP_PW = "alice-directory-pw-1"
BOB_LDAP_PW = "bob-directory-pw-22"
ROOT_PW = "root-bastion-pw-333"


def set_ldap_password(slapd, uid: str, password: str) -> None:
    from ldap3 import MODIFY_REPLACE

    with slapd.admin() as c:
        c.modify(slapd.user_dn(uid), {"userPassword": [(MODIFY_REPLACE, [ssha(password)])]})


def configure(ws, url: str, **over) -> None:
    ws.config.directory.ldap = LdapDirectoryConfig(**ldap_settings(url, **over))


def login(app, username: str, password: str, address: str) -> tuple:
    """(status, body without per-request fields, client): each address has its own failure counters."""
    client = TestClient(app, client=(address, 40000))
    r = client.post(LOGIN, json={"username": username, "password": password})
    body = {k: v for k, v in r.json().items() if k not in ("instance", "request_id")}
    return r.status_code, body, client


def test_a_directory_user_signs_in_with_the_directory_password(ws, slapd):
    set_ldap_password(slapd, "alice", ALICE_LDAP_PW)
    set_ldap_password(slapd, "bob", BOB_LDAP_PW)
    configure(ws, slapd.url, password_login=True)
    sync_ldap(ws)
    ws.accounts.set_password("alice", "stored-in-bastion-1")  # never used for a directory user
    ws.accounts.set_password("root", ROOT_PW)
    slapd.add_user("root", "Root Impostor")  # a directory entry named like the local admin
    set_ldap_password(slapd, "root", "root-directory-pw-4")
    app = create_app(ws)

    status, body, alice = login(app, "alice", ALICE_LDAP_PW, "198.51.100.1")
    assert status == 200 and body["user"] == "alice" and "finance" in body["groups"]
    docs = alice.get("/api/v1/documents").json()["documents"]
    assert "finance/q3.md" in {d["path"] for d in docs}  # readable by group:finance, from the directory
    bob = login(app, "bob", BOB_LDAP_PW, "198.51.100.2")[2]
    assert "finance/q3.md" not in {d["path"] for d in bob.get("/api/v1/documents").json()["documents"]}

    unknown = login(app, "nosuchuser_zz", ALICE_LDAP_PW, "198.51.100.10")[:2]
    assert unknown[0] == 401 and unknown == login(app, "alice", "wrong-password", "198.51.100.11")[:2]
    assert unknown == login(app, "*)(uid=*", ALICE_LDAP_PW, "198.51.100.12")[:2]
    assert unknown == login(app, "alice", "stored-in-bastion-1", "198.51.100.13")[:2]  # no fallback
    assert unknown == login(app, "root", "root-directory-pw-4", "198.51.100.14")[:2]  # local: not LDAP
    assert login(app, "alice", "", "198.51.100.15")[:2] == login(app, "nosuchuser_zz", "", "198.51.100.16")[:2]
    assert login(app, "root", ROOT_PW, "198.51.100.17")[0] == 200  # positive control: the local password

    # below the web form: an empty password or a wildcard user id never reaches a successful bind
    cfg = ws.config.directory.ldap
    assert check_password(cfg, ws.home, "alice", ALICE_LDAP_PW)
    assert not check_password(cfg, ws.home, "alice", "")
    assert not check_password(cfg, ws.home, "alic*", ALICE_LDAP_PW)  # unescaped, (uid=alic*) finds alice
    assert not ws.accounts.verify_password("alice", "", directory_check=lambda u, p: True).ok

    logins = ws.audit.query(AuditQuery(action="login"))
    assert ("alice", "ldap", "ok") in {(e["actor"], e["via"], e["outcome"]) for e in logins}
    assert ("root", "password", "ok") in {(e["actor"], e["via"], e["outcome"]) for e in logins}


def test_disabled_directory_users_and_password_login_off_are_refused(ws, slapd):
    set_ldap_password(slapd, "alice", ALICE_LDAP_PW)
    set_ldap_password(slapd, "bob", BOB_LDAP_PW)
    sync_ldap(ws)
    app = create_app(ws)
    refused = login(app, "nosuchuser_zz", "whatever-pw", "203.0.113.1")[:2]
    assert login(app, "alice", ALICE_LDAP_PW, "203.0.113.2")[:2] == refused  # password_login is off

    configure(ws, slapd.url, password_login=True)
    assert login(app, "alice", ALICE_LDAP_PW, "203.0.113.3")[0] == 200
    slapd.set_disabled("alice", True)  # disabled in the directory, before the next sync
    assert login(app, "alice", ALICE_LDAP_PW, "203.0.113.4")[:2] == refused
    sync_ldap(ws)
    assert not ws.directory.is_active("alice")
    slapd.set_disabled("alice", False)  # enabled there again, still disabled here until the next sync
    assert login(app, "alice", ALICE_LDAP_PW, "203.0.113.5")[:2] == refused
    assert login(app, "bob", BOB_LDAP_PW, "203.0.113.6")[0] == 200  # positive control


def test_an_unreachable_directory_answers_503_and_counts_no_failure(ws, slapd):
    set_ldap_password(slapd, "alice", ALICE_LDAP_PW)
    sync_ldap(ws)
    ws.accounts.set_password("root", ROOT_PW)
    configure(ws, f"ldap://127.0.0.1:{free_port()}", password_login=True, timeout_s=2)
    app = create_app(ws)
    for _ in range(6):  # more than the 5 failures that lock a user name at an address
        status, body, _ = login(app, "alice", ALICE_LDAP_PW, "192.0.2.7")
        assert status == 503 and "the directory could not be reached" in body["detail"]
    assert login(app, "root", ROOT_PW, "192.0.2.7")[0] == 200  # local users do not need the directory
    entry = ws.audit.query(AuditQuery(action="login", actor="alice"))[-1]
    assert (entry["outcome"], entry["detail"]["reason"]) == ("failed", "unavailable")
    configure(ws, slapd.url, password_login=True)
    assert login(app, "alice", ALICE_LDAP_PW, "192.0.2.7")[0] == 200  # nothing was held against alice


def test_roles_follow_directory_groups_and_never_touch_local_users(ws, slapd):
    ws.directory.add_user("writer", role="editor")  # a local editor
    sync_ldap(ws)
    ws.accounts.set_role("erin", "admin")
    assert sync_ldap(ws)["total_changes"] == 0  # without admin_groups / editor_groups roles stay
    assert ws.accounts.role("erin") == "admin"

    configure(ws, slapd.url, admin_groups=["finance", "no-such-group"], editor_groups=["staff"])
    result = sync_ldap(ws)
    roles = ws.accounts.roles()
    assert {u: roles.get(u, "member") for u in ("alice", "bob", "carol", "erin")} == {
        "alice": "admin", "bob": "editor", "carol": "admin", "erin": "member"}  # carol: nested in Finance
    assert "erin: admin -> member" in result["role_changes"]
    assert any("no-such-group" in c for c in result["conflicts"])
    assert (roles["root"], roles["writer"]) == ("admin", "editor")  # local users keep their roles
    audit = ws.audit.query(AuditQuery(action="directory.sync"))[-1]
    assert "alice: member -> admin" in audit["detail"]["role_changes"]

    slapd.set_members("Finance", [slapd.group_dn("Analysts")])  # alice leaves Finance (stays in Staff)
    result = sync_ldap(ws)
    assert result["role_changes"] == ["alice: admin -> editor"]
    assert ws.accounts.role("alice") == "editor" and ws.accounts.role("carol") == "admin"
    with TestClient(create_app(ws)) as client:  # the demotion takes effect on the next request
        _, key = ws.accounts.create_key("alice")
        r = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
        assert r.json()["role"] == "editor"


def test_password_login_over_plain_ldap_to_another_host_is_refused():
    plain = {"url": "ldap://ldap.example.com", "user_base": "ou=people,dc=example,dc=org", "password_login": True}
    with pytest.raises(ValueError, match=r"would send users' passwords \(password_login\) unencrypted"):
        LdapDirectoryConfig(**plain)
    assert LdapDirectoryConfig(**plain, start_tls=True).password_login  # positive control
