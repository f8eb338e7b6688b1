"""Directory sync from a real OpenLDAP server (tests/identity/conftest.py starts one per test)."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from bastion.audit import AuditQuery
from bastion.core.config import LdapDirectoryConfig
from bastion.identity.ldap import DirectoryError, SyncRefused
from bastion.identity.ldap_sync import sync_ldap
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import paths_seen
from tests.identity.conftest import PASSWORD_ENV, READER_DN, SUFFIX, free_port, ldap_settings


def toml_section(settings: dict) -> str:
    return "\n[directory.ldap]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


def groups_of(ws, user: str) -> set[str]:
    return set(ws.directory.principal(user).groups)


def me(client: TestClient, key: str) -> int:
    return client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"}).status_code


def test_sync_creates_users_and_groups_with_nested_membership(ws):
    result = sync_ldap(ws)
    assert result["outcome"] == "ok" and result["users"] == 5 and result["groups"] == 6
    assert groups_of(ws, "alice") == {"finance", "staff"}
    assert groups_of(ws, "carol") == {"analysts", "finance"}  # in Analysts, which is a member of Finance
    assert groups_of(ws, "bob") == {"staff", "ops"}  # ops is a posixGroup (memberUid)
    assert groups_of(ws, "erin") == {"loop-a", "loop-b"}  # Loop A and Loop B contain each other
    with pytest.raises(Exception, match="disabled"):
        ws.directory.principal("dave")  # employeeType=disabled matches disabled_filter
    from bastion.catalog.models import UserRow

    with ws.catalog.session() as s:
        alice = s.get(UserRow, "alice")
        assert (alice.origin, alice.email, alice.display_name) == ("ldap", "alice@example.org", "Alice Martin")
        assert re.fullmatch(r"[0-9a-f-]{36}", alice.external_id)  # entryUUID
    assert groups_of(ws, "root") == {"it"}  # the local admin is untouched


def test_ldap_groups_decide_who_finds_a_document(ws):
    sync_ldap(ws)
    assert "finance/q3.md" in paths_seen(ws, "Q3 revenue", "carol")  # nested member of Finance
    assert "finance/q3.md" in paths_seen(ws, "Q3 revenue", "alice")
    seen_by_bob = paths_seen(ws, "Q3 revenue", "bob")
    assert "finance/q3.md" not in seen_by_bob
    assert "public/canteen.md" in seen_by_bob  # bob can search; only the finance text is withheld


def test_disabling_in_ldap_stops_keys_and_sessions_at_the_next_sync(ws, slapd):
    from bastion.server import create_app

    sync_ldap(ws)
    _, alice_key = ws.accounts.create_key("alice", name="laptop")
    _, bob_key = ws.accounts.create_key("bob", name="laptop")
    token, _ = ws.accounts.create_session("alice", timedelta(hours=1))
    app = create_app(ws)
    browser = TestClient(app)
    browser.cookies.set("bastion_session", token)
    with TestClient(app) as client:
        assert me(client, alice_key) == 200
        assert browser.get("/api/v1/auth/me").status_code == 200
        slapd.set_disabled("alice", True)
        result = sync_ldap(ws)
        assert result["changes"] == {"user.disable": 1}
        assert me(client, alice_key) == 401
        assert browser.get("/api/v1/auth/me").status_code == 401
        assert ws.accounts.session(token) is None  # ended, not merely refused
        assert me(client, bob_key) == 200  # positive control: others keep working
        slapd.set_disabled("alice", False)
        assert sync_ldap(ws)["changes"] == {"user.enable": 1}
        assert me(client, alice_key) == 200


@pytest.mark.parametrize("policy", ["disable", "delete"])
def test_a_user_deleted_from_ldap_is_disabled_or_deleted(ws, slapd, policy):
    from bastion.server import create_app

    ws.config.directory.ldap = LdapDirectoryConfig(**ldap_settings(slapd.url, remove=policy))
    sync_ldap(ws)
    _, carol_key = ws.accounts.create_key("carol")
    slapd.delete(slapd.user_dn("carol"))
    result = sync_ldap(ws)
    assert result["changes"].get(f"user.{policy}") == 1
    with TestClient(create_app(ws)) as client:
        assert me(client, carol_key) == 401
        _, alice_key = ws.accounts.create_key("alice")
        assert me(client, alice_key) == 200
    assert "carol" not in ws.directory.groups()["finance"]
    users = {p.user_id for p in ws.directory.users()}
    assert ("carol" in users) == (policy == "disable")
    assert "finance/q3.md" in paths_seen(ws, "Q3 revenue", "alice")


def test_group_membership_changes_propagate(ws, slapd):
    sync_ldap(ws)
    assert "finance/q3.md" not in paths_seen(ws, "Q3 revenue", "bob")
    slapd.set_members("Finance", [slapd.user_dn("bob"), slapd.group_dn("Analysts")])  # alice out, bob in
    result = sync_ldap(ws)
    assert result["changes"] == {"membership.add": 1, "membership.remove": 1}
    assert "finance/q3.md" in paths_seen(ws, "Q3 revenue", "bob")
    assert "finance/q3.md" not in paths_seen(ws, "Q3 revenue", "alice")
    assert "finance/q3.md" in paths_seen(ws, "Q3 revenue", "carol")  # still nested
    slapd.delete(slapd.group_dn("Staff"))
    sync_ldap(ws)
    assert "staff" not in ws.directory.groups()
    assert groups_of(ws, "alice") == set()


def test_a_second_sync_changes_nothing_and_each_sync_is_audited(ws):
    first = sync_ldap(ws, actor="cli:ops")
    assert first["total_changes"] > 0
    second = sync_ldap(ws, actor="cli:ops")
    assert second["total_changes"] == 0 and second["changes"] == {}
    entries = ws.audit.query(AuditQuery(action="directory.sync"))
    assert [e["outcome"] for e in entries] == ["ok", "ok"]
    assert entries[1]["detail"]["total_changes"] == 0 and entries[0]["actor"] == "cli:ops"
    status = json.loads((ws.data_dir / "directory-ldap.json").read_text())
    assert status["last"]["total_changes"] == 0 and status["last"]["users"] == 5


def test_dry_run_changes_nothing(ws):
    result = sync_ldap(ws, dry_run=True)
    assert result["changes"]["user.create"] == 5
    assert {p.user_id for p in ws.directory.users()} == {"root"}
    assert not (ws.data_dir / "directory-ldap.json").exists()


def test_local_users_are_never_touched_and_a_name_clash_is_reported(ws, slapd):
    ws.directory.add_user("bob", groups=["contractors"])  # a local bob, before the directory
    _, key = ws.accounts.create_key("bob")
    result = sync_ldap(ws)
    assert any("'bob'" in c and "local" in c for c in result["conflicts"])
    assert groups_of(ws, "bob") == {"contractors"}  # not the directory bob's staff / ops
    assert ws.accounts.authenticate_key(key) is not None
    slapd.delete(slapd.user_dn("bob"))
    sync_ldap(ws)
    assert groups_of(ws, "bob") == {"contractors"} and groups_of(ws, "root") == {"it"}


def test_an_empty_answer_does_not_disable_everyone(ws, slapd):
    sync_ldap(ws)
    ws.config.directory.ldap = LdapDirectoryConfig(**ldap_settings(slapd.url, user_base=f"ou=empty,{SUFFIX}"))
    with pytest.raises(SyncRefused, match=r"no users .*ou=empty.*--force"):
        sync_ldap(ws)
    assert groups_of(ws, "alice") == {"finance", "staff"}  # nothing was changed
    assert ws.audit.query(AuditQuery(action="directory.sync"))[-1]["outcome"] == "denied"
    result = sync_ldap(ws, force=True)
    assert result["changes"]["user.disable"] == 4
    with pytest.raises(Exception, match="disabled"):
        ws.directory.principal("alice")


def test_losing_most_users_at_once_is_refused(ws, slapd):
    sync_ldap(ws)
    for uid in ("alice", "bob", "carol"):
        slapd.delete(slapd.user_dn(uid))
    with pytest.raises(SyncRefused, match=r"only 1 of the 4 active users"):
        sync_ldap(ws)
    assert ws.directory.is_active("alice")


def test_a_wrong_bind_password_names_the_server(ws, slapd, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password")
    with pytest.raises(DirectoryError, match=re.escape(slapd.url) + r".*refused the bind.*cn=bastion"):
        sync_ldap(ws)
    status = json.loads((ws.data_dir / "directory-ldap.json").read_text())
    assert status["last"]["outcome"] == "failed" and "refused the bind" in status["last"]["error"]
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(DirectoryError, match=PASSWORD_ENV):
        sync_ldap(ws)


def test_an_unreachable_server_is_a_clear_error(ws, slapd):
    dead = f"ldap://127.0.0.1:{free_port()}"
    ws.config.directory.ldap = LdapDirectoryConfig(**ldap_settings(dead, timeout_s=3))
    with pytest.raises(DirectoryError, match=r"no LDAP server could be reached: " + re.escape(dead)):
        sync_ldap(ws)
    # with a second server listed, the one that answers is used
    ws.config.directory.ldap = LdapDirectoryConfig(**ldap_settings([dead, slapd.url], timeout_s=3))
    assert sync_ldap(ws)["server"] == slapd.url


def _configured_home(tmp_path, settings: dict):
    home = tmp_path / "cli-ws"
    Workspace.init(home)
    with (home / "bastion.toml").open("a", encoding="utf-8") as f:
        f.write(toml_section(settings))
    return home


def test_the_cli_syncs_and_reports_status(tmp_path, slapd, monkeypatch):
    from typer.testing import CliRunner

    from bastion.cli.app import app
    from tests.identity.conftest import READER_PW

    monkeypatch.setenv(PASSWORD_ENV, READER_PW)
    home = str(_configured_home(tmp_path, ldap_settings(slapd.url)))
    runner = CliRunner()
    dry = runner.invoke(app, ["--home", home, "directory", "sync", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    said = " ".join(dry.output.split())
    assert "dry run: 20 change(s) would be made; nothing was changed" in said and "user.create 5" in said
    done = runner.invoke(app, ["--home", home, "directory", "sync", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["changes"]["user.create"] == 5
    again = runner.invoke(app, ["--home", home, "directory", "sync"])
    assert "0 change(s) made" in again.output
    status = json.loads(runner.invoke(app, ["--home", home, "directory", "status", "--json"]).output)
    assert status["last"]["outcome"] == "ok" and status["catalog"] == {"active_users": 4, "disabled_users": 1,
                                                                       "groups": 6}
    assert "last sync" in runner.invoke(app, ["--home", home, "directory", "status"]).output
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password")
    failed = runner.invoke(app, ["--home", home, "directory", "sync"])
    assert failed.exit_code == 2 and "refused the bind" in failed.output
    shown = " ".join(runner.invoke(app, ["--home", home, "directory", "status"]).output.split())
    assert "failed" in shown and "refused the bind" in shown and "last successful sync" in shown


def test_serve_syncs_the_directory_on_its_interval(tmp_path, slapd, monkeypatch):
    import time

    from bastion.server import create_app
    from tests.identity.conftest import READER_PW

    monkeypatch.setenv(PASSWORD_ENV, READER_PW)
    home = _configured_home(tmp_path, ldap_settings(slapd.url, interval="1h"))
    ws = Workspace.open(home, embedder=HashEmbedder())
    with TestClient(create_app(ws)):
        deadline = time.monotonic() + 20
        while not ws.audit.query(AuditQuery(action="directory.sync")) and time.monotonic() < deadline:
            time.sleep(0.1)
    [entry] = ws.audit.query(AuditQuery(action="directory.sync"))
    assert entry["actor"] == "system:directory-schedule" and entry["outcome"] == "ok"
    assert groups_of(ws, "carol") == {"analysts", "finance"}
    ws.close()


def test_a_password_in_the_config_file_is_refused_without_echoing_it(tmp_path, slapd):
    from bastion.core.config import load_config
    from bastion.core.errors import ConfigError

    home = _configured_home(tmp_path, {**ldap_settings(slapd.url), "bind_password": "hunter2-secret"})
    with pytest.raises(ConfigError, match="unknown key 'directory.ldap.bind_password'") as err:
        load_config(home)
    assert "hunter2-secret" not in str(err.value)
    with pytest.raises(ValueError, match="must start with ldap:// or ldaps://"):
        LdapDirectoryConfig(**ldap_settings("http://ldap.example.com"))
    with pytest.raises(ValueError, match="would send the bind password unencrypted"):
        LdapDirectoryConfig(**ldap_settings("ldap://ldap.example.com"))
    assert LdapDirectoryConfig(**ldap_settings("ldap://ldap.example.com", start_tls=True)).start_tls
    with pytest.raises(ValueError, match="give bind_dn with bind_password_env"):
        LdapDirectoryConfig(url="ldaps://ldap.example.com", user_base=SUFFIX, bind_dn=READER_DN)


def test_without_the_ldap_extra_the_error_names_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ldap3", None)  # as if `pip install 'bastion[ldap]'` had not been run
    Workspace.init(tmp_path / "bare")
    ws = Workspace.open(tmp_path / "bare", embedder=HashEmbedder())
    ws.config.directory.ldap = LdapDirectoryConfig(url="ldap://127.0.0.1:1", user_base=f"ou=people,{SUFFIX}")
    with pytest.raises(DirectoryError, match=r"pip install 'bastion\[ldap\]'"):
        sync_ldap(ws)
    ws.close()


def test_a_local_group_of_the_same_name_keeps_its_local_members(ws, slapd):
    ws.directory.add_user("root", groups=["it", "finance"], role="admin")  # local finance member before LDAP
    result = sync_ldap(ws)
    assert result["changes"]["group.adopt"] == 1
    assert set(ws.directory.groups()["finance"]) == {"alice", "carol", "root"}
    slapd.delete(slapd.group_dn("Finance"))
    result = sync_ldap(ws)
    assert result["changes"]["group.release"] == 1
    assert ws.directory.groups()["finance"] == ["root"]  # the directory's members are gone, root stays
    assert "finance/q3.md" in paths_seen(ws, "Q3 revenue", "root")
    assert "finance/q3.md" not in paths_seen(ws, "Q3 revenue", "alice")
    assert sync_ldap(ws)["total_changes"] == 0


def test_start_tls_verifies_the_servers_certificate(tmp_path, monkeypatch):
    from tests.identity.conftest import ADMIN_DN, ADMIN_PW, Slapd, make_certificates, running_slapd

    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = make_certificates(certs)
    tls = (f"TLSCACertificateFile {ca}", f"TLSCertificateFile {cert}", f"TLSCertificateKeyFile {key}")
    monkeypatch.setenv(PASSWORD_ENV, ADMIN_PW)
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    with running_slapd(tmp_path / "slapd", extra=tls) as url:
        Slapd(url).populate()
        settings = ldap_settings(url, bind_dn=ADMIN_DN, start_tls=True)
        ws.config.directory.ldap = LdapDirectoryConfig(**settings)  # the system CAs do not know this one
        with pytest.raises(DirectoryError, match=r"StartTLS failed: .*certificate verify failed"):
            sync_ldap(ws)
        ws.config.directory.ldap = LdapDirectoryConfig(**settings, ca_file=str(ca))
        assert sync_ldap(ws)["users"] == 5
    ws.close()
