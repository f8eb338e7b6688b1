"""``bastion search`` while a ``bastion serve`` of the workspace runs: the server answers, and the
output is the one the CLI prints when it searches in its own process (``--local``)."""
from __future__ import annotations

import os
import threading
import time

import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.cli.common import for_one_query
from bastion.core import cli_bridge
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write

QUERIES = [("hotel cap per night", "bob"), ("Q3 revenue", "alice"), ("Q3 revenue", "bob"), ("住宿费用", "alice")]


@pytest.fixture
def home(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    write(docs / "finance" / "q3.md", "# Q3 results\n\nQ3 2026 revenue was EUR 48.2 million, up 9 percent.\n")
    write(docs / "hr" / "travel.md", "# Travel policy\n\nHotel costs are capped at EUR 180 per night in Europe.\n")
    write(docs / "hr" / "报销.md", "# 差旅报销\n\n住宿费用每晚不超过 180 欧元。\n")
    h = tmp_path / "ws"
    Workspace.init(h).close()
    ws = Workspace.open(h, embedder=HashEmbedder())
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", docs, acl="everyone")
    ws.sync()
    ws.close()
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(h, embedder=HashEmbedder()))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # restored after the test (the local path sets it)
    return h


@pytest.fixture
def server(home):
    """``bastion serve`` of ``home`` (on the hash embedder) in a thread, advertised to the CLI."""
    import socket

    import uvicorn

    from bastion.server import create_app
    from bastion.server.bridge import BridgedServer

    ws = Workspace.open(home, embedder=HashEmbedder())
    app = create_app(ws)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = BridgedServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"), app, ws)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while cli_bridge.read_bridge(ws.data_dir) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cli_bridge.read_bridge(ws.data_dir) is not None
    yield running
    running.should_exit = True
    thread.join(10)
    ws.close()


def bastion(home, *args: str) -> str:
    result = CliRunner().invoke(cli.app, ["--home", str(home), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("as_json", [True, False])
def test_the_server_answers_with_the_output_of_a_local_search(home, server, monkeypatch, as_json):
    fmt = ["--json"] if as_json else []
    local = [bastion(home, "search", q, "--as", user, "--local", *fmt) for q, user in QUERIES]

    def no_local_open():
        raise AssertionError("the CLI opened the workspace although the server answers")

    monkeypatch.setattr(cli, "_ws", no_local_open)
    assert [bastion(home, "search", q, "--as", user, *fmt) for q, user in QUERIES] == local
    assert "finance/" not in local[2]  # bob's search never shows what only finance may read


def test_without_a_server_the_cli_searches_in_its_own_process(home):
    assert not (home / "data" / cli_bridge.BRIDGE_FILE).exists()
    assert "hr/travel.md" in bastion(home, "search", "hotel cap per night", "--as", "bob")


def test_errors_read_as_without_a_server(home, server):
    result = CliRunner().invoke(cli.app, ["--home", str(home), "search", "hotel", "--as", "nobody"])
    assert result.exit_code == 2 and "unknown user 'nobody'" in result.output
    result = CliRunner().invoke(cli.app, ["--home", str(home), "search", "hotel", "--as", "bob", "--source", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_one_query_runs_on_the_query_threads_with_sleeping_idle_threads(home, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY")
    ws = Workspace.open(home)
    ws.config.server.query_threads = 3
    before = ws.config
    for_one_query(ws)
    assert ws.config.embedder.threads == 3 and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert before.embedder.threads is None  # a copy: the loaded configuration is left alone
    ws.close()
