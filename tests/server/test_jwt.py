"""OIDC / JWT bearer tokens: signature, issuer, audience, expiry and algorithm are all checked."""
from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.server.conftest import auth

ISS, AUD = "https://idp.example.test", "bastion"


@pytest.fixture
def idp(served, tmp_path):
    """A signing key, its JWKS file in the workspace, and a client of an app configured for it."""
    from fastapi.testclient import TestClient

    from bastion.core.config import JwtConfig
    from bastion.server import create_app

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (served.ws.home / "jwks.json").write_text(json.dumps({"keys": [jwk | {"kid": "k1", "use": "sig", "alg": "RS256"}]}))
    # dana is the identity provider's user only (not in the catalog): admitted as allow_unknown_users says
    served.ws.config.auth.jwt = JwtConfig(jwks_file="jwks.json", issuer=ISS, audience=AUD, groups_claim="groups",
                                          role_claim="bastion_role", allow_unknown_users=True)

    def token(**over):
        claims = {"sub": "dana", "iss": ISS, "aud": AUD, "exp": int(time.time()) + 300, "groups": ["finance"]} | over
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="RS256",
                          headers={"kid": "k1"})

    with TestClient(create_app(served.ws)) as client:
        yield client, token, key


def test_a_valid_token_authenticates_with_groups_from_its_claim(idp):
    client, token, _ = idp
    me = client.get("/api/v1/auth/me", headers=auth(token()))
    assert me.status_code == 200 and me.json() | {"csrf_token": None} == {
        "user": "dana", "role": "member", "groups": ["finance"], "via": "jwt", "csrf_token": None}
    hits = client.post("/api/v1/search", json={"query": "Q3 2026 revenue"}, headers=auth(token())).json()["hits"]
    assert "finance/q3.md" in {h["path"] for h in hits}
    hits = client.post("/api/v1/search", json={"query": "Q3 2026 revenue"}, headers=auth(token(groups=["staff"]))).json()["hits"]
    assert "finance/q3.md" not in {h["path"] for h in hits}


def test_role_claim_and_catalog_groups(idp, served):
    client, token, _ = idp
    assert client.get("/api/v1/users", headers=auth(token())).status_code == 403
    assert client.get("/api/v1/users", headers=auth(token(bastion_role="admin"))).status_code == 200
    assert client.get("/api/v1/users", headers=auth(token(bastion_role="superuser"))).status_code == 403
    # a user the catalog knows keeps their catalog groups alongside the token's
    me = client.get("/api/v1/auth/me", headers=auth(token(sub="alice", groups=[]))).json()
    assert me["groups"] == ["finance", "staff"]


@pytest.mark.parametrize("case", ["expired", "wrong-issuer", "wrong-audience", "no-exp", "alg-none", "hs256-with-public-key",
                                  "other-key", "tampered", "garbage"])
def test_bad_tokens_are_refused(idp, case):
    client, token, key = idp
    good = token()
    if case == "expired":
        bad = token(exp=int(time.time()) - 3600)
    elif case == "wrong-issuer":
        bad = token(iss="https://evil.example")
    elif case == "wrong-audience":
        bad = token(aud="another-app")
    elif case == "no-exp":
        bad = token(exp=None)
    elif case == "alg-none":
        bad = jwt.encode({"sub": "dana", "iss": ISS, "aud": AUD, "exp": int(time.time()) + 300}, None, algorithm="none")
    elif case == "hs256-with-public-key":
        import base64
        import hashlib
        import hmac

        from cryptography.hazmat.primitives import serialization

        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
        body = b64(json.dumps({"sub": "dana", "iss": ISS, "aud": AUD, "exp": int(time.time()) + 300,
                               "bastion_role": "admin"}).encode())
        bad = f"{head}.{body}.{b64(hmac.new(pem, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"
    elif case == "other-key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        bad = jwt.encode({"sub": "dana", "iss": ISS, "aud": AUD, "exp": int(time.time()) + 300}, other, algorithm="RS256",
                         headers={"kid": "k1"})
    elif case == "tampered":
        head, body, sig = good.split(".")
        import base64

        claims = json.loads(base64.urlsafe_b64decode(body + "=="))
        claims["bastion_role"] = "admin"
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        bad = f"{head}.{body}.{sig}"
    else:
        bad = "not.a.token"
    r = client.get("/api/v1/auth/me", headers=auth(bad))
    assert r.status_code == 401, case
    assert r.json()["type"] == "urn:bastion:problem:unauthenticated"
    assert client.get("/api/v1/auth/me", headers=auth(good)).status_code == 200  # positive control


def test_refused_tokens_are_audited(idp, served):
    client, token, _ = idp
    client.get("/api/v1/auth/me", headers=auth(token(iss="https://evil.example")))
    from bastion.audit import AuditLog, AuditQuery

    entries = AuditLog(served.ws.catalog).query(AuditQuery(action="auth.jwt"))
    assert entries and entries[-1]["outcome"] == "denied" and "issuer" in entries[-1]["detail"]["reason"]


def test_config_refuses_unsafe_algorithms():
    from bastion.core.config import JwtConfig

    for algs in (["none"], ["HS256"], []):
        with pytest.raises(ValueError):
            JwtConfig(jwks_file="j.json", issuer=ISS, audience=AUD, algorithms=algs)
    assert JwtConfig(jwks_file="j.json", issuer=ISS, audience=AUD).algorithms == ["RS256"]


def test_keys_can_come_from_a_jwks_url(served):
    """jwks_url: the signing keys are fetched from the identity provider over HTTP (a real local server)."""
    import http.server
    import threading

    from fastapi.testclient import TestClient

    from bastion.core.config import JwtConfig
    from bastion.server import create_app

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = json.dumps({"keys": [json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "u1"}]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args):
            pass

    idp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    try:
        served.ws.config.auth.jwt = JwtConfig(jwks_url=f"http://127.0.0.1:{idp.server_port}/jwks.json", issuer=ISS,
                                              audience=AUD, allow_unknown_users=True)
        with TestClient(create_app(served.ws)) as client:
            good = jwt.encode({"sub": "dana", "iss": ISS, "aud": AUD, "exp": int(time.time()) + 60}, key,
                              algorithm="RS256", headers={"kid": "u1"})
            assert client.get("/api/v1/auth/me", headers=auth(good)).json()["user"] == "dana"
            unknown_kid = jwt.encode({"sub": "dana", "iss": ISS, "aud": AUD, "exp": int(time.time()) + 60}, key,
                                     algorithm="RS256", headers={"kid": "nope"})
            assert client.get("/api/v1/auth/me", headers=auth(unknown_kid)).status_code == 401
    finally:
        idp.shutdown()
