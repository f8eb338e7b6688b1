"""The CLI bridge on a real uvicorn server: advertised while listening, answering only the holder of
the workspace's secret, with the results a search in the CLI's own process finds."""
from __future__ import annotations

import http.server
import json
import os
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict

import pytest

from bastion.cli.served import SEARCH_PATH, served_search
from bastion.core import cli_bridge
from tests.server.conftest import free_port


@contextmanager
def bridged(served):
    """``served.app`` under :class:`BridgedServer` in a thread; yields the bridge it advertised."""
    import uvicorn

    from bastion.server.bridge import BridgedServer

    config = uvicorn.Config(served.app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = BridgedServer(config, served.app, served.ws)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while cli_bridge.read_bridge(served.ws.data_dir) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    bridge = cli_bridge.read_bridge(served.ws.data_dir)
    assert bridge is not None, "the server did not advertise itself"
    try:
        yield bridge
    finally:
        server.should_exit = True
        thread.join(10)


def post(bridge, body: bytes, header: str | None):
    headers = {"content-type": "application/json"} | ({cli_bridge.REQUEST_HEADER: header} if header else {})
    request = urllib.request.Request(bridge.url + SEARCH_PATH, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers.get(cli_bridge.PROOF_HEADER)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), None


def body(bridge, **fields) -> bytes:
    return json.dumps({"query": "hotel cap", "user": "bob", "k": None, "source": None, "mode": None,
                       "config": bridge.config} | fields).encode()


def test_advertised_while_listening_and_withdrawn_after(served):
    with bridged(served) as bridge:
        path = served.ws.data_dir / cli_bridge.BRIDGE_FILE
        assert path.stat().st_mode & 0o777 == 0o600
        assert bridge.pid == os.getpid() and bridge.url.startswith("http://127.0.0.1:")
        assert bridge.config == cli_bridge.config_digest(served.ws.home)
    assert not path.exists()
    assert served.app.state.cli_bridge is None


@pytest.mark.parametrize(("query", "user", "k", "source", "mode"), [
    ("hotel cap per night", "bob", None, None, None),
    ("Q3 revenue", "alice", 3, None, None),
    ("Q3 revenue", "bob", 5, None, None),  # bob may not read finance: it never shows
    ("住宿费用", "alice", 2, "docs", "dense"),
    ("revenue million", "alice", 10, None, "bm25"),
])
def test_the_server_finds_what_the_cli_would(served, query, user, k, source, mode):
    ws = served.ws
    local = ws.search(query, ws.principal(user), k, source=source, mode=mode)
    with bridged(served):
        hits = served_search(ws.home, query, user, k, source, mode)
    assert hits is not None
    assert [asdict(h) for h in hits] == [asdict(h) for h in local]  # same hits, same scores, bit for bit
    if user == "bob":
        assert all(not h.path.startswith("finance/") for h in hits)


def test_requests_without_the_secret_are_refused_and_none_is_answered_twice(served):
    with bridged(served) as bridge:
        good = body(bridge)
        assert post(bridge, good, None)[0] == 401
        assert post(bridge, good, cli_bridge.sign_request(bytes(32), good))[0] == 401
        assert post(bridge, good, cli_bridge.sign_request(bridge.secret, body(bridge, user="alice")))[0] == 401
        stale = cli_bridge.sign_request(bridge.secret, good, now=time.time() - 2 * cli_bridge.MAX_SKEW_S)
        assert post(bridge, good, stale)[0] == 401
        header = cli_bridge.sign_request(bridge.secret, good)
        status, payload, proof = post(bridge, good, header)
        assert status == 200
        assert cli_bridge.verify_response(bridge.secret, header.split(" ")[2], payload, proof)
        assert post(bridge, good, header)[0] == 401  # a replay


def test_another_configuration_or_a_bad_request_is_refused(served):
    with bridged(served) as bridge:
        for status, request in [(409, body(bridge, config="0" * 64)), (422, body(bridge, k=0)),
                                (422, body(bridge, extra="field")), (400, body(bridge, user="nobody"))]:
            assert post(bridge, request, cli_bridge.sign_request(bridge.secret, request))[0] == status, request
        assert served_search(served.ws.home, "hotel", "nobody", None, None, None) is None  # the CLI then errs locally


def test_a_server_that_does_not_advertise_answers_no_cli(client, served):
    request = body(cli_bridge.Bridge("http://x", 1, bytes(32), "c"))
    answer = client.post(SEARCH_PATH, content=request,
                         headers={cli_bridge.REQUEST_HEADER: cli_bridge.sign_request(bytes(32), request)})
    assert answer.status_code == 401 and answer.json()["type"] == "urn:bastion:problem:unauthenticated"


def test_the_cli_searches_locally_when_the_server_is_gone_or_changed(served, tmp_path):
    ws = served.ws
    cli_bridge.write_bridge(ws.data_dir, cli_bridge.Bridge("http://127.0.0.1:9", 2**22 + 12345, bytes(32),
                                                           cli_bridge.config_digest(ws.home)))
    assert served_search(ws.home, "hotel", "bob", None, None, None) is None  # no such process
    with bridged(served):
        toml = ws.home / "bastion.toml"
        toml.write_text(toml.read_text() + "\n", encoding="utf-8")
        assert served_search(ws.home, "hotel", "bob", None, None, None) is None  # the server runs the old file


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Whatever took the port after the server exited: answers every search with a made-up hit."""

    seen: list[dict] = []

    def do_POST(self):  # http.server names its handlers so
        length = int(self.headers["content-length"])
        _Impostor.seen.append({"headers": dict(self.headers), "body": self.rfile.read(length)})
        payload = json.dumps({"hits": []}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header(cli_bridge.PROOF_HEADER, "0" * 64)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_an_impostor_on_the_port_learns_no_secret_and_is_not_believed(served):
    ws = served.ws
    impostor = http.server.HTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=impostor.serve_forever, daemon=True)
    thread.start()
    try:
        secret = os.urandom(32)
        cli_bridge.write_bridge(ws.data_dir, cli_bridge.Bridge(f"http://127.0.0.1:{impostor.server_port}",
                                                               os.getpid(), secret, cli_bridge.config_digest(ws.home)))
        assert served_search(ws.home, "hotel", "bob", None, None, None) is None
    finally:
        impostor.shutdown()
    [request] = _Impostor.seen
    assert secret.hex() not in json.dumps(request["headers"]) + request["body"].decode()


class _Listening:
    def __init__(self, family, host, port):
        self.family, self._name = family, (host, port)

    def getsockname(self):
        return self._name


def test_the_advertised_address_is_a_loopback_one_where_there_is_one():
    import socket

    from bastion.server.bridge import listening_url

    v4, v6 = socket.AF_INET, socket.AF_INET6
    assert listening_url([_Listening(v4, "0.0.0.0", 8900)]) == "http://127.0.0.1:8900"
    assert listening_url([_Listening(v6, "::", 8900)]) == "http://[::1]:8900"
    assert listening_url([_Listening(v4, "10.1.2.3", 8900)]) == "http://10.1.2.3:8900"
    assert listening_url([_Listening(v6, "fe80::1", 1), _Listening(v4, "127.0.0.1", 2)]) == "http://127.0.0.1:2"
    assert listening_url([]) is None
