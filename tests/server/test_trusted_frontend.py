"""A chat front end (Open WebUI, LibreChat) calls with one API key and names each user in a header:
each of its users reads what they may read, and nobody else can pick an identity with a header.
Over a real uvicorn server, with the official ``openai`` client and plain HTTP."""
from __future__ import annotations

import httpx
import openai
import pytest
from sqlalchemy import update

from bastion.core.config import TrustedFrontendsConfig

Q3 = "What was the Q3 2026 revenue?"


@pytest.fixture
def frontend(served):
    """A service user ``openwebui`` whose key is listed as a trusted front end; returns the key."""
    from bastion.accounts import Accounts

    served.ws.directory.add_user("openwebui", groups=[])
    key_id, key = Accounts(served.ws.catalog).create_key("openwebui", name="open-webui")
    served.ws.config.auth.trusted_frontends = TrustedFrontendsConfig(
        keys=[key_id], headers=["X-Forwarded-User"], user_header="X-Forwarded-User", match="id")
    return key


def _as(live, key, user=None, header="X-Forwarded-User"):
    headers = {header: user} if user else {}
    return httpx.Client(base_url=live, headers={"Authorization": f"Bearer {key}", **headers}, timeout=60)


def _chat(live, key, user):
    client = openai.OpenAI(base_url=f"{live}/v1", api_key=key, max_retries=0, timeout=60,
                           default_headers={"X-Forwarded-User": user})
    return client.chat.completions.create(model="bastion", messages=[{"role": "user", "content": Q3}])


def test_each_forwarded_user_reads_what_they_may_with_the_same_key_and_without_it_the_key_is_its_own_user(live, served, frontend):
    alice = _chat(live, frontend, "alice")
    assert "48.2" in alice.choices[0].message.content
    assert alice.model_extra["bastion"]["citations"][0]["path"] == "finance/q3.md"
    bob = _chat(live, frontend, "bob")  # same key, another user: not in finance
    assert "48.2" not in bob.choices[0].message.content
    assert all(c["path"] != "finance/q3.md" for c in bob.model_extra["bastion"]["citations"])
    # the native API too
    q3 = served.docs["finance/q3.md"]
    with _as(live, frontend, "alice") as c:
        assert c.get(f"/api/v1/documents/{q3}").status_code == 200
        assert c.get("/api/v1/auth/me").json() | {"groups": None} == {
            "user": "alice", "role": "member", "groups": None, "via": "frontend", "csrf_token": None}
    with _as(live, frontend, "bob") as c:
        assert c.get(f"/api/v1/documents/{q3}").status_code == 404
        # acting for bob in his questions, not with his credentials
        refused = c.post("/api/v1/keys", json={"name": "minted"})
        assert refused.status_code == 403 and "front end" in refused.json()["detail"]
    with _as(live, served.keys["bob"]) as c:  # bob himself may
        assert c.post("/api/v1/keys", json={"name": "own"}).status_code in (200, 201)
    with _as(live, frontend) as c:  # without the header the front end is its own user
        me = c.get("/api/v1/auth/me").json()
        assert (me["user"], me["via"]) == ("openwebui", "key")
        assert c.get(f"/api/v1/documents/{q3}").status_code == 404


def test_a_key_that_is_not_a_front_end_cannot_forward(live, served, frontend):
    with _as(live, served.keys["bob"], "alice") as c:
        r = c.get(f"/api/v1/documents/{served.docs['finance/q3.md']}")
        assert r.status_code == 403
        assert "X-Forwarded-User" in r.json()["detail"] and "not a trusted front end" in r.json()["detail"]
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=f"{live}/v1", api_key=served.keys["bob"], max_retries=0,
                      default_headers={"X-Forwarded-User": "alice"}).models.list()
    with _as(live, served.keys["bob"]) as c:  # bob's own requests still work
        assert c.get("/api/v1/auth/me").json()["user"] == "bob"
    # with no front end configured at all, the header is refused too, not ignored
    served.ws.config.auth.trusted_frontends = TrustedFrontendsConfig()
    with _as(live, frontend, "alice@example.com", header="X-OpenWebUI-User-Email") as c:
        assert c.get("/api/v1/auth/me").status_code == 403


def test_unknown_and_disabled_forwarded_users_are_refused_not_served_as_the_front_end(live, served, frontend):
    with _as(live, frontend, "mallory") as c:
        r = c.get("/api/v1/auth/me")
        assert r.status_code == 403 and "'mallory'" in r.json()["detail"] and "not a user" in r.json()["detail"]
    served.ws.directory.set_active("alice", False)
    with _as(live, frontend, "alice") as c:
        r = c.get("/api/v1/auth/me")
        assert r.status_code == 403 and "disabled" in r.json()["detail"]
    with pytest.raises(openai.PermissionDeniedError, match="disabled"):
        _chat(live, frontend, "alice")
    served.ws.directory.set_active("alice", True)
    with _as(live, frontend, "alice") as c:
        assert c.get("/api/v1/auth/me").json()["user"] == "alice"


def test_open_webui_headers_map_by_email_and_roles_are_capped(live, served, frontend):
    from bastion.catalog.models import UserRow

    with served.ws.catalog.session() as s:
        s.execute(update(UserRow).where(UserRow.id == "alice").values(email="Alice@Example.com"))
        s.execute(update(UserRow).where(UserRow.id == "root").values(email="root@example.com"))
    served.ws.config.auth.trusted_frontends = TrustedFrontendsConfig(users=["openwebui"])  # Open WebUI's defaults
    owui = {"X-OpenWebUI-User-Name": "Alice A.", "X-OpenWebUI-User-Id": "6f1c-uuid",
            "X-OpenWebUI-User-Email": "alice@example.com", "X-OpenWebUI-User-Role": "admin"}
    with httpx.Client(base_url=live, headers={"Authorization": f"Bearer {frontend}", **owui}) as c:
        assert c.get("/api/v1/auth/me").json() | {"groups": None} == {
            "user": "alice", "role": "member", "groups": None, "via": "frontend", "csrf_token": None}
    with _as(live, frontend, "nobody@example.com", header="X-OpenWebUI-User-Email") as c:
        assert c.get("/api/v1/auth/me").status_code == 403
    with _as(live, frontend, "root@example.com", header="X-OpenWebUI-User-Email") as c:
        assert c.get("/api/v1/auth/me").json() | {"groups": None} == {
            "user": "root", "role": "member", "groups": None, "via": "frontend", "csrf_token": None}
        assert c.get("/api/v1/users").status_code == 403  # an admin through a front end is a member
    with _as(live, served.keys["root"]) as c:  # positive control: root's own key is admin
        assert c.get("/api/v1/users").status_code == 200


def test_front_ends_forward_only_from_their_addresses(live, served, frontend):
    cfg = served.ws.config.auth.trusted_frontends
    served.ws.config.auth.trusted_frontends = cfg.model_copy(update={"addresses": ["10.0.0.0/8"]})
    with _as(live, frontend, "alice") as c:
        r = c.get("/api/v1/auth/me")
        assert r.status_code == 403 and "127.0.0.1" in r.json()["detail"]
    served.ws.config.auth.trusted_frontends = cfg.model_copy(update={"addresses": ["127.0.0.1"]})
    with _as(live, frontend, "alice") as c:
        assert c.get("/api/v1/auth/me").json()["user"] == "alice"


def test_the_audit_names_the_user_and_the_front_end(live, served, frontend):
    _chat(live, frontend, "alice")
    with _as(live, frontend, "mallory") as c:
        c.get("/api/v1/auth/me")
    with _as(live, served.keys["root"]) as c:
        asks = c.get("/api/v1/audit", params={"actor": "alice", "action": "ask"}).json()["entries"]
        refused = c.get("/api/v1/audit", params={"actor": "openwebui", "outcome": "denied"}).json()["entries"]
    key_id = served.ws.config.auth.trusted_frontends.keys[0]
    assert [(e["via"], e["detail"]["key_id"], e["detail"]["frontend"]) for e in asks] == [
        ("frontend", key_id, "openwebui")]
    assert asks[0]["lineage_id"]
    assert any(e["action"] == "auth.frontend" and "mallory" in e["detail"]["reason"] for e in refused)


def test_bad_configuration_is_refused_naming_the_entry():
    with pytest.raises(ValueError, match="not an HTTP header name"):
        TrustedFrontendsConfig(user_header="X User")
    with pytest.raises(ValueError, match="'10.0.0.999'"):
        TrustedFrontendsConfig(addresses=["10.0.0.999"])
