"""Several servers, one state: two ``bastion serve`` processes and a separate ``bastion sync`` worker
on one PostgreSQL catalog and one workspace folder (the index) act as one installation.

What one process does, the others see at once, without a restart and without sticky sessions:
documents a worker synced, a revoked key, an ended session, a lockout, the per-address limit on
failed logins, and an alert. Each denial is paired with a positive control. The client address is
set with ``X-Forwarded-For`` (the servers trust the loopback proxy), so each check has its own.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import free_port, stop_process, write

pytestmark = pytest.mark.services

ADMIN_PW, ALICE_PW, BOB_PW = "admin-password-1", "alice-password-1", "bob-password-11"
LOCK_S = 2  # auth.lockout_base_s (and max): a lock the test can wait out
CONFIG = """
[catalog]
url = "{url}"
pool_size = 2
[answer]
mode = "extract"
[search]
warm_check_s = 1
[server]
host = "127.0.0.1"
trusted_proxies = ["127.0.0.1"]
[auth]
max_failed_logins = 3
max_failed_logins_per_address = 8
lockout_base_s = {lock}
lockout_max_s = {lock}
failed_login_window_s = 600
"""
# a real `bastion` process (the CLI's own main()) on the hash embedder instead of the bundled model
CHILD = """
import sys
import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

home = sys.argv[1]
cli._ws = lambda: Workspace.open(home, embedder=HashEmbedder())
sys.argv = ["bastion", "--home", home, *sys.argv[2:]]
cli.main()
"""


@dataclass
class Cluster:
    home: Path
    docs: Path
    servers: list[str]  # base URLs of server A and server B
    keys: dict[str, str]  # user -> API key

    def worker(self, *args: str) -> subprocess.CompletedProcess:
        """``bastion sync ...`` as a separate process, as a cron job would run it."""
        return subprocess.run([sys.executable, "-c", CHILD, str(self.home), "sync", *args], capture_output=True,
                              text=True, timeout=120, env=os.environ | {"COLUMNS": "200"})


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server at {url} not ready within {timeout} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    import uuid

    from sqlalchemy import create_engine, text

    from tests.catalog.conftest import PG_SERVER

    name = f"bastion_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    root = tmp_path_factory.mktemp("cluster")
    home, docs = root / "ws", root / "docs"
    write(docs / "handbook" / "travel.md", "# Travel\n\nHotel costs are capped at EUR 180 per night.\n")
    for i in range(3):
        write(docs / "wiki" / f"page{i}.md", f"# Page {i}\n\nThe canteen opens at {7 + i} o'clock on weekdays.\n")
    home.mkdir()
    (home / "bastion.toml").write_text(CONFIG.format(url=f"{PG_SERVER}/{name}", lock=LOCK_S), encoding="utf-8")
    Workspace.init(home, exist_ok=True)
    ws = Workspace.open(home, embedder=HashEmbedder())
    ws.directory.add_user("root", groups=["it"], role="admin")
    ws.directory.add_user("alice", groups=["staff"])
    ws.directory.add_user("bob", groups=["staff"])
    for user, password in (("root", ADMIN_PW), ("alice", ALICE_PW), ("bob", BOB_PW)):
        ws.accounts.set_password(user, password)
    keys = {u: ws.accounts.create_key(u, name="test")[1] for u in ("root", "alice")}
    ws.sources.add_folder("handbook", docs / "handbook", acl="everyone")
    ws.sources.add_folder("wiki", docs / "wiki", acl="everyone")
    assert [r.status for r in ws.sync()] == ["completed", "completed"]
    ws.close()
    procs, urls = [], []
    try:
        for _ in range(2):
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", CHILD, str(home), "serve", "--port", str(port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, procs, strict=True):
            _wait_ready(url, proc)
        yield Cluster(home, docs, urls, keys)
    finally:
        for proc in procs:
            stop_process(proc)
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _bearer(key: str, address: str = "198.51.100.1") -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "x-forwarded-for": address}


def _paths(url: str, key: str, query: str) -> set[str]:
    r = httpx.post(f"{url}/api/v1/search", json={"query": query, "k": 10}, headers=_bearer(key), timeout=30)
    assert r.status_code == 200, r.text
    return {h["path"] for h in r.json()["hits"]}


def _login(url: str, user: str, password: str, address: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/auth/login", json={"username": user, "password": password},
                      headers={"x-forwarded-for": address}, timeout=30)


def test_a_document_the_worker_syncs_is_found_on_every_server_at_once(cluster):
    a, b = cluster.servers
    alice = cluster.keys["alice"]
    assert not any("visa" in p for url in (a, b) for p in _paths(url, alice, "quokka visa stipend"))
    write(cluster.docs / "handbook" / "visa.md", "# Visa\n\nThe quokka visa stipend is EUR 95 per application.\n")
    done = cluster.worker("handbook")
    assert done.returncode == 0, done.stderr
    for url in (a, b):  # the same server processes, not restarted
        assert any(p.endswith("visa.md") for p in _paths(url, alice, "quokka visa stipend")), url
        assert any(p.endswith("travel.md") for p in _paths(url, alice, "hotel costs capped")), url  # control


def test_a_key_revoked_on_one_server_is_refused_on_the_other_at_once(cluster):
    a, b = cluster.servers
    root = _bearer(cluster.keys["root"])
    made = [httpx.post(f"{a}/api/v1/keys", json={"user": "alice", "name": f"k{i}"}, headers=root, timeout=30).json()
            for i in range(2)]
    doomed, kept = made
    for key in (doomed["key"], kept["key"]):  # both work on B first (created through A)
        assert httpx.get(f"{b}/api/v1/auth/me", headers=_bearer(key), timeout=30).status_code == 200
    assert httpx.delete(f"{a}/api/v1/keys/{doomed['id']}", headers=root, timeout=30).status_code == 200
    r = httpx.get(f"{b}/api/v1/auth/me", headers=_bearer(doomed["key"]), timeout=30)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert httpx.get(f"{a}/api/v1/auth/me", headers=_bearer(doomed["key"]), timeout=30).status_code == 401
    assert httpx.get(f"{b}/api/v1/auth/me", headers=_bearer(kept["key"]), timeout=30).json()["user"] == "alice"


def test_a_session_logged_out_on_one_server_is_refused_on_the_other(cluster):
    a, b = cluster.servers
    first, second = _login(a, "bob", BOB_PW, "198.51.100.7"), _login(b, "bob", BOB_PW, "198.51.100.7")
    assert first.status_code == second.status_code == 200
    cookie, other = first.cookies["bastion_session"], second.cookies["bastion_session"]
    for token in (cookie, other):  # each session works on both servers: no sticky sessions needed
        for url in (a, b):
            r = httpx.get(f"{url}/api/v1/auth/me", cookies={"bastion_session": token}, timeout=30)
            assert r.status_code == 200 and r.json()["via"] == "session"
    out = httpx.post(f"{a}/api/v1/auth/logout", cookies={"bastion_session": cookie},
                     headers={"x-csrf-token": first.json()["csrf_token"]}, timeout=30)
    assert out.status_code == 200
    r = httpx.get(f"{b}/api/v1/auth/me", cookies={"bastion_session": cookie}, timeout=30)
    assert r.status_code == 401
    assert httpx.get(f"{b}/api/v1/auth/me", cookies={"bastion_session": other}, timeout=30).status_code == 200


def test_failed_logins_on_one_server_lock_the_account_on_the_other(cluster):
    a, b = cluster.servers
    attacker, owner = "203.0.113.10", "198.51.100.10"
    # three failures, two on A and one on B: each server alone saw fewer than max_failed_logins
    answers = [_login(url, "alice", "wrong-password", attacker).status_code for url in (a, a, b)]
    assert answers == [401, 401, 429]
    for url in (b, a):  # locked on both, the right password too
        r = _login(url, "alice", ALICE_PW, attacker)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= LOCK_S
    # positive controls: alice from her own address, and another user from the attacker's address
    assert _login(b, "alice", ALICE_PW, owner).status_code == 200
    assert _login(b, "bob", BOB_PW, attacker).status_code == 200
    time.sleep(LOCK_S + 0.5)  # the lock expires for every server at once
    assert _login(b, "alice", ALICE_PW, attacker).status_code == 200


def test_the_per_address_limit_counts_failures_on_every_server(cluster):
    a, b = cluster.servers
    attacker = "203.0.113.20"
    # eight different user names, alternating servers: four failures each, the limit (8) counts all
    answers = [_login((a, b)[i % 2], f"guess{i}", "wrong-password", attacker).status_code for i in range(8)]
    assert answers == [401] * 7 + [429]
    assert _login(a, "alice", ALICE_PW, attacker).status_code == 429  # any name from that address waits
    assert _login(a, "alice", ALICE_PW, "198.51.100.20").status_code == 200  # positive control


def test_an_alert_the_worker_raises_shows_on_every_server(cluster):
    """Garbled text makes the worker's sync quarantined (held, exit 3) with a hard alert."""
    a, b = cluster.servers
    root = _bearer(cluster.keys["root"])

    def alerts(url: str) -> list[dict]:
        r = httpx.get(f"{url}/api/v1/monitor", params={"source": "wiki"}, headers=root, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["alerts"]

    assert alerts(a) == alerts(b) == []  # healthy first
    text = "# 差旅报销\n\n住宿费用每晚不超过 180 欧元。每天的餐费补贴是 45 欧元。\n"
    for i in range(3):
        write(cluster.docs / "wiki" / f"page{i}.md", text.encode("utf-8").decode("cp1252", errors="replace"))
    done = cluster.worker("wiki")
    assert done.returncode == 3, done.stdout + done.stderr  # 3: quarantined, the previous state stays live
    seen_a, seen_b = alerts(a), alerts(b)
    assert [(x["check"], x["status"]) for x in seen_a] == [("quarantine", "open")] and seen_a == seen_b
    for url in (a, b):  # held back: both still serve the previous pages
        assert any(p.endswith("page1.md") for p in _paths(url, cluster.keys["alice"], "canteen opens weekdays"))
    alert_id = seen_a[0]["id"]
    r = httpx.post(f"{a}/api/v1/monitor/alerts/{alert_id}/acknowledge", headers=root, timeout=30)
    assert r.status_code == 200
    assert [x["status"] for x in alerts(b)] == ["acknowledged"]
    member = httpx.get(f"{b}/api/v1/monitor", headers=_bearer(cluster.keys["alice"]), timeout=30)
    assert member.status_code == 403  # alerts are for admins, on every server
