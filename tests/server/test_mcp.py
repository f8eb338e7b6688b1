"""Bastion's MCP server through the MCP SDK's own client: over streamable HTTP at ``/mcp`` of a real
uvicorn server of the app, and over stdio from a real ``bastion mcp`` process.

The workspace (the corpus of tests/server/conftest.py, built once for this module) has ``finance/q3.md``
readable only by the finance group: alice is in it, bob is not.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
import httpx
import pytest

from bastion.audit import AuditQuery
from tests.server.conftest import Served, _docs, auth, free_port, running


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A synced workspace served by the app; alice and bob have a key each, and a spare one to revoke."""
    from bastion.server import create_app
    from bastion.testing import HashEmbedder
    from bastion.workspace import Workspace

    tmp = tmp_path_factory.mktemp("mcp")
    _docs(tmp / "docs")
    Workspace.init(tmp / "ws")
    ws = Workspace.open(tmp / "ws", embedder=HashEmbedder())
    ws.config.answer.mode = "extract"  # quotes: no model to run
    ws.config.answer.min_evidence = -1.0  # the hash embedder's scores say nothing about evidence
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", tmp / "docs", acl="everyone")
    ws.sync()
    keys = {name: ws.accounts.create_key(name.split("-")[0], name=name)[1]
            for name in ("alice", "bob", "alice-spare", "bob-spare")}
    with ws.catalog.session() as s:
        from sqlalchemy import select

        from bastion.catalog.models import DocumentRow

        ids = {row.key: row.id for row in s.scalars(select(DocumentRow))}
    yield Served(ws, create_app(ws), keys, ids)
    ws.close()


@pytest.fixture(scope="module")
def live(served):
    """The app under a real uvicorn server on a free loopback port; yields its base URL."""
    import uvicorn

    with running(uvicorn.Config(served.app, host="127.0.0.1", port=free_port(), log_level="warning")) as url:
        yield url


def _spare_key_id(served, user: str) -> str:
    return next(k.id for k in served.ws.accounts.list_keys(user) if k.name == f"{user}-spare")


def _client(url: str, key: str | None):
    """An MCP SDK client of ``url``/mcp sending ``key`` as its bearer credential."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else None
    return Client(streamable_http_client(f"{url}/mcp", http_client=httpx2.AsyncClient(headers=headers, timeout=60)))


def _call(url: str, key: str, tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
    """(is_error, structured result or error text) of one tool call as ``key``'s user."""

    async def run() -> tuple[bool, Any]:
        async with _client(url, key) as client:
            result = await client.call_tool(tool, args)
        text = " ".join(c.text for c in result.content if c.type == "text")
        if result.is_error:
            return True, text
        assert json.loads(text) == result.structured_content  # the same for clients that show only text
        return False, result.structured_content

    return anyio.run(run)


def _audit(served, **query: Any) -> list[dict]:
    return served.ws.audit.query(AuditQuery(**query, limit=1000))


def _docs_found(result: dict) -> set[str]:
    return {h["doc_id"] for h in result["hits"]}


def test_lists_the_tools(live, served):
    async def run() -> list:
        async with _client(live, served.keys["bob"]) as client:
            return (await client.list_tools()).tools

    tools = {t.name: t for t in anyio.run(run)}
    assert set(tools) == {"search", "ask", "get_document"}
    assert tools["search"].input_schema["required"] == ["query"]
    assert "doc_id" in tools["get_document"].input_schema["properties"]


def test_search_finds_a_restricted_document_only_for_its_readers(live, served):
    q3 = served.docs["finance/q3.md"]
    failed, alice = _call(live, served.keys["alice"], "search", {"query": "Q3 revenue", "k": 5})
    assert not failed and q3 in _docs_found(alice)
    hit = next(h for h in alice["hits"] if h["doc_id"] == q3)
    assert hit["document"] == "q3" and hit["path"] == "finance/q3.md" and "48.2 million" in hit["text"]
    assert hit["score"] > 0

    failed, bob = _call(live, served.keys["bob"], "search", {"query": "Q3 revenue", "k": 5})
    assert not failed and bob["hits"], "bob still finds what he may read"
    assert q3 not in _docs_found(bob)
    assert "48.2" not in json.dumps(bob) and "finance/q3" not in json.dumps(bob)


def test_get_document_of_an_unreadable_id_answers_like_a_missing_one(live, served):
    q3 = served.docs["finance/q3.md"]
    failed, doc = _call(live, served.keys["alice"], "get_document", {"doc_id": q3})
    assert not failed and doc["path"] == "finance/q3.md", doc
    assert "48.2 million" in " ".join(p["text"] for p in doc["passages"])

    failed, denied = _call(live, served.keys["bob"], "get_document", {"doc_id": q3})
    failed_missing, missing = _call(live, served.keys["bob"], "get_document", {"doc_id": "0" * 32})
    assert failed and failed_missing
    assert denied == missing and "no such document" in denied
    assert "Q3" not in denied


def test_ask_cites_and_is_in_the_audit_log(live, served):
    failed, ans = _call(live, served.keys["bob"], "ask", {"question": "What is the hotel cap per night?"})
    assert not failed, ans
    assert ans["decision"] in ("answered", "extracted") and ans["citations"]
    assert "180" in ans["answer"]
    assert {c["path"] for c in ans["citations"]} == {"hr/travel.md"}
    entries = _audit(served, actor="bob", action="ask")
    entry = next(e for e in entries if e["lineage_id"] == ans["lineage_id"])
    assert entry["outcome"] == "ok" and entry["detail"]["transport"] == "mcp-http"


def test_a_failed_tool_call_is_a_clear_error_and_audited(live, served):
    failed, text = _call(live, served.keys["bob"], "get_document", {"doc_id": "x" * 65})
    assert failed and "doc_id" in text and "Traceback" not in text
    failed, text = _call(live, served.keys["bob"], "get_document", {"doc_id": "nothing-here"})
    assert failed and "no such document" in text
    denied = _audit(served, actor="bob", action="documents.get")
    assert any(e["outcome"] == "denied" and e["target"] == "nothing-here" for e in denied)


def test_no_key_or_a_revoked_key_gets_401_before_any_tool_runs(live, served):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {"query": "Q3"}}}
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"}
    searches = len(_audit(served, actor="alice", action="search"))
    with httpx.Client(base_url=live) as http:
        assert http.post("/mcp", json=body, headers=headers).status_code == 401
        assert http.post("/mcp", json=body, headers=headers | auth(served.keys["alice-spare"])).status_code == 200
        served.ws.accounts.revoke_key(_spare_key_id(served, "alice"))
        r = http.post("/mcp", json=body, headers=headers | auth(served.keys["alice-spare"]))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        assert http.post("/mcp", json=body, headers=headers | auth("bst_not-a-key")).status_code == 401
    assert len(_audit(served, actor="alice", action="search")) == searches + 1  # only the positive control ran
    assert _audit(served, actor="alice", action="auth.key")[-1]["outcome"] == "denied"

    async def sdk() -> None:
        async with _client(live, served.keys["alice-spare"]) as client:
            await client.list_tools()

    from mcp import MCPError

    with pytest.raises(ExceptionGroup) as refused:  # the SDK's client: an error from its connection's task group
        anyio.run(sdk)
    assert refused.group_contains(MCPError)


STDIO_CHILD = """
import sys
import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

home = sys.argv[1]
cli._ws = lambda: Workspace.open(home, embedder=HashEmbedder())
sys.argv = ["bastion", "mcp", *sys.argv[2:]]
cli.main()
"""


def _stdio(home, key: str | None, *args: str):
    from mcp import Client, StdioServerParameters

    env = {k: v for k, v in os.environ.items() if k != "BASTION_API_KEY"} | ({"BASTION_API_KEY": key} if key else {})
    return Client(StdioServerParameters(command=sys.executable, args=["-c", STDIO_CHILD, str(home), *args],
                                        env=env, cwd=os.getcwd()))


def test_stdio_searches_as_the_key_owner_or_the_named_user(served):
    home = served.ws.home
    q3 = served.docs["finance/q3.md"]

    async def search(key: str | None, *args: str) -> dict:
        async with _stdio(home, key, *args) as client:
            result = await client.call_tool("search", {"query": "Q3 revenue", "k": 5})
        assert not result.is_error, result.content
        assert result.structured_content is not None
        return result.structured_content

    assert q3 in _docs_found(anyio.run(search, served.keys["alice"]))
    bob = anyio.run(search, None, "--as", "bob")  # the test runs as the workspace folder's owner
    assert bob["hits"] and q3 not in _docs_found(bob)
    entries = _audit(served, actor="alice", action="search")
    assert any(e["detail"].get("transport") == "mcp-stdio" and e["detail"].get("key_id") for e in entries)
    entries = _audit(served, actor="bob", action="search")
    assert any(e["via"] == "local" and e["detail"].get("os_user") for e in entries)


def test_an_oidc_token_works_like_a_key(served, monkeypatch):
    """With ``[auth.jwt]`` configured, the identity provider's access token is the credential."""
    import time

    import jwt
    import uvicorn
    from cryptography.hazmat.primitives.asymmetric import rsa

    from bastion.core.config import JwtConfig
    from bastion.server import create_app

    iss, aud = "https://idp.example.test", "bastion"
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key()))
    (served.ws.home / "jwks.json").write_text(json.dumps({"keys": [jwk | {"kid": "k1", "use": "sig", "alg": "RS256"}]}))
    monkeypatch.setattr(served.ws.config.auth, "jwt", JwtConfig(jwks_file="jwks.json", issuer=iss, audience=aud))

    def token(sub: str, expires_in: int = 300) -> str:
        claims = {"sub": sub, "iss": iss, "aud": aud, "exp": int(time.time()) + expires_in}
        return jwt.encode(claims, signing, algorithm="RS256", headers={"kid": "k1"})

    q3 = served.docs["finance/q3.md"]
    app = create_app(served.ws)
    with running(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")) as url:
        failed, alice = _call(url, token("alice"), "search", {"query": "Q3 revenue", "k": 5})
        assert not failed and q3 in _docs_found(alice)
        failed, bob = _call(url, token("bob"), "search", {"query": "Q3 revenue", "k": 5})
        assert not failed and bob["hits"] and q3 not in _docs_found(bob)
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"}
        r = httpx.post(f"{url}/mcp", json=body, headers=headers | auth(token("alice", expires_in=-3600)))
        assert r.status_code == 401
    assert any(e["via"] == "jwt" for e in _audit(served, actor="alice", action="search"))


REFUSALS = {  # case: (arguments after `bastion mcp`, $BASTION_API_KEY's key, what the error says)
    "no credential": ([], None, "set $BASTION_API_KEY"),
    "both": (["--as", "bob"], "bob", "use one of them"),
    "a bad key": ([], "bst_not-a-key", "invalid API key"),
    "a revoked key": ([], "bob-spare", "revoked"),
    "not the owner": (["--as", "bob"], None, "only for the owner of the workspace folder"),
    "an unknown user": (["--as", "mallory"], None, "mallory"),
}


def test_bastion_mcp_refuses_to_start_without_a_proven_user(served, monkeypatch):
    from typer.testing import CliRunner

    import bastion.cli.app as cli
    from bastion.testing import HashEmbedder
    from bastion.workspace import Workspace

    home = served.ws.home
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(home, embedder=HashEmbedder()))
    served.ws.accounts.revoke_key(_spare_key_id(served, "bob"))
    owner = home.stat().st_uid
    for case, (args, key, expected) in REFUSALS.items():
        with monkeypatch.context() as m:
            m.delenv("BASTION_API_KEY", raising=False)
            if key:
                m.setenv("BASTION_API_KEY", served.keys.get(key, key))
            if case == "not the owner":
                m.setattr(os, "getuid", lambda: owner + 1)
            result = CliRunner().invoke(cli.app, ["--home", str(home), "mcp", *args])
        assert result.exit_code == 2, (case, result.output)
        assert expected in " ".join(result.output.split()), case


def test_without_the_mcp_extra_both_ways_say_how_to_install_it(served, monkeypatch):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    import bastion.cli.app as cli
    import bastion.server.mcp as mcp_server
    from bastion.server import create_app
    from bastion.testing import HashEmbedder
    from bastion.workspace import Workspace

    monkeypatch.setattr(mcp_server, "HAVE_MCP", False)
    with TestClient(create_app(served.ws)) as client:
        r = client.post("/mcp", json={}, headers=auth(served.keys["bob"]))
        assert r.status_code == 404 and "pip install 'bastion[mcp]'" in r.json()["detail"]
        assert client.get("/healthz").status_code == 200  # the rest of the server runs
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(served.ws.home, embedder=HashEmbedder()))
    monkeypatch.setenv("BASTION_API_KEY", served.keys["bob"])
    result = CliRunner().invoke(cli.app, ["--home", str(served.ws.home), "mcp"])
    assert result.exit_code == 2 and "pip install 'bastion[mcp]'" in result.output
