"""The CLI bridge end to end on the default embedder: a ``bastion serve`` process answers ``bastion search``
with exactly what ``bastion search --local`` prints, and stops advertising itself when it stops."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bastion.core import cli_bridge
from tests.conftest import write

pytestmark = pytest.mark.model

SEARCHES = [["What was the Q3 2026 revenue?", "--as", "alice", "--k", "3"],
            ["What was the Q3 2026 revenue?", "--as", "bob", "--k", "3"],
            ["上海出差住宿标准是多少", "--as", "bob", "--k", "2"],
            ["hotel", "--as", "alice", "--mode", "bm25"]]


def bastion(home, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, BASTION_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "bastion.cli.app", *args], capture_output=True, text=True,
                          env=env, check=check, timeout=300)


@pytest.fixture
def home(tmp_path):
    docs = tmp_path / "docs"
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    write(docs / "finance" / "q3.md", "# Q3 2026 results\n\nQ3 2026 revenue was EUR 48.2 million, up 9 percent "
                                      "on Q3 2025. EBIT reached EUR 6.1 million.\n")
    write(docs / "policies" / "travel.md", "# Travel policy\n\nHotel costs are capped at EUR 180 per night in "
                                           "Europe and CNY 800 in Shanghai.\n")
    write(docs / "china" / "差旅.md", "# 差旅管理办法\n\n上海出差住宿标准为每晚不超过 800 元人民币。\n")
    h = tmp_path / "ws"
    bastion(h, "init", str(h))
    bastion(h, "user", "add", "alice", "--groups", "finance,staff")
    bastion(h, "user", "add", "bob", "--groups", "staff")
    bastion(h, "source", "add", "docs", "--path", str(docs), "--acl", "everyone")
    bastion(h, "sync")
    return h


def test_a_running_server_prints_what_a_local_search_prints(home):
    local = [bastion(home, "search", *args, "--local", *fmt).stdout for args in SEARCHES for fmt in ([], ["--json"])]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bastion.cli.app", "serve", "--port", str(port)],
                              env=dict(os.environ, BASTION_HOME=str(home)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while cli_bridge.read_bridge(home / "data") is None and time.monotonic() < deadline:
            assert server.poll() is None, "bastion serve exited"
            time.sleep(0.2)
        bridge = cli_bridge.read_bridge(home / "data")
        assert bridge is not None and bridge.pid == server.pid and bridge.url == f"http://127.0.0.1:{port}"
        env = dict(os.environ, BASTION_LOG="1")  # a search the server did not answer would log why
        served = []
        for args in SEARCHES:
            for fmt in ([], ["--json"]):
                out = subprocess.run([sys.executable, "-m", "bastion.cli.app", "search", *args, *fmt],
                                     capture_output=True, text=True, env=env | {"BASTION_HOME": str(home)},
                                     check=True, timeout=120)
                assert "cli.served_skipped" not in out.stderr, out.stderr
                served.append(out.stdout)
        assert served == local
        assert "q3.md" in local[0] and "q3.md" not in local[2]  # bob may not read finance
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    assert not (home / "data" / cli_bridge.BRIDGE_FILE).exists()
