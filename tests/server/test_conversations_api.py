"""Saved conversations over the API: only their owner reads them, asks add turns, stored answers never
show later what their reader may no longer read, limits, and removal with the user."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import write
from tests.server.conftest import auth

TRAVEL = "What is the hotel cost cap per night in Europe?"
GONE = "no longer available to you"


def _strip(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("instance", "request_id")}


def test_conversations_are_read_and_changed_only_by_their_owner(client, served):
    alice, bob, root = (auth(served.keys[u]) for u in ("alice", "bob", "root"))
    made = client.post("/api/v1/conversations", json={"title": "Travel\nquestions"}, headers=alice)
    assert made.status_code == 201
    conv = made.json()
    assert conv["title"] == "Travel questions" and conv["turns"] == 0 and set(conv) == {
        "id", "title", "created", "updated", "turns"}
    cid = conv["id"]
    missing = client.get("/api/v1/conversations/0123456789abcdef", headers=bob)
    for caller in (bob, root):  # another member and an admin alike: exactly like a missing one
        assert client.get("/api/v1/conversations", headers=caller).json()["conversations"] == []
        r = client.get(f"/api/v1/conversations/{cid}", headers=caller)
        assert r.status_code == missing.status_code == 404 and _strip(r.json()) == _strip(missing.json()) | {}
        assert client.patch(f"/api/v1/conversations/{cid}", json={"title": "mine"}, headers=caller).status_code == 404
        assert client.delete(f"/api/v1/conversations/{cid}", headers=caller).status_code == 404
        assert client.post("/api/v1/ask", json={"question": TRAVEL, "conversation_id": cid},
                           headers=caller).status_code == 404
        assert client.delete("/api/v1/conversations", headers=caller).json() == {"deleted": 0}
    # positive control: the owner reads, renames and deletes it; nothing above changed it
    got = client.get(f"/api/v1/conversations/{cid}", headers=alice).json()
    assert got["title"] == "Travel questions" and got["turns"] == []
    renamed = client.patch(f"/api/v1/conversations/{cid}", json={"title": "Hotels"}, headers=alice)
    assert renamed.status_code == 200 and renamed.json()["title"] == "Hotels"
    assert client.patch(f"/api/v1/conversations/{cid}", json={"title": " \t"}, headers=alice).status_code == 400
    assert client.patch(f"/api/v1/conversations/{cid}", json={"title": "x" * 201}, headers=alice).status_code == 422
    untitled = client.post("/api/v1/conversations", headers=alice).json()
    assert untitled["title"] == "New conversation"
    listed = client.get("/api/v1/conversations", headers=alice).json()["conversations"]
    assert [c["id"] for c in listed] == [untitled["id"], cid]  # the latest changed first
    assert client.delete(f"/api/v1/conversations/{cid}", headers=alice).json() == {"deleted": cid}
    assert client.get(f"/api/v1/conversations/{cid}", headers=alice).status_code == 404
    assert client.delete("/api/v1/conversations", headers=alice).json() == {"deleted": 1}
    assert client.get("/api/v1/conversations", headers=alice).json()["conversations"] == []


def test_asking_in_a_conversation_keeps_each_turn(client, served):
    bob = auth(served.keys["bob"])
    first = client.post("/api/v1/ask", json={"question": TRAVEL, "save": True}, headers=bob).json()
    cid = first["conversation_id"]
    assert cid and first["citations"] and first["message"]
    unsaved = client.post("/api/v1/ask", json={"question": TRAVEL}, headers=bob).json()
    assert unsaved["conversation_id"] is None
    follow = client.post("/api/v1/ask", json={"question": "And in Asia?", "conversation_id": cid}, headers=bob).json()
    assert follow["conversation_id"] == cid
    # without a history in the request, the conversation's turns are the history
    assert TRAVEL in client.get(f"/api/v1/lineage/{follow['lineage_id']}", headers=bob).json()["rewritten_question"]
    conv = client.get(f"/api/v1/conversations/{cid}", headers=bob).json()
    assert conv["title"] == TRAVEL and len(conv["turns"]) == 2
    turn = conv["turns"][0]
    assert set(turn) == {"question", "answer", "citations", "decision", "message", "lineage_id", "created"}
    assert (turn["question"], turn["answer"], turn["decision"], turn["lineage_id"]) == (
        TRAVEL, first["answer"], first["decision"], first["lineage_id"])
    assert turn["citations"][0]["quote"] == first["citations"][0]["quote"] and turn["citations"][0]["available"]
    assert client.get("/api/v1/conversations", headers=bob).json()["conversations"][0]["turns"] == 2
    # streamed answers are kept too
    with client.stream("POST", "/api/v1/ask", json={"question": TRAVEL, "conversation_id": cid, "stream": True},
                       headers=bob) as r:
        body = "".join(r.iter_text())
    assert "event: answer" in body and f'"conversation_id": "{cid}"' in body
    assert len(client.get(f"/api/v1/conversations/{cid}", headers=bob).json()["turns"]) == 3


def test_a_stored_turn_stops_showing_a_passage_its_reader_may_no_longer_read(client, served):
    alice, bob = auth(served.keys["alice"]), auth(served.keys["bob"])
    saved = {u: client.post("/api/v1/ask", json={"question": TRAVEL, "save": True}, headers=h).json()
             for u, h in (("alice", alice), ("bob", bob))}
    assert all("EUR 180" in s["answer"] for s in saved.values())
    docs = Path(served.ws.sources.get("docs").config["path"])
    write(docs / "hr" / ".bastion-acl", "group:finance\n")  # hr is now for finance only
    served.ws.sync("docs")
    bob_turn = client.get(f"/api/v1/conversations/{saved['bob']['conversation_id']}", headers=bob).json()["turns"][0]
    assert not any(t in str(bob_turn) for t in ("EUR 180", "180 欧元", "travel.md", "报销"))
    assert GONE in bob_turn["answer"] and bob_turn["question"] == TRAVEL
    assert all(not c["available"] and GONE in c["message"] and c["quote"] is None and c["sources"] == []
               for c in bob_turn["citations"])
    # nor does the answer's lineage, which its asker may read
    lineage = client.get(f"/api/v1/lineage/{bob_turn['lineage_id']}", headers=bob).json()
    assert lineage["question"] == TRAVEL and not any(t in str(lineage) for t in ("EUR 180", "180 欧元", "travel.md"))
    # positive control: alice, in finance, still reads hers as it was
    alice_turn = client.get(f"/api/v1/conversations/{saved['alice']['conversation_id']}",
                            headers=alice).json()["turns"][0]
    assert alice_turn["answer"] == saved["alice"]["answer"] and alice_turn["citations"][0]["available"]
    assert "EUR 180" in alice_turn["citations"][0]["quote"]
    assert "EUR 180" in client.get(f"/api/v1/lineage/{alice_turn['lineage_id']}", headers=alice).json()["answer"]


def test_limits_are_refused_with_a_clear_conflict(client, served, monkeypatch):
    import bastion.conversations as conversations

    bob = auth(served.keys["bob"])
    monkeypatch.setattr(conversations, "MAX_TURNS", 1)
    cid = client.post("/api/v1/ask", json={"question": TRAVEL, "save": True}, headers=bob).json()["conversation_id"]
    full = client.post("/api/v1/ask", json={"question": TRAVEL, "conversation_id": cid}, headers=bob)
    assert full.status_code == 409 and "1 turns, the limit" in full.json()["detail"]
    monkeypatch.setattr(conversations, "MAX_CONVERSATIONS", 1)
    refused = client.post("/api/v1/conversations", json={}, headers=bob)
    assert refused.status_code == 409 and "limit is 1" in refused.json()["detail"]
    assert client.post("/api/v1/ask", json={"question": TRAVEL, "save": True}, headers=bob).status_code == 409
    # nothing was pruned, and another user is not affected
    assert [c["turns"] for c in client.get("/api/v1/conversations", headers=bob).json()["conversations"]] == [1]
    assert client.post("/api/v1/conversations", json={}, headers=auth(served.keys["alice"])).status_code == 201


def test_removing_a_user_removes_their_conversations(client, served):
    from sqlalchemy import select

    from bastion.catalog.models import ConversationRow, ConversationTurnRow

    for user in ("alice", "bob"):
        client.post("/api/v1/ask", json={"question": TRAVEL, "save": True}, headers=auth(served.keys[user]))
    assert client.delete("/api/v1/users/bob", headers=auth(served.keys["root"])).status_code == 200
    with served.ws.catalog.session() as s:
        owners = list(s.scalars(select(ConversationRow.user_id)))
        turns = len(list(s.scalars(select(ConversationTurnRow.id))))
    assert owners == ["alice"] and turns == 1
    # the catalog cascades as well (a user removed from the CLI)
    served.ws.directory.remove_user("alice")
    with served.ws.catalog.session() as s:
        assert list(s.scalars(select(ConversationRow.id))) == [] and list(s.scalars(select(ConversationTurnRow.id))) == []
