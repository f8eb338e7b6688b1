"""A CLI search answered by a running ``bastion serve`` of the same workspace (:mod:`bastion.core.cli_bridge`).

A command that would spend most of its time importing the index engine and opening the workspace
asks the server instead, when one of this workspace advertises itself and runs the same
configuration. Anything unexpected (no server, another configuration, no answer within
:data:`TIMEOUT_S`, an answer that does not carry the server's proof) returns None, and the command
runs in its own process as it would without a server; ``BASTION_LOG=1`` says why.
"""
from __future__ import annotations

import json
from pathlib import Path

from bastion.core import cli_bridge
from bastion.core.types import Hit
from bastion.events import log

SEARCH_PATH = "/api/v1/cli/search"
TIMEOUT_S = 5.0
MAX_ANSWER_BYTES = 64 << 20


def served_search(home: Path, query: str, user: str, k: int | None, source: str | None,
                  mode: str | None) -> list[Hit] | None:
    """The hits the workspace's server finds for ``query`` as ``user``, or None to search locally."""
    bridge = cli_bridge.read_bridge(home / "data")
    if bridge is None:
        return None
    if not cli_bridge.process_alive(bridge.pid):
        log("cli.served_skipped", reason="server process gone", pid=bridge.pid)
        return None
    digest = cli_bridge.config_digest(home)
    if digest != bridge.config:
        log("cli.served_skipped", reason="configuration differs from the server's")
        return None
    body = json.dumps({"query": query, "user": user, "k": k, "source": source, "mode": mode,
                       "config": digest}).encode()
    header = cli_bridge.sign_request(bridge.secret, body)
    nonce = header.split(" ")[2]
    answer = _post(bridge.url, body, header)
    if answer is None:
        return None
    status, payload, proof = answer
    if status != 200:
        log("cli.served_skipped", reason=f"server answered HTTP {status}")
        return None
    if not cli_bridge.verify_response(bridge.secret, nonce, payload, proof):
        log("cli.served_skipped", reason="answer without the server's proof")
        return None
    try:
        return [Hit(**hit) for hit in json.loads(payload)["hits"]]
    except (ValueError, KeyError, TypeError):
        log("cli.served_skipped", reason="answer not understood")
        return None


def _post(url: str, body: bytes, header: str) -> tuple[int, bytes, str | None] | None:
    import http.client  # here: a command without a server to ask does not load it
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname is None:
        return None
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=TIMEOUT_S)
    try:
        conn.request("POST", SEARCH_PATH, body, {"content-type": "application/json",
                                                 cli_bridge.REQUEST_HEADER: header})
        response = conn.getresponse()
        return response.status, response.read(MAX_ANSWER_BYTES), response.getheader(cli_bridge.PROOF_HEADER)
    except (OSError, http.client.HTTPException) as exc:
        log("cli.served_skipped", reason=f"no answer from {url}: {type(exc).__name__}")
        return None
    finally:
        conn.close()
