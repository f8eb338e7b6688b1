"""Adapters answer only their audience; a change of membership, a restricted or deleted training
document, promotion and rollback, on fakes (the real adapter path is in test_train.py)."""
from __future__ import annotations

import re

import pytest

from bastion.core.errors import ConfigError
from bastion.testing.fake_llm import ScriptedLLM
from tests.conftest import write

FIN = "Revenue in the third quarter of 2026 was 48 million euros."
OPEN = "Full-time staff receive 25 days of paid annual leave per year."


def answering(tag: str):
    """A model that answers with the first passage's sentence, cited, and says who it is in the id."""
    def script(messages):
        m = re.search(r"^\[(\d+)\] [^:]*: (.*)$", messages[-1].content, re.M)
        return f"{m.group(2).rstrip('.')} [{m.group(1)}]." if m else "NOT_IN_SOURCES"
    return ScriptedLLM(script, model_id=tag)


@pytest.fixture
def ws(make_ws, tmp_path):
    docs = tmp_path / "docs"
    write(docs / "finance" / "q3.md", f"# Q3\n\n{FIN}\n")
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    write(docs / "leave.md", f"# Leave\n\n{OPEN}\n")
    w = make_ws(docs)
    w.sync()
    w.config.answer.min_evidence = w.config.answer.min_evidence_zh = -1.0
    w.use_llm(answering("base"), adapters={"fin-a": answering("fin-a"), "fin-b": answering("fin-b")})
    return w


def register(ws, tmp_path, name, audience=("group:finance",)):
    f = tmp_path / f"{name}.gguf"
    f.write_bytes(b"GGUF" + name.encode())
    with ws.catalog.session() as s:
        from sqlalchemy import select

        from bastion.catalog.models import DocumentRow

        docs = [{"doc_id": d.id, "version_id": d.current_version_id, "path": d.key, "acl": list(d.acl)}
                for d in s.scalars(select(DocumentRow))]
    return ws.adapters.register(name, "smollm2-135m", f, audience=list(audience), dataset="d", documents=docs,
                                training={"steps": 3})


def test_only_the_audience_is_answered_by_the_adapter(ws, tmp_path):
    register(ws, tmp_path, "fin-a")
    alice, bob = ws.principal("alice"), ws.principal("bob")
    assert ws.ask("What was revenue in Q3?", alice).adapter is None  # a candidate answers nobody
    ws.adapters.promote("fin-a", by="root")
    a = ws.ask("What was revenue in Q3?", alice)
    assert a.adapter == "fin-a" and a.model == "fin-a"  # the positive control: alice is in finance
    b = ws.ask("How many days of leave?", bob)
    assert b.adapter is None and b.model == "base"  # bob is not: the base model answers him
    assert ws.lineage(a.lineage_id)["model"]["adapter"] == "fin-a"
    # alice leaves finance: from her next question on, the base model answers her
    ws.directory.add_user("alice", groups=["staff"])
    assert ws.ask("How many days of leave?", ws.principal("alice")).adapter is None


def test_a_restricted_training_document_withdraws_the_adapter(ws, tmp_path):
    register(ws, tmp_path, "fin-a")
    ws.adapters.promote("fin-a", by="root")
    assert ws.ask("Revenue?", ws.principal("alice")).adapter == "fin-a"
    write(tmp_path / "docs" / "finance" / ".bastion-acl", "group:board\n")  # finance may no longer read it
    [report] = ws.sync()
    assert ws.adapters.get("fin-a").status == "withdrawn"
    assert "finance/q3.md is now restricted" in ws.adapters.get("fin-a").status_reason
    assert any(a["kind"] == "adapter" and a["source"] == "adapter:fin-a" for a in report.alerts)
    assert ws.ask("Revenue?", ws.principal("alice")).adapter is None
    with pytest.raises(ConfigError, match="withdrawn"):
        ws.adapters.promote("fin-a", by="root")
    ws.adapters.accept("fin-a", by="root")  # an admin reviewed it
    assert ws.adapters.get("fin-a").status == "active"


def test_a_deleted_training_document_withdraws_the_adapter(ws, tmp_path):
    register(ws, tmp_path, "fin-a")
    ws.adapters.promote("fin-a", by="root")
    (tmp_path / "docs" / "finance" / "q3.md").unlink()
    ws.sync()
    assert ws.adapters.get("fin-a").status == "withdrawn"
    assert "was deleted" in ws.adapters.get("fin-a").status_reason


def test_promotion_replaces_and_rollback_restores(ws, tmp_path):
    register(ws, tmp_path, "fin-a")
    register(ws, tmp_path, "fin-b")
    ws.adapters.promote("fin-a", by="root")
    assert ws.adapters.promote("fin-b", by="root")["replaced"] == ["fin-a"]
    assert ws.ask("Revenue?", ws.principal("alice")).adapter == "fin-b"
    assert ws.adapters.rollback(by="root") == {"retired": "fin-b", "restored": "fin-a"}
    assert ws.ask("Revenue?", ws.principal("alice")).adapter == "fin-a"
    assert ws.adapters.rollback(by="root") == {"retired": "fin-a", "restored": None}
    assert ws.ask("Revenue?", ws.principal("alice")).adapter is None
    with pytest.raises(ConfigError, match="no active adapter"):
        ws.adapters.rollback(by="root")
