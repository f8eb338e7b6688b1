"""Evaluation over the HTTP API: admins only; a set's questions and results only for who may read
what it quotes; runs start in the background; promotion refuses a worse configuration."""
from __future__ import annotations

import time

from tests.server.conftest import auth

OPEN = [{"question": "What are hotel costs capped at per night in Europe?", "answer": "EUR 180",
         "document": "hr/travel.md"}]
FINANCE = [{"question": "What was Q3 2026 revenue?", "answer": "EUR 48.2 million", "document": "finance/q3.md"}]


def wait_for(client, headers, run_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/eval/runs/{run_id}", headers=headers).json()
        if run["status"] != "running":
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still running")


def test_members_are_refused_and_admins_run_sets_in_the_background(client, served):
    root, alice = auth(served.keys["root"]), auth(served.keys["alice"])
    assert client.put("/api/v1/eval/sets/hr", json={"items": OPEN, "asker": "bob"}, headers=alice).status_code == 403
    assert client.get("/api/v1/eval/runs", headers=alice).status_code == 403
    r = client.put("/api/v1/eval/sets/hr", json={"items": OPEN, "asker": "bob"}, headers=root)
    assert r.status_code == 201 and r.json()["set"]["version"] == 1
    bad = client.put("/api/v1/eval/sets/hr", json={"items": [{"question": "x", "kind": "forbidden"}], "acl": "everyone"},
                     headers=root)
    assert bad.status_code in (400, 422) and "asker" in bad.text
    assert client.put("/api/v1/eval/sets/hr", json={"items": OPEN, "colour": 1}, headers=root).status_code == 422
    started = client.post("/api/v1/eval/runs", json={"set": "hr", "repeat": 1}, headers=root)
    assert started.status_code == 202, started.text
    run = wait_for(client, root, started.json()["run_id"])
    assert run["status"] == "completed" and run["trigger"] == "api" and run["started_by"] == "root"
    m = run["configs"][0]["metrics"]
    assert m["contains"] == 1.0 and m["leaks"] == 0 and run["configs"][0]["items"][0]["answer"]
    listed = client.get("/api/v1/eval/runs", headers=root).json()["runs"]
    assert [x["run_id"] for x in listed] == [run["run_id"]]
    page = client.get(f"/api/v1/eval/runs/{run['run_id']}/report", headers=root)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert client.post("/api/v1/eval/runs", json={"set": "nope"}, headers=root).status_code in (400, 404)
    assert client.post("/api/v1/eval/runs", json={"set": "hr", "configs": ["nope"]}, headers=root).status_code in (400, 404)


def test_a_set_quoting_documents_the_admin_may_not_read_shows_only_its_metrics(client, served):
    root = auth(served.keys["root"])  # root is in group "it", not "finance"
    r = client.put("/api/v1/eval/sets/fin", json={"items": FINANCE, "asker": "alice"}, headers=root)
    assert r.status_code == 201 and r.json()["set"]["acl"] == [["group:finance"]]
    sets = {s["name"]: s for s in client.get("/api/v1/eval/sets", headers=root).json()["sets"]}
    assert sets["fin"]["readable"] is False
    assert client.get("/api/v1/eval/sets/fin", headers=root).status_code == 403
    assert client.post("/api/v1/eval/runs", json={"set": "fin"}, headers=root).status_code == 403
    # the positive control: a set of open documents is shown whole
    client.put("/api/v1/eval/sets/hr", json={"items": OPEN, "asker": "bob"}, headers=root)
    got = client.get("/api/v1/eval/sets/hr", headers=root).json()
    assert got["items"][0]["question"] == OPEN[0]["question"]
    # a run of the finance set (from the CLI or Python) shows root its metrics, never its items
    run = served.ws.evaluation.run("fin", repeat=0)
    seen = client.get(f"/api/v1/eval/runs/{run['run_id']}", headers=root).json()
    assert seen["items_hidden"] is True and "items" not in seen["configs"][0]
    assert seen["configs"][0]["metrics"]["items"] == 1
    assert client.get(f"/api/v1/eval/runs/{run['run_id']}/report", headers=root).status_code == 403


def test_promote_over_the_api_refuses_a_worse_configuration(client, served):
    root = auth(served.keys["root"])
    client.put("/api/v1/eval/sets/hr", json={"items": OPEN, "asker": "bob"}, headers=root)
    assert client.put("/api/v1/eval/configs/timid", json={"approach": "extract", "min_evidence": 1.5},
                      headers=root).status_code == 200
    assert client.put("/api/v1/eval/configs/bad", json={"approach": "guess"}, headers=root).status_code == 422
    before = (served.ws.home / "bastion.toml").read_text(encoding="utf-8")
    r = client.post("/api/v1/eval/promote", json={"config": "timid", "set": "hr"}, headers=root)
    assert r.status_code == 409 and "worse" in r.json()["detail"]
    assert (served.ws.home / "bastion.toml").read_text(encoding="utf-8") == before
    entries = client.get("/api/v1/audit", params={"action": "eval.promote"}, headers=root).json()["entries"]
    assert [e["outcome"] for e in entries] == ["denied"]
    pinned = client.put("/api/v1/eval/pins/hr", json={"tolerance": 0.1}, headers=root)
    assert pinned.status_code == 200 and pinned.json()["tolerance"] == 0.1
    assert [p["set"] for p in client.get("/api/v1/eval/pins", headers=root).json()["pins"]] == ["hr"]
