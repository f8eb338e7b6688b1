"""A served workspace: the example-like corpus on the hash embedder, users with each role, API keys."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.conftest import free_port, write

ADMIN_PW, ALICE_PW = "admin-password-1", "alice-password-1"


@dataclass
class Served:
    ws: object
    app: object
    keys: dict  # user -> API key
    docs: dict  # name -> doc id


def _docs(root):
    write(root / "finance" / ".bastion-acl", "group:finance\n")
    write(root / "finance" / "q3.md", "# Q3 results\n\nQ3 2026 revenue was EUR 48.2 million, up 9 percent.\n")
    write(root / "hr" / "travel.md", "# Travel policy\n\nHotel costs are capped at EUR 180 per night in Europe.\n")
    write(root / "hr" / "报销.md", "# 差旅报销\n\n住宿费用每晚不超过 180 欧元。\n")


@pytest.fixture
def served(tmp_path):
    from bastion.accounts import Accounts
    from bastion.server import create_app
    from bastion.testing import HashEmbedder
    from bastion.workspace import Workspace

    docs = tmp_path / "docs"
    _docs(docs)
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    # the hash embedder's scores say nothing about evidence: answer with quotes, never abstain on score
    ws.config.answer.mode = "extract"
    ws.config.answer.min_evidence = -1.0
    ws.config.answer.min_evidence_zh = -1.0
    ws.directory.add_user("root", groups=["it"], role="admin")
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    ws.directory.add_user("erin", groups=["staff"], role="editor")
    ws.sources.add_folder("docs", docs, acl="everyone", uploaders="group:staff")
    ws.sync()
    acc = Accounts(ws.catalog)
    acc.set_password("root", ADMIN_PW)
    acc.set_password("alice", ALICE_PW)
    keys = {u: acc.create_key(u, name="test")[1] for u in ("root", "alice", "bob", "erin")}
    with ws.catalog.session() as s:
        from sqlalchemy import select

        from bastion.catalog.models import DocumentRow

        ids = {row.key: row.id for row in s.scalars(select(DocumentRow))}
    app = create_app(ws)
    yield Served(ws, app, keys, ids)
    ws.close()


@pytest.fixture
def client(served):
    from fastapi.testclient import TestClient

    with TestClient(served.app) as c:
        yield c


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def running(config):
    """A real uvicorn server with ``config`` in a thread, until the block ends; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://{config.host}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live(served):
    """The app under a real uvicorn server on a free loopback port; yields its base URL."""
    import uvicorn

    with running(uvicorn.Config(served.app, host="127.0.0.1", port=free_port(), log_level="warning")) as url:
        yield url
