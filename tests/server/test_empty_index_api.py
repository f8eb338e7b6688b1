"""An empty index says so over the API (plainly for members, with the fix for admins), and a miss in a
filled index does not."""
from __future__ import annotations

import pytest

from tests.conftest import write
from tests.server.conftest import auth


@pytest.fixture
def empty(tmp_path):
    from fastapi.testclient import TestClient

    from bastion.accounts import Accounts
    from bastion.server import create_app
    from bastion.testing import HashEmbedder
    from bastion.workspace import Workspace

    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    ws.config.answer.mode = "extract"
    ws.directory.add_user("root", groups=["it"], role="admin")
    ws.directory.add_user("bob", groups=["staff"])
    acc = Accounts(ws.catalog)
    keys = {u: acc.create_key(u, name="test")[1] for u in ("root", "bob")}
    with TestClient(create_app(ws)) as client:
        yield ws, client, keys, tmp_path
    ws.close()


def test_search_and_ask_on_an_empty_index_say_it_is_empty(empty):
    ws, client, keys, tmp = empty
    r = client.post("/api/v1/search", json={"query": "hotel cap"}, headers=auth(keys["bob"]))
    assert r.status_code == 200 and r.json()["hits"] == []
    assert r.json()["index_empty"] is True
    assert r.json()["message"].startswith("There are no documents to search yet")  # plain, no commands
    assert "bastion" not in r.json()["message"]
    admin = client.post("/api/v1/search", json={"query": "hotel cap"}, headers=auth(keys["root"])).json()
    assert admin["index_empty"] is True and "bastion source add" in admin["message"]
    ask = client.post("/api/v1/ask", json={"question": "What is the hotel cap?"}, headers=auth(keys["bob"])).json()
    assert ask["decision"] == "abstained" and ask["index_empty"] is True
    assert ask["message"].startswith("There are no documents to search yet")

    # filled: a hit says nothing of emptiness, and a miss is a miss, not an empty index
    write(tmp / "docs" / "travel.md", "# Travel\n\nHotel costs are capped at EUR 180 per night.\n")
    write(tmp / "docs" / "secret" / ".bastion-acl", "group:finance\n")
    write(tmp / "docs" / "secret" / "q3.md", "# Q3\n\nQ3 revenue was EUR 48.2 million.\n")
    ws.sources.add_folder("docs", tmp / "docs", acl="everyone")
    ws.sync()
    found = client.post("/api/v1/search", json={"query": "hotel cap"}, headers=auth(keys["bob"])).json()
    assert found["hits"] and found["index_empty"] is False and found["message"] is None
    miss = client.post("/api/v1/search", json={"query": "revenue", "source": "docs", "k": 5},
                       headers=auth(keys["bob"])).json()
    assert all("q3" not in h["path"] for h in miss["hits"])
    assert miss["index_empty"] is False and miss["message"] is None
    ask = client.post("/api/v1/ask", json={"question": "What was the Q3 revenue?"}, headers=auth(keys["bob"])).json()
    assert ask["index_empty"] is False
