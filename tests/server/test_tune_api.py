"""Adapters over the HTTP API: admins only; promotion follows the closed loop's verdict (409 when
not better), rollback, accept; members asking get the adapter only if its audience admits them."""
from __future__ import annotations

from sqlalchemy import select

from bastion.catalog.models import DocumentRow
from bastion.testing.fake_llm import ScriptedLLM
from tests.server.conftest import auth

BETTER = {"heldout": {"base": {"groundedness": 0.0, "contains": 0.5, "f1": 0.2, "leaks": 0},
                      "adapter": {"groundedness": 0.6, "contains": 0.6, "f1": 0.3, "leaks": 0}},
          "forgetting": {"base_correct": 4, "retained": 4, "retention": 1.0}}
WORSE = {"heldout": {"base": {"groundedness": 0.0, "contains": 0.6, "f1": 0.3, "leaks": 0},
                     "adapter": {"groundedness": 0.0, "contains": 0.3, "f1": 0.1, "leaks": 0}},
         "forgetting": {"base_correct": 4, "retained": 1, "retention": 0.25}}


def _register(served, tmp_path, name, evaluation):
    ws = served.ws
    f = tmp_path / f"{name}.gguf"
    f.write_bytes(b"GGUF" + name.encode())
    with ws.catalog.session() as s:
        docs = [{"doc_id": d.id, "version_id": d.current_version_id, "path": d.key, "acl": list(d.acl)}
                for d in s.scalars(select(DocumentRow)) if "group:finance" in d.acl]
    ws.adapters.register(name, ws.config.llm.model, f, audience=["group:finance"], dataset=None, documents=docs,
                         training={"steps": 1})
    ws.adapters.set_evaluation(name, evaluation)


def test_admins_promote_on_the_loops_verdict_and_only_the_audience_gets_the_adapter(client, served, tmp_path):
    root, alice, bob = (auth(served.keys[u]) for u in ("root", "alice", "bob"))
    served.ws.config.answer.mode = "answer"
    served.ws.use_llm(ScriptedLLM("NOT_IN_SOURCES", model_id="base"),
                      adapters={"good": ScriptedLLM("NOT_IN_SOURCES", model_id="good")})
    _register(served, tmp_path, "good", BETTER)
    _register(served, tmp_path, "bad", WORSE)
    assert client.get("/api/v1/tune/adapters", headers=alice).status_code == 403
    assert {a["name"] for a in client.get("/api/v1/tune/adapters", headers=root).json()["adapters"]} == {"good", "bad"}
    refused = client.post("/api/v1/tune/adapters/bad/promote", json={}, headers=root)
    assert refused.status_code == 409 and "forgot" in refused.json()["detail"]
    assert client.post("/api/v1/tune/adapters/nope/promote", json={}, headers=root).status_code == 404
    assert client.post("/api/v1/tune/adapters/good/promote", json={}, headers=alice).status_code == 403
    ok = client.post("/api/v1/tune/adapters/good/promote", json={}, headers=root)
    assert ok.status_code == 200 and ok.json()["promoted"] is True
    q = {"question": "What was Q3 2026 revenue?"}
    assert client.post("/api/v1/ask", json=q, headers=alice).json()["adapter"] == "good"  # finance
    assert client.post("/api/v1/ask", json=q, headers=bob).json()["adapter"] is None  # not finance
    back = client.post("/api/v1/tune/rollback", json={}, headers=root)
    assert back.status_code == 200 and back.json() == {"retired": "good", "restored": None}
    assert client.post("/api/v1/ask", json=q, headers=alice).json()["adapter"] is None
    entries = client.get("/api/v1/audit", params={"action": "tune.promote"}, headers=root).json()["entries"]
    assert sorted(e["outcome"] for e in entries) == ["denied"] * 3 + ["ok"]  # bad, unknown, alice; then good
