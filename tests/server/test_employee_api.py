"""What the employee web UI needs from the API: plain messages, one quote per text with all its sources,
originals of documents, passages in context, assistants, and source and user management for admins."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import write
from tests.server.conftest import ALICE_PW, auth

TRAVEL = "What is the hotel cost cap per night in Europe?"
HOTEL = "Hotel costs are capped at EUR 180 per night in Europe."


def _strip(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("instance", "request_id")}


def _docs(served) -> Path:
    return Path(served.ws.sources.get("docs").config["path"])


def test_an_abstention_says_so_plainly_and_only_admins_see_thresholds(client, served):
    served.ws.config.answer.min_evidence = 2.0  # nothing is strong enough
    for user in ("bob", "root"):
        ans = client.post("/api/v1/ask", json={"question": TRAVEL}, headers=auth(served.keys[user])).json()
        assert ans["decision"] == "abstained"
        assert ans["message"] == "I couldn't find this in the documents you can access."
        if user == "root":
            assert "answer.min_evidence" in ans["reason"]
        else:
            assert ans["reason"] == "the passages found do not answer this clearly enough"
            assert not any(ch.isdigit() for ch in ans["reason"]) and "min_evidence" not in ans["reason"]


def test_quotes_instead_of_a_failed_draft_say_so_plainly(client, served):
    from bastion.testing.fake_llm import ScriptedLLM

    served.ws.use_llm(ScriptedLLM("Trains are always free for everyone [1]."))
    for user in ("bob", "root"):
        ans = client.post("/api/v1/ask", json={"question": TRAVEL, "mode": "answer"},
                          headers=auth(served.keys[user])).json()
        assert ans["decision"] == "extracted" and HOTEL in ans["answer"]
        assert ans["message"] == "Here are the passages that answer this, quoted from the documents."
        if user == "root":
            assert ans["reason"].startswith("the model's answer was not grounded (")
        else:
            assert ans["reason"] == ("the language model's draft did not pass the citation checks, so the "
                                     "passages are quoted")
    grounded = ScriptedLLM("Hotel costs are capped at EUR 180 per night in Europe [1].", model_id="another")
    served.ws.use_llm(grounded)
    ans = client.post("/api/v1/ask", json={"question": TRAVEL, "mode": "answer"}, headers=auth(served.keys["bob"])).json()
    assert ans["decision"] == "answered" and ans["message"] is None and ans["reason"] is None


@pytest.fixture
def two_copies(served):
    """A second source holding a copy of the same folder (as the quickstart's demo workspace does)."""
    copy = _docs(served).parent / "share"
    shutil.copytree(_docs(served), copy)
    served.ws.sources.add_folder("share", copy, acl="everyone")
    served.ws.sync("share")
    return served


def test_one_text_held_by_two_sources_is_quoted_once_with_both_sources(client, two_copies):
    from bastion.testing.fake_llm import ScriptedLLM

    bob = auth(two_copies.keys["bob"])
    hits = client.post("/api/v1/search", json={"query": TRAVEL, "k": 4}, headers=bob).json()["hits"]
    assert sorted(h["source"] for h in hits if h["path"] == "hr/travel.md") == ["docs", "share"]
    for body, decision in (({"question": TRAVEL}, "extracted"), ({"question": TRAVEL, "mode": "answer"}, "answered")):
        two_copies.ws.use_llm(ScriptedLLM(HOTEL[:-1] + " [1]."))
        ans = client.post("/api/v1/ask", json=body, headers=bob).json()
        assert ans["decision"] == decision
        quotes = [" ".join(c["quote"].split()) for c in ans["citations"]]
        assert len(quotes) == len(set(quotes)), quotes  # each text once
        hotel = next(c for c in ans["citations"] if HOTEL in c["quote"])
        assert sorted(s["source"] for s in hotel["sources"]) == ["docs", "share"]
        assert {s["path"] for s in hotel["sources"]} == {"hr/travel.md"} and len({s["doc_id"] for s in hotel["sources"]}) == 2
        assert hotel["sources"][0]["chunk_id"] == hotel["chunk_id"]
        # the numbers in the text are the citations' numbers, consecutive from 1
        assert [c["n"] for c in ans["citations"]] == list(range(1, len(ans["citations"]) + 1))
        assert f"[{hotel['n']}]" in ans["answer"] and f"[{len(ans['citations']) + 1}]" not in ans["answer"]
    # positive control: one source alone gives one source per citation
    alone = client.post("/api/v1/search", json={"query": TRAVEL, "source": "docs"}, headers=bob).json()["hits"]
    assert {h["source"] for h in alone} == {"docs"}


def test_a_cached_answer_never_names_a_copy_its_asker_may_not_read(client, served, tmp_path):
    from bastion.core.config import AssistantConfig
    from bastion.testing.fake_llm import ScriptedLLM

    ws = served.ws
    for name in ("one", "two"):
        write(tmp_path / name / "hotels.md", f"# Hotels\n\n{HOTEL}\n")
        ws.sources.add_folder(name, tmp_path / name, acl="group:staff")
        ws.sync(name)
    ws.config.assistants["hotels"] = AssistantConfig(sources=["one", "two"], mode="answer")
    ws.directory.add_user("carol", groups=["staff", "auditors"])
    carol = auth(ws.accounts.create_key("carol")[1])
    ws.use_llm(ScriptedLLM(HOTEL[:-1] + " [1]."))
    ask = {"question": TRAVEL, "assistant": "hotels"}
    first = client.post("/api/v1/ask", json=ask, headers=carol).json()
    assert first["decision"] == "answered" and len(first["citations"][0]["sources"]) == 2
    shown = first["citations"][0]["sources"][0]["source"]
    hidden = ({"one", "two"} - {shown}).pop()  # the copy the answer names second is now for auditors only
    write(tmp_path / hidden / ".bastion-acl", "group:auditors\n")
    ws.sync(hidden)
    bob = client.post("/api/v1/ask", json=ask, headers=auth(served.keys["bob"])).json()
    assert bob["decision"] == "answered" and not bob["cached"]  # not carol's answer, which names the other copy
    assert [s["source"] for c in bob["citations"] for s in c["sources"]] == [shown]
    again = client.post("/api/v1/ask", json=ask, headers=carol).json()  # positive control
    assert sorted(s["source"] for s in again["citations"][0]["sources"]) == ["one", "two"]


def test_originals_stream_for_readers_only(client, served):
    alice, bob = auth(served.keys["alice"]), auth(served.keys["bob"])
    q3, travel = served.docs["finance/q3.md"], served.docs["hr/travel.md"]
    r = client.get(f"/api/v1/documents/{travel}/original", headers=bob)
    assert r.status_code == 200 and r.content == (_docs(served) / "hr" / "travel.md").read_bytes()
    assert r.headers["content-type"].startswith("text/markdown") and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"] == "inline; filename=\"travel.md\"; filename*=UTF-8''travel.md"
    download = client.get(f"/api/v1/documents/{travel}/original", params={"download": "true"}, headers=bob)
    assert download.headers["content-disposition"].startswith("attachment;")
    cn = client.get(f"/api/v1/documents/{served.docs['hr/报销.md']}/original", headers=bob)
    assert "filename=\"_" in cn.headers["content-disposition"] and "%E6%8A%A5" in cn.headers["content-disposition"]
    # another group's document answers exactly like a missing one; its reader gets it
    denied = client.get(f"/api/v1/documents/{q3}/original", headers=bob)
    missing = client.get("/api/v1/documents/0123456789abcdef/original", headers=bob)
    assert denied.status_code == missing.status_code == 404 and _strip(denied.json()) == _strip(missing.json())
    assert b"48.2" in client.get(f"/api/v1/documents/{q3}/original", headers=alice).content
    # the folder's ACL as it is now counts, before any sync
    write(_docs(served) / "hr" / ".bastion-acl", "group:finance\n")
    assert _strip(client.get(f"/api/v1/documents/{travel}/original", headers=bob).json()) == _strip(missing.json())
    assert client.get(f"/api/v1/documents/{travel}/original", headers=alice).status_code == 200
    # a link put in place of the file is refused, never followed
    (_docs(served) / "hr" / "travel.md").unlink()
    (_docs(served) / "hr" / "travel.md").symlink_to(_docs(served) / "finance" / "q3.md")
    refused = client.get(f"/api/v1/documents/{travel}/original", headers=alice)
    assert refused.status_code == 404 and b"48.2" not in refused.content
    entries = client.get("/api/v1/audit", params={"action": "documents.original"},
                         headers=auth(served.keys["root"])).json()["entries"]
    assert {e["outcome"] for e in entries} == {"ok", "denied"}


def test_a_sql_row_original_is_its_indexed_text(client, served, tmp_path):
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tickets (id INTEGER PRIMARY KEY, title TEXT, body TEXT, acl TEXT)")
        conn.execute("INSERT INTO tickets VALUES (7, 'VPN down', 'The VPN drops every hour since Monday.', 'group:it')")
    root, bob = auth(served.keys["root"]), auth(served.keys["bob"])
    assert client.post("/api/v1/sources", json={"name": "tickets", "kind": "sql", "url": f"sqlite:///{db}",
                                                "table": "tickets", "text_template": "{title}\n{body}",
                                                "acl_column": "acl"}, headers=root).status_code == 201
    served.ws.sync("tickets")
    from sqlalchemy import select

    from bastion.catalog.models import DocumentRow

    with served.ws.catalog.session() as s:
        doc_id = s.scalar(select(DocumentRow.id).where(DocumentRow.key == "7"))
    row = client.get(f"/api/v1/documents/{doc_id}/original", headers=root).json()
    assert row["text"] == "VPN down\nThe VPN drops every hour since Monday." and row["path"] == "7"
    assert row["source"] == "tickets" and row["media_type"] == "text/plain"
    assert client.get(f"/api/v1/documents/{doc_id}/original", headers=bob).status_code == 404


def test_a_passage_comes_with_its_document_and_surroundings(client, served):
    from bastion.testing import HashEmbedder

    long = "\n\n".join(f"Paragraph {i}. " + " ".join(f"word{i}x{j}" for j in range(60)) + "." for i in range(6))
    write(_docs(served) / "hr" / "handbook.md", "# Handbook\n\n" + long + "\n")
    served.ws.config.chunking.max_tokens, served.ws.config.chunking.overlap_tokens = 40, 0
    assert isinstance(served.ws.embedder, HashEmbedder)
    served.ws.sync("docs")
    doc = client.get(f"/api/v1/documents/{served.ws.documents.list_readable(served.ws.principal('bob'))[0].id}",
                     headers=auth(served.keys["bob"]))
    handbook = next(d for d in served.ws.documents.list_readable(served.ws.principal("bob")) if d.path == "hr/handbook.md")
    passages = client.get(f"/api/v1/documents/{handbook.id}", headers=auth(served.keys["bob"])).json()["passages"]
    assert doc.status_code == 200 and len(passages) >= 3
    middle = passages[1]
    p = client.get(f"/api/v1/passages/{middle['chunk_id']}", headers=auth(served.keys["bob"])).json()
    assert p["text"] == middle["text"] and p["title"] == "handbook" and p["doc_id"] == handbook.id
    assert p["original"] == f"/api/v1/documents/{handbook.id}/original" and p["path"] == "hr/handbook.md"
    assert p["original_url"] is None  # a file's original is served here, not at an address of its own
    assert p["before"] and passages[0]["text"].endswith(p["before"]) and passages[2]["text"].startswith(p["after"])
    assert (p["char_start"], p["char_end"]) == (middle["char_start"], middle["char_end"])


def test_assistants_name_the_default_and_ask_refuses_an_unknown_one(client, served):
    bob = auth(served.keys["bob"])
    listed = client.get("/api/v1/assistants", headers=bob).json()
    assert listed["default"] == "bastion"
    default = next(a for a in listed["assistants"] if a["name"] == "bastion")
    assert default["default"] is True and default["description"] and default["mode"] == "extract"
    r = client.post("/api/v1/ask", json={"question": TRAVEL, "assistant": "nope-bot"}, headers=bob)
    assert r.status_code == 422 and "'nope-bot'" in r.json()["detail"]
    assert client.post("/api/v1/ask", json={"question": TRAVEL, "assistant": "bastion"}, headers=bob).status_code == 200


def test_admins_change_and_remove_sources_and_see_what_failed(client, served):
    root, alice = auth(served.keys["root"]), auth(served.keys["alice"])
    write(_docs(served) / "hr" / "broken.pdf", b"%PDF-1.4 not really a pdf")
    (_docs(served) / "hr" / "loop.md").symlink_to(_docs(served) / "hr" / "travel.md")
    served.ws.sync("docs")
    # members may neither list, change nor remove sources (positive controls below)
    assert client.get("/api/v1/sources", headers=alice).status_code == 403
    assert client.patch("/api/v1/sources/docs", json={"acl": "everyone"}, headers=alice).status_code == 403
    assert client.delete("/api/v1/sources/docs", headers=alice).status_code == 403
    docs = client.get("/api/v1/sources", headers=root).json()["sources"][0]
    last = docs["last_sync"]
    assert last["status"] == "completed" and last["errors_total"] == 1 and last["errors"][0]["file"] == "hr/broken.pdf"
    assert last["skipped"] == [{"file": "hr/loop.md", "reason": "link"}] and last["skipped_total"] == 1
    assert docs["documents"]["active"] == 3 and docs["failed_documents_total"] == 1
    assert docs["failed_documents"][0]["path"] == "hr/broken.pdf" and docs["failed_documents"][0]["reason"]
    # change the ACL: the queued sync applies it
    bad = client.patch("/api/v1/sources/docs", json={"acl": "group:"}, headers=root)
    assert bad.status_code == 400 and "group:" in bad.json()["detail"]
    wrong_kind = client.patch("/api/v1/sources/docs", json={"table": "x"}, headers=root)
    assert wrong_kind.status_code == 400 and "'table'" in wrong_kind.json()["detail"]
    assert client.patch("/api/v1/sources/nope", json={"acl": "everyone"}, headers=root).status_code == 404
    changed = client.patch("/api/v1/sources/docs", json={"acl": "group:it", "exclude": ["hr/*.pdf"]}, headers=root)
    assert changed.status_code == 200 and changed.json()["config"]["acl"] == "group:it"
    assert served.app.state.server.jobs.wait(changed.json()["job"]["id"], 60)["status"] == "completed"
    bob_hits = client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(served.keys["bob"])).json()["hits"]
    assert bob_hits == [] and client.post("/api/v1/search", json={"query": "hotel"}, headers=root).json()["hits"]
    # remove it: its documents leave the index and the catalog, and the removal is audited
    q3 = served.docs["finance/q3.md"]
    assert client.delete("/api/v1/sources/nope", headers=root).status_code == 404
    removed = client.delete("/api/v1/sources/docs", headers=root)
    assert removed.status_code == 200 and removed.json()["removed"] == "docs" and removed.json()["documents"] == 4
    assert client.get("/api/v1/sources", headers=root).json()["sources"] == []
    assert client.post("/api/v1/search", json={"query": "hotel"}, headers=root).json()["hits"] == []
    assert served.ws.store.rows_for(list(served.docs.values())) == []
    assert client.get(f"/api/v1/documents/{q3}", headers=alice).status_code == 404
    entries = client.get("/api/v1/audit", params={"action": "source.*"}, headers=root).json()["entries"]
    assert [(e["action"], e["target"], e["outcome"]) for e in entries if e["outcome"] == "ok"] == [
        ("source.change", "docs", "ok"), ("source.remove", "docs", "ok")]


def test_an_admin_resets_a_password_and_removes_a_user(client, served):
    root = auth(served.keys["root"])
    assert client.post("/api/v1/auth/login", json={"username": "alice", "password": ALICE_PW}).status_code == 200
    assert client.get("/api/v1/auth/me").json()["user"] == "alice"
    reset = client.patch("/api/v1/users/alice", json={"password": "a-new-password-2"}, headers=root)
    assert reset.status_code == 200 and reset.json()["sessions_ended"] == 1
    assert client.get("/api/v1/auth/me").status_code == 401  # her session ended
    assert client.post("/api/v1/auth/login", json={"username": "alice", "password": ALICE_PW}).status_code == 401
    assert client.post("/api/v1/auth/login", json={"username": "alice", "password": "a-new-password-2"}).status_code == 200
    assert client.get("/api/v1/auth/me").json()["user"] == "alice"
    # a member may not do either; the admin removes a user whose key then stops working
    assert client.patch("/api/v1/users/bob", json={"password": "x" * 12},
                        headers=auth(served.keys["erin"])).status_code == 403
    assert client.delete("/api/v1/users/bob", headers=auth(served.keys["erin"])).status_code == 403
    assert client.delete("/api/v1/users/bob", headers=root).json() == {"removed": "bob"}
    assert client.get("/api/v1/auth/me", headers=auth(served.keys["bob"])).status_code == 401
    assert client.delete("/api/v1/users/bob", headers=root).status_code == 404
