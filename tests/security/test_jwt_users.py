"""Finding 15: any JWT subject was a member with `everyone`, even after DELETE /users/{id}. Now a token
whose user is not in the catalog is refused unless `auth.jwt.allow_unknown_users = true`."""
from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.server.conftest import auth

ISS, AUD = "https://idp.example.test", "bastion"


@pytest.fixture
def idp(served):
    """make(allow_unknown_users) -> a client of an app trusting a local JWKS; token(sub, groups) signs."""
    from fastapi.testclient import TestClient

    from bastion.core.config import JwtConfig
    from bastion.server import create_app

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (served.ws.home / "jwks.json").write_text(json.dumps({"keys": [jwk | {"kid": "k1", "use": "sig", "alg": "RS256"}]}))
    clients = []

    def make(**options) -> TestClient:
        served.ws.config.auth.jwt = JwtConfig(jwks_file="jwks.json", issuer=ISS, audience=AUD, **options)
        clients.append(TestClient(create_app(served.ws)))
        return clients[-1]

    def token(sub: str, groups: list[str] | None = None) -> str:
        claims = {"sub": sub, "iss": ISS, "aud": AUD, "exp": int(time.time()) + 300, "groups": groups or []}
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    yield make, token
    for c in clients:
        c.close()


def _paths(client, token: str) -> set[str]:
    r = client.post("/api/v1/search", json={"query": "hotel costs per night"}, headers=auth(token))
    assert r.status_code == 200, r.text
    return {h["path"] for h in r.json()["hits"]}


def test_an_unknown_subject_is_refused_by_default(idp, served):
    make, token = idp
    client = make()
    r = client.get("/api/v1/auth/me", headers=auth(token("mallory", ["finance"])))
    assert r.status_code == 401 and r.json()["type"] == "urn:bastion:problem:unauthenticated"
    assert client.post("/api/v1/search", json={"query": "revenue"}, headers=auth(token("mallory"))).status_code == 401
    # positive control: a catalog user's token works, with the catalog's groups
    me = client.get("/api/v1/auth/me", headers=auth(token("alice")))
    assert me.status_code == 200 and me.json()["user"] == "alice" and me.json()["groups"] == ["finance", "staff"]
    assert "hr/travel.md" in _paths(client, token("alice"))
    from bastion.audit import AuditQuery

    refused = served.app.state.server.audit.query(AuditQuery(action="auth.jwt", outcome="denied"))
    assert refused and refused[-1]["actor"] == "mallory" and "not a user" in refused[-1]["detail"]["reason"]


def test_a_removed_users_token_stops_working_at_once(idp, served):
    make, token = idp
    client = make()
    bob = token("bob")
    assert client.get("/api/v1/auth/me", headers=auth(bob)).json()["user"] == "bob"
    assert client.delete("/api/v1/users/bob", headers=auth(served.keys["root"])).status_code == 200
    assert client.get("/api/v1/auth/me", headers=auth(bob)).status_code == 401
    assert client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(bob)).status_code == 401
    assert client.get("/api/v1/auth/me", headers=auth(token("alice"))).status_code == 200  # positive control


def test_allow_unknown_users_admits_them_as_members_of_everyone(idp):
    make, token = idp
    client = make(allow_unknown_users=True)
    me = client.get("/api/v1/auth/me", headers=auth(token("mallory", ["staff"])))
    assert me.status_code == 200
    assert me.json() | {"csrf_token": None} == {"user": "mallory", "role": "member", "groups": ["staff"], "via": "jwt",
                                                "csrf_token": None}
    paths = _paths(client, token("mallory"))
    assert "hr/travel.md" in paths and "finance/q3.md" not in paths
    assert client.get("/api/v1/users", headers=auth(token("mallory"))).status_code == 403


def test_the_option_is_off_by_default_and_strictly_typed():
    from bastion.core.config import JwtConfig

    assert JwtConfig(jwks_file="j.json", issuer=ISS, audience=AUD).allow_unknown_users is False
    with pytest.raises(ValueError):
        JwtConfig(jwks_file="j.json", issuer=ISS, audience=AUD, allow_unknown_userz=True)
