"""SCIM 2.0 provisioning (/scim/v2) against a real uvicorn server: the scim2-tester conformance
checks, and what provisioning changes for the people searching."""
from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import write
from tests.server.conftest import auth, free_port, running

TOKEN = "scim-test-token-" + "x" * 32
SCIM = "application/scim+json"
USER, GROUP = "urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


@dataclass
class Live:
    url: str  # the server's base URL
    scim: httpx.Client  # /scim/v2 with the SCIM token
    ws: object
    keys: dict


@pytest.fixture(scope="module")
def scim_server(tmp_path_factory):
    """A workspace with local users (root: admin, alice in finance, bob) and documents for everyone,
    group:finance and group:sales-emea, served by uvicorn with [scim] on; one for this module."""
    import uvicorn

    from bastion.server import create_app
    from bastion.testing import HashEmbedder
    from bastion.workspace import Workspace

    root = tmp_path_factory.mktemp("scim")
    write(root / "docs" / "hr" / "travel.md", "# Travel policy\n\nHotel costs are capped at EUR 180 per night.\n")
    write(root / "docs" / "finance" / ".bastion-acl", "group:finance\n")
    write(root / "docs" / "finance" / "q3.md", "# Q3 results\n\nQ3 2026 revenue was EUR 48.2 million.\n")
    write(root / "docs" / "sales" / ".bastion-acl", "group:sales-emea\n")
    write(root / "docs" / "sales" / "pipeline.md", "# EMEA pipeline\n\nThe Lisbon tender closes on 14 March.\n")
    Workspace.init(root / "ws")
    ws = Workspace.open(root / "ws", embedder=HashEmbedder())
    ws.directory.add_user("root", groups=["it"], role="admin")
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", root / "docs", acl="everyone")
    ws.sync()
    keys = {u: ws.accounts.create_key(u)[1] for u in ("root", "alice", "bob")}
    ws.config.scim.enabled = True
    ws.config.scim.max_body_kb = 16
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASTION_SCIM_TOKEN", TOKEN)
        app = create_app(ws)
        with running(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")) as url:
            with httpx.Client(base_url=f"{url}/scim/v2", headers=auth(TOKEN), timeout=30) as c:
                yield Live(url, c, ws, keys)
    ws.close()


@pytest.fixture
def live_scim(scim_server):
    """The module's server, with the [scim] rules a test changes put back afterwards."""
    yield scim_server
    scim_server.ws.config.scim.manage_local = False
    scim_server.ws.config.scim.role_groups = {}


# -- conformance -------------------------------------------------------------------------------
# checks Bastion deliberately does not pass, with why (docs/scim.md says the same):
UNSUPPORTED = {
    # every Bastion user is enabled or disabled; removing `active` is refused (400 mutability)
    ("User", "check_remove_attribute", "Failed to remove attribute 'active'"),
}
NOT_RUN = set()  # every check of scim2-tester runs


def test_scim2_tester_conformance_checks_pass(live_scim):
    from httpx2 import Client
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import Status, check_server

    with Client(base_url=f"{live_scim.url}/scim/v2", headers=auth(TOKEN), timeout=30) as http:
        results = check_server(SyncSCIMClient(http))
    failed = {(r.resource_type, r.title, (r.reason or "").split(":")[0]) for r in results
              if r.status in (Status.ERROR, Status.CRITICAL)}
    detail = [f"{r.resource_type} {r.title}: {r.reason}" for r in results if r.status in (Status.ERROR, Status.CRITICAL)]
    assert failed == UNSUPPORTED, "\n".join(detail)
    passed = {(r.resource_type, r.title) for r in results if r.status == Status.SUCCESS}
    for kind in ("User", "Group"):  # the CRUD and PATCH checks ran for both resource types
        for title in ("object_creation", "object_query", "object_replacement", "object_deletion",
                      "check_add_attribute", "check_replace_attribute"):
            assert (kind, title) in passed, (kind, title)
    skipped = {(r.resource_type, r.title) for r in results if r.status == Status.SKIPPED}
    assert skipped == NOT_RUN, skipped


# -- helpers -----------------------------------------------------------------------------------
def _user(user_name: str, **extra) -> dict:
    return {"schemas": [USER], "userName": user_name, "active": True,
            "emails": [{"value": user_name, "primary": True, "type": "work"}], **extra}


def _patch(*ops: dict) -> dict:
    return {"schemas": [PATCH], "Operations": list(ops)}


def _search(live: Live, key: str, query: str) -> list[str]:
    r = httpx.post(f"{live.url}/api/v1/search", json={"query": query, "k": 10}, headers=auth(key), timeout=30)
    assert r.status_code == 200, r.text
    return [h["path"] for h in r.json()["hits"]]


def _scim_error(r: httpx.Response, status: int, scim_type: str | None = None) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(SCIM)
    body = r.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status)
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    assert body["detail"]
    return body["detail"]


PIPELINE = "pipeline.md"


# -- what provisioning changes for the people searching ----------------------------------------
def test_a_provisioned_group_member_finds_the_group_document_and_loses_it_when_removed(live_scim):
    live, c = live_scim, live_scim.scim
    r = c.post("/Users", json=_user("carol@example.com", externalId="00u-carol", displayName="Carol C"))
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith(SCIM)
    carol = r.json()
    assert carol["id"] == "carol@example.com" and carol["meta"]["version"] == r.headers["etag"]
    assert r.headers["location"] == carol["meta"]["location"] == f"{live.url}/scim/v2/Users/carol@example.com"
    assert c.post("/Users", json=_user("dave@example.com")).status_code == 201
    r = c.post("/Groups", json={"schemas": [GROUP], "displayName": "Sales EMEA", "externalId": "00g-sales",
                                "members": [{"value": "carol@example.com"}]})
    assert r.status_code == 201, r.text
    group = r.json()
    assert group["id"] == "sales-emea"  # the ACL label is group:sales-emea
    assert [m["value"] for m in group["members"]] == ["carol@example.com"]

    from sqlalchemy import select

    from bastion.catalog.models import UserRow

    with live.ws.catalog.session() as s:
        row = s.scalars(select(UserRow).where(UserRow.id == "carol@example.com")).one()
        assert (row.origin, row.external_id, row.email, row.display_name) == (
            "scim", "00u-carol", "carol@example.com", "Carol C")
    keys = {u: live.ws.accounts.create_key(u)[1] for u in ("carol@example.com", "dave@example.com")}

    assert any(p.endswith(PIPELINE) for p in _search(live, keys["carol@example.com"], "Lisbon tender"))
    dave_sees = _search(live, keys["dave@example.com"], "Lisbon tender hotel travel")
    assert dave_sees and not any(p.endswith(PIPELINE) for p in dave_sees)  # sees others, not this one

    # a new display name keeps the group's name, so its ACLs keep working
    r = c.patch("/Groups/sales-emea", json=_patch({"op": "replace", "path": "displayName", "value": "Sales Europe"},
                                                  {"op": "add", "path": "members", "value": [
                                                      {"value": "dave@example.com"}]}))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "sales-emea" and r.json()["displayName"] == "Sales Europe"
    assert any(p.endswith(PIPELINE) for p in _search(live, keys["dave@example.com"], "Lisbon tender"))

    r = c.patch("/Groups/sales-emea", json=_patch({"op": "remove", "path": 'members[value eq "carol@example.com"]'}))
    assert r.status_code == 200, r.text
    assert [m["value"] for m in r.json()["members"]] == ["dave@example.com"]
    assert not any(p.endswith(PIPELINE) for p in _search(live, keys["carol@example.com"], "Lisbon tender"))
    assert any(p.endswith(PIPELINE) for p in _search(live, keys["dave@example.com"], "Lisbon tender"))
    # the user's groups follow its memberships
    assert [g["value"] for g in c.get("/Users/dave@example.com").json()["groups"]] == ["sales-emea"]
    assert "groups" not in c.get("/Users/carol@example.com").json()


def test_deactivating_a_user_stops_its_key_and_sessions_at_once_and_delete_removes_it(live_scim):
    live, c = live_scim, live_scim.scim
    for name in ("erin.s@example.com", "frank@example.com"):
        assert c.post("/Users", json=_user(name)).status_code == 201
    erin, frank = (live.ws.accounts.create_key(u)[1] for u in ("erin.s@example.com", "frank@example.com"))
    from datetime import timedelta

    session, _ = live.ws.accounts.create_session("erin.s@example.com", timedelta(hours=1))
    assert _search(live, erin, "travel policy")  # works before
    # Entra ID sends the boolean as a string, with a capitalised op
    r = c.patch("/Users/erin.s@example.com", json=_patch({"op": "Replace", "path": "active", "value": "False"}))
    assert r.status_code == 200 and r.json()["active"] is False, r.text
    denied = httpx.post(f"{live.url}/api/v1/search", json={"query": "travel"}, headers=auth(erin))
    assert denied.status_code == 401
    assert live.ws.accounts.session(session) is None
    assert _search(live, frank, "travel policy")  # another provisioned user still works
    assert _search(live, live.keys["alice"], "travel policy")  # and a local one

    r = c.patch("/Users/erin.s@example.com", json=_patch({"op": "replace", "value": {"active": True}}))
    assert r.json()["active"] is True
    # Entra ID's default mapping writes the address through a filtered path
    r = c.patch("/Users/erin.s@example.com", json=_patch(
        {"op": "Add", "path": 'emails[type eq "work"].value', "value": "erin.new@example.com"},
        {"op": "Add", "path": "phoneNumbers[type eq \"work\"].value", "value": "+1 555 0100"}))  # not kept: ignored
    assert r.status_code == 200 and r.json()["emails"] == [{"value": "erin.new@example.com"}], r.text
    assert _search(live, erin, "travel policy")  # enabled again: the key works again

    r = c.delete("/Users/erin.s@example.com")
    assert r.status_code == 204 and r.content == b""
    _scim_error(c.get("/Users/erin.s@example.com"), 404)
    _scim_error(c.delete("/Users/erin.s@example.com"), 404)
    assert httpx.post(f"{live.url}/api/v1/search", json={"query": "travel"}, headers=auth(erin)).status_code == 401
    assert _search(live, frank, "travel policy")
    # provisioned again under the same name: a new account, the old key stays dead
    assert c.post("/Users", json=_user("erin.s@example.com")).status_code == 201
    assert httpx.post(f"{live.url}/api/v1/search", json={"query": "travel"}, headers=auth(erin)).status_code == 401


def test_scim_never_touches_local_users_or_groups_unless_told_to(live_scim):
    live, c = live_scim, live_scim.scim
    detail = _scim_error(c.post("/Users", json=_user("alice")), 409, "uniqueness")
    assert "local" in detail and "manage_local" in detail
    _scim_error(c.patch("/Users/alice", json=_patch({"op": "replace", "path": "active", "value": False})), 404)
    _scim_error(c.delete("/Users/alice"), 404)
    assert c.get("/Users", params={"filter": 'userName eq "alice"'}).json()["totalResults"] == 0
    _scim_error(c.post("/Groups", json={"schemas": [GROUP], "displayName": "Finance"}), 409, "uniqueness")
    assert _search(live, live.keys["alice"], "Q3 revenue")  # alice untouched: still enabled, still in finance
    assert live.ws.directory.principal("alice").groups == {"finance", "staff"}
    # a group may only hold users SCIM manages
    r = c.post("/Groups", json={"schemas": [GROUP], "displayName": "Mixed", "members": [{"value": "alice"}]})
    assert "alice" in _scim_error(r, 400, "invalidValue")

    live.ws.config.scim.manage_local = True  # now SCIM may adopt them
    r = c.patch("/Users/bob", json=_patch({"op": "replace", "path": "displayName", "value": "Bob B"}))
    assert r.status_code == 200 and r.json()["displayName"] == "Bob B", r.text
    from bastion.catalog.models import UserRow

    with live.ws.catalog.session() as s:
        assert s.get(UserRow, "bob").origin == "scim"


def test_roles_change_only_through_a_configured_group_mapping(live_scim):
    live, c = live_scim, live_scim.scim
    # a role in the payload is not something Bastion reads from SCIM
    assert c.post("/Users", json=_user("gina@example.com", roles=[{"value": "admin"}])).status_code == 201
    r = c.post("/Groups", json={"schemas": [GROUP], "displayName": "Bastion Admins",
                                "members": [{"value": "gina@example.com"}]})
    assert r.status_code == 201
    assert live.ws.accounts.role("gina@example.com") == "member"
    live.ws.config.scim.role_groups = {"bastion-admins": "editor"}
    c.patch("/Groups/bastion-admins", json=_patch({"op": "remove", "path": "members"}))
    c.patch("/Groups/bastion-admins", json=_patch({"op": "add", "path": "members",
                                                   "value": [{"value": "gina@example.com"}]}))
    assert live.ws.accounts.role("gina@example.com") == "editor"
    # Entra ID removes a member with a value rather than a filtered path
    r = c.patch("/Groups/bastion-admins", json=_patch({"op": "Remove", "path": "members",
                                                       "value": [{"value": "gina@example.com"}]}))
    assert r.status_code == 200 and "members" not in r.json(), r.text
    assert live.ws.accounts.role("gina@example.com") == "member"
    assert live.ws.accounts.role("root") == "admin"  # a local admin is never demoted by SCIM


# -- queries -----------------------------------------------------------------------------------
def test_filters_pagination_and_attribute_selection(live_scim):
    c = live_scim.scim
    for i, name in enumerate(["hana@example.com", "hugo@example.org", "ivan@example.com"]):
        assert c.post("/Users", json=_user(name, externalId=f"ext-{i}", displayName=f"Person {i}",
                                           active=i != 1)).status_code == 201
    c.post("/Groups", json={"schemas": [GROUP], "displayName": "Ops", "members": [{"value": "hugo@example.org"}]})

    def ids(kind: str, flt: str) -> list[str]:
        r = c.get(f"/{kind}", params={"filter": flt})
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["Resources"]]

    assert ids("Users", 'userName eq "HANA@example.com"') == ["hana@example.com"]  # userName: any case
    assert ids("Users", 'userName sw "h"') == ["hana@example.com", "hugo@example.org"]
    assert ids("Users", 'emails.value co "example.org"') == ["hugo@example.org"]
    assert ids("Users", 'externalId eq "ext-2"') == ["ivan@example.com"]
    assert ids("Users", 'active eq false and externalId sw "ext-"') == ["hugo@example.org"]
    assert ids("Users", 'displayName eq "Person 0" or displayName eq "Person 2"') == ["hana@example.com",
                                                                                     "ivan@example.com"]
    assert ids("Users", 'userName sw "h" and active eq true') == ["hana@example.com"]
    assert len(ids("Users", 'externalId pr and externalId sw "ext-"')) == 3
    assert ids("Groups", 'members.value eq "hugo@example.org"') == ["ops"]
    assert ids("Groups", 'displayName eq "ops"') == ["ops"]
    assert ids("Groups", 'members[value eq "hana@example.com"]') == []

    page = c.get("/Users", params={"startIndex": 2, "count": 1, "filter": 'externalId sw "ext-"'}).json()
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (3, 2, 1)
    assert [u["id"] for u in page["Resources"]] == ["hugo@example.org"]
    only = c.get("/Users/hana@example.com", params={"attributes": "emails"}).json()
    assert set(only) == {"schemas", "id", "emails"}
    less = c.get("/Users", params={"excludedAttributes": "emails,groups", "filter": 'userName eq "hana@example.com"'})
    assert "emails" not in less.json()["Resources"][0] and less.json()["Resources"][0]["userName"]
    found = c.post("/Users/.search", json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                           "filter": 'userName ew ".org"', "attributes": ["userName"]})
    assert found.status_code == 200 and [u["userName"] for u in found.json()["Resources"]] == ["hugo@example.org"]
    _scim_error(c.get("/Users", params={"filter": 'userName eq "unterminated'}), 400, "invalidFilter")


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_gets_a_scim_error_naming_the_problem_and_changes_nothing(live_scim):
    c = live_scim.scim
    assert "not valid JSON" in _scim_error(c.post("/Users", content=b'{"userName": ', headers={
        "content-type": SCIM}), 400, "invalidSyntax")
    assert "active" in _scim_error(c.post("/Users", json=_user("kim@example.com", active="perhaps")), 400)
    assert "userName" in _scim_error(c.post("/Users", json={"schemas": [USER], "userName": 42}), 400)
    assert "userName" in _scim_error(c.post("/Users", json={"schemas": [USER]}), 400)
    assert "userName" in _scim_error(c.post("/Users", json=_user("kim lee")), 400, "invalidValue")
    assert "JSON object" in _scim_error(c.post("/Users", json=["a list"]), 400, "invalidSyntax")
    big = _user("kim@example.com", displayName="x" * 20_000)
    assert "max_body_kb" in _scim_error(c.post("/Users", json=big), 413)
    assert c.get("/Users", params={"filter": 'userName sw "kim"'}).json()["totalResults"] == 0  # nothing stored

    # Okta sends name rather than displayName: it becomes the display name
    r = c.post("/Users", json=_user("kim@example.com", name={"givenName": "Kim", "familyName": "Lee"}))
    assert r.status_code == 201 and r.json()["displayName"] == "Kim Lee", r.text
    assert "already exists" in _scim_error(c.post("/Users", json=_user("KIM@example.com")), 409, "uniqueness")
    detail = _scim_error(c.put("/Users/kim@example.com", json=_user("kim2@example.com")), 400, "mutability")
    assert "userName" in detail
    bad_op = _patch({"op": "explode", "path": "displayName", "value": "x"})
    _scim_error(c.patch("/Users/kim@example.com", json=bad_op), 400)
    stale = c.put("/Users/kim@example.com", json=_user("kim@example.com", displayName="K"),
                  headers={"If-Match": 'W/"stale"'})
    _scim_error(stale, 412)
    assert c.get("/Users/kim@example.com").json()["displayName"] == "Kim Lee"  # the refused writes changed nothing
    r = c.post("/Groups", json={"schemas": [GROUP], "displayName": "G", "members": [{"value": "nobody@x"}]})
    assert "nobody@x" in _scim_error(r, 400, "invalidValue")
    assert c.get("/Groups", params={"filter": 'displayName eq "G"'}).json()["totalResults"] == 0


def test_only_the_scim_token_opens_scim_and_every_change_is_audited(live_scim):
    from bastion.audit import AuditQuery

    live, c = live_scim, live_scim.scim
    before = live.ws.audit.query(AuditQuery(newest_first=True, limit=1))[0]["id"]
    base = f"{live.url}/scim/v2"
    for headers in ({}, auth("wrong-" + TOKEN), auth(live.keys["alice"]), auth(live.keys["root"])):
        _scim_error(httpx.get(f"{base}/Users", headers=headers), 401)  # members' and admins' API keys too
    assert c.get("/Users").status_code == 200  # the token itself works
    # the credential is checked before the body is read
    _scim_error(httpx.post(f"{base}/Users", content=b"{not json", headers=auth(live.keys["root"])), 401)
    # the token opens nothing else
    assert httpx.post(f"{live.url}/api/v1/search", json={"query": "travel"}, headers=auth(TOKEN)).status_code == 401

    assert c.post("/Users", json=_user("lea@example.com")).status_code == 201
    c.patch("/Users/lea@example.com", json=_patch({"op": "replace", "path": "active", "value": False}))
    c.delete("/Users/lea@example.com")
    entries = live.ws.audit.query(AuditQuery(actor="scim", after_id=before, limit=1000))
    changes = [(e["action"], e["target"], e["outcome"]) for e in entries
               if e["action"].startswith("scim.user.") and e["outcome"] == "ok"]
    assert changes == [("scim.user.create", "lea@example.com", "ok"), ("scim.user.patch", "lea@example.com", "ok"),
                       ("scim.user.delete", "lea@example.com", "ok")]
    denied = live.ws.audit.query(AuditQuery(action="scim.*", outcome="denied", after_id=before, limit=1000))
    assert len(denied) == 5 and {e["actor"] for e in denied} == {"scim"}  # the refused credentials above


def test_a_missing_or_weak_token_and_scim_off_get_errors_that_say_what_to_set(live_scim, monkeypatch):
    from fastapi.testclient import TestClient

    from bastion.server import create_app

    monkeypatch.setenv("BASTION_SCIM_TOKEN", "short")  # read on every request
    detail = _scim_error(httpx.get(f"{live_scim.url}/scim/v2/Users", headers=auth("short")), 503)
    assert "BASTION_SCIM_TOKEN" in detail and "32" in detail
    monkeypatch.setenv("BASTION_SCIM_TOKEN", TOKEN)
    assert live_scim.scim.get("/Users").status_code == 200

    live_scim.ws.config.scim.enabled = False
    try:
        with TestClient(create_app(live_scim.ws)) as off:  # not served at all while off
            assert off.get("/scim/v2/Users", headers=auth(TOKEN)).status_code == 404
    finally:
        live_scim.ws.config.scim.enabled = True


def test_without_the_scim_extra_the_server_says_how_to_install_it(live_scim, monkeypatch):
    import sys

    from bastion.core.errors import ConfigError
    from bastion.server import create_app

    monkeypatch.setitem(sys.modules, "scim2_models", None)  # as if not installed
    for name in ("bastion.identity.scim", "bastion.server.routes.scim"):
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ConfigError, match=r"pip install 'bastion\[scim\]'"):
        create_app(live_scim.ws)
