"""Adding a user over the API never silently replaces an existing user's groups, and names new groups."""
from __future__ import annotations

from tests.server.conftest import auth


def test_adding_an_existing_user_is_refused_unless_replacing(client, served):
    root = auth(served.keys["root"])
    again = client.post("/api/v1/users", json={"user": "alice", "groups": ["staff"]}, headers=root)
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    assert served.ws.principal("alice").groups >= {"finance", "staff"}  # nothing changed
    new = client.post("/api/v1/users", json={"user": "frank", "groups": ["staff", "finanse"]}, headers=root)
    assert new.status_code == 201 and new.json()["new_groups"] == ["finanse"]  # the typo is named
    replaced = client.post("/api/v1/users", json={"user": "alice", "groups": ["staff"], "replace": True}, headers=root)
    assert replaced.status_code == 201 and replaced.json()["groups"] == ["staff"] and replaced.json()["new_groups"] == []
    assert "finance" not in served.ws.principal("alice").groups
