"""Finding 9: the audit log's client address could be spoofed with X-Forwarded-For from any loopback
peer, because uvicorn's proxy_headers was on. Now `bastion serve` turns it off and Bastion believes
X-Forwarded-For only from `server.trusted_proxies`, taking the rightmost hop that is not one of them."""
from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import auth, free_port, running

SPOOF = "10.9.9.9"


@pytest.fixture
def serve_config_live(served):
    """The app under uvicorn with exactly the settings `bastion serve` builds; yields its base URL."""
    from bastion.server.app import uvicorn_config

    config = uvicorn_config(served.app, served.ws.config.server, "127.0.0.1", free_port())
    config.log_level = "warning"
    with running(config) as url:
        yield url


def _last_ip(served, action: str) -> str:
    from bastion.audit import AuditQuery

    return served.app.state.server.audit.query(AuditQuery(action=action, newest_first=True, limit=1))[0]["ip"]


def test_serve_turns_off_uvicorns_proxy_headers(served):
    from bastion.server.app import uvicorn_config

    config = uvicorn_config(served.app, served.ws.config.server)
    assert config.proxy_headers is False
    assert (config.host, config.port) == (served.ws.config.server.host, served.ws.config.server.port)


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_not_recorded(serve_config_live, served):
    assert served.ws.config.server.trusted_proxies == []
    r = httpx.get(f"{serve_config_live}/api/v1/auth/me", headers=auth(served.keys["bob"]) | {"X-Forwarded-For": SPOOF})
    assert r.status_code == 200
    assert _last_ip(served, "me") == "127.0.0.1"
    r = httpx.post(f"{serve_config_live}/api/v1/auth/login", json={"username": "root", "password": "wrong-password-x"},
                   headers={"X-Forwarded-For": "203.0.113.66"})
    assert r.status_code == 401
    assert _last_ip(served, "login") == "127.0.0.1"


def test_a_trusted_proxys_rightmost_untrusted_hop_is_recorded(serve_config_live, served):
    served.ws.config.server.trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
    base, key = serve_config_live, auth(served.keys["bob"])
    # the client wrote the leftmost entry itself; the proxy appended the address it saw
    httpx.get(f"{base}/api/v1/auth/me", headers=key | {"X-Forwarded-For": f"{SPOOF}, 203.0.113.66"})
    assert _last_ip(served, "me") == "203.0.113.66"
    # a chain of trusted proxies is walked past
    httpx.get(f"{base}/api/v1/auth/me", headers=key | {"X-Forwarded-For": "198.51.100.7, 203.0.113.66, 10.1.2.3"})
    assert _last_ip(served, "me") == "203.0.113.66"
    # no header: the proxy's own address
    httpx.get(f"{base}/api/v1/auth/me", headers=key)
    assert _last_ip(served, "me") == "127.0.0.1"


def _request(peer: str, *forwarded: str):
    from starlette.requests import Request

    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (peer, 1234)})


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("198.51.100.1", ["1.2.3.4"], "198.51.100.1"),  # untrusted peer: its header is ignored
    ("10.0.0.5", ["1.2.3.4, 5.6.7.8"], "5.6.7.8"),  # rightmost untrusted hop, not the leftmost
    ("10.0.0.5", ["1.2.3.4, 5.6.7.8, 10.0.0.9"], "5.6.7.8"),  # trusted hops are skipped
    ("10.0.0.5", ["1.2.3.4", "5.6.7.8"], "5.6.7.8"),  # several header lines are one list
    ("10.0.0.5", ["1.2.3.4, not-an-address"], "10.0.0.5"),  # a bad hop ends the walk at the proxy
    ("10.0.0.5", ["10.0.0.7, 10.0.0.8"], "10.0.0.7"),  # only proxies: the leftmost
    ("10.0.0.5", [], "10.0.0.5"),
])
def test_client_ip_walks_from_the_right(peer, forwarded, expected):
    from bastion.server.auth import client_ip

    assert client_ip(_request(peer, *forwarded), ["10.0.0.0/8"]) == expected


def test_trusted_proxies_must_be_addresses():
    from bastion.core.config import ServerConfig

    with pytest.raises(ValueError, match="'proxy.example.com'"):
        ServerConfig(trusted_proxies=["10.0.0.1", "proxy.example.com"])
    assert ServerConfig(trusted_proxies=["10.0.0.1", "fd00::/8"]).trusted_proxies == ["10.0.0.1", "fd00::/8"]


def test_forwarded_proto_counts_only_from_a_trusted_proxy(served):
    """The session cookie's Secure flag follows X-Forwarded-Proto only when a trusted proxy sent it."""
    from fastapi.testclient import TestClient

    from tests.server.conftest import ALICE_PW

    served.ws.config.server.trusted_proxies = ["10.0.0.0/8"]
    login = {"username": "alice", "password": ALICE_PW}
    https = {"X-Forwarded-Proto": "https"}
    untrusted = TestClient(served.app, client=("198.51.100.1", 4000)).post("/api/v1/auth/login", json=login, headers=https)
    assert untrusted.status_code == 200 and "secure" not in untrusted.headers["set-cookie"].lower()
    trusted = TestClient(served.app, client=("10.0.0.5", 4000)).post("/api/v1/auth/login", json=login, headers=https)
    assert trusted.status_code == 200 and "secure" in trusted.headers["set-cookie"].lower()
