"""Finding 14: /openapi.json and /api/docs were served without a credential. Now they need one like
every route but /healthz, /readyz and /api/v1/auth/login."""
from __future__ import annotations

import pytest

from tests.server.conftest import ALICE_PW, auth

PAGES = ["/openapi.json", "/api/docs"]


@pytest.mark.parametrize("path", PAGES)
def test_the_spec_and_docs_need_a_credential(client, served, path):
    r = client.get(path)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    assert "paths" not in r.text and "swagger" not in r.text.lower()
    assert client.get(path, headers=auth("bst_wrong_key")).status_code == 401
    # positive control: with an API key
    r = client.get(path, headers=auth(served.keys["bob"]))
    assert r.status_code == 200


def test_the_spec_with_a_key_or_a_session(client, served):
    spec = client.get("/openapi.json", headers=auth(served.keys["bob"])).json()
    assert "/api/v1/search" in spec["paths"] and "/openapi.json" not in spec["paths"]
    assert "swagger-ui" in client.get("/api/docs", headers=auth(served.keys["bob"])).text
    assert client.post("/api/v1/auth/login", json={"username": "alice", "password": ALICE_PW}).status_code == 200
    assert client.get("/openapi.json").json()["paths"] == spec["paths"]  # the session cookie is a credential too
    from bastion.audit import AuditQuery

    entries = served.app.state.server.audit.query(AuditQuery(action="openapi"))
    assert [e["actor"] for e in entries] == ["bob", "alice"]


def test_health_and_login_stay_open(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.post("/api/v1/auth/login", json={"username": "x", "password": "y"}).status_code == 401
