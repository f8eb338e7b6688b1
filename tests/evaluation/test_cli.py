"""``bastion eval …`` end to end on the hash embedder: the interface scripts depend on."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write

ROWS = [
    {"question": "How much may employees spend per night on hotels in Shanghai?", "answer": "800 CNY",
     "document": "travel.md"},
    {"question": "How many days of paid annual leave do full-time staff receive?", "answer": "25 days",
     "document": "leave.md"},
    {"question": "What was revenue in the third quarter of 2026?", "answer": "48 million euros",
     "document": "finance/q3.md", "asker": "bob", "kind": "forbidden"},
    {"question": "Who founded the company's Mars office?", "kind": "unanswerable"},
]


@pytest.fixture
def home(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    write(docs / "travel.md", "# Travel\n\nEmployees travelling to Shanghai may spend at most 800 CNY per night on hotels.\n")
    write(docs / "leave.md", "# Leave\n\nFull-time staff receive 25 days of paid annual leave per year.\n")
    write(docs / "finance" / "q3.md", "# Q3\n\nRevenue in the third quarter of 2026 was 48 million euros.\n")
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    h = tmp_path / "ws"
    Workspace.init(h)
    toml = h / "bastion.toml"  # quotes only, and no evidence threshold: the hash embedder's scores are not calibrated
    toml.write_text(toml.read_text(encoding="utf-8").replace(
        'mode = "answer"', 'mode = "extract"\nmin_evidence = -1.0\nmin_evidence_zh = -1.0', 1), encoding="utf-8")
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(h, embedder=HashEmbedder()))
    ws = Workspace.open(h, embedder=HashEmbedder())
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", docs, acl="everyone")
    ws.sync()
    ws.close()
    return h


def bastion(*args: str, code: int = 0):
    result = CliRunner().invoke(cli.app, list(args))
    assert result.exit_code == code, result.output
    return result


def test_import_run_report_compare_through_the_cli(home, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "fine?"}\n{"question": 3}\n', encoding="utf-8")
    r = bastion("eval", "set", "import", "hr", str(bad), "--acl", "everyone", code=2)
    assert "line 2" in r.output and '"question" must be text' in r.output
    good = tmp_path / "hr.jsonl"
    good.write_text("".join(json.dumps(x) + "\n" for x in ROWS), encoding="utf-8")
    data = json.loads(bastion("eval", "set", "import", "hr", str(good), "--as", "alice", "--json").output)
    assert data["set"]["name"] == "hr" and data["set"]["version"] == 1 and data["set"]["items"] == 4

    run = json.loads(bastion("eval", "run", "hr", "--mode", "extract", "--json").output)
    assert len(run["run_id"]) == 32
    m = run["configs"][0]["metrics"]
    for key in ("items", "contains", "f1", "groundedness", "citation_accuracy", "abstention_recall_forbidden",
                "abstention_recall_unanswerable", "leaks", "latency_p95_ms"):
        assert key in m
    assert m["items"] == 4 and m["leaks"] == 0 and m["groundedness"] is None
    for key in ("contains", "f1", "citation_accuracy", "abstention_recall_forbidden", "abstention_recall_unanswerable"):
        assert m[key] is None or 0 <= m[key] <= 1

    bastion("eval", "config", "add", "dense", "--search-mode", "dense", "--k", "3")
    bad_config = bastion("eval", "config", "add", "oops", "--approach", "guess", code=2)
    assert "approach" in bad_config.output
    two = json.loads(bastion("eval", "run", "hr", "--config", "current", "--config", "dense", "--json").output)
    assert [c["name"] for c in two["configs"]] == ["current", "dense"]
    assert set(two["comparison"]["metrics"]["contains"]) >= {"diff", "ci", "p_value", "significant"}

    table = bastion("eval", "run", "hr", "--config", "dense").output
    assert "dense" in table and "contains" in table and "leaks" in table
    out = tmp_path / "report.html"
    bastion("eval", "report", run["run_id"], two["run_id"][:10], "-o", str(out))
    html = out.read_text(encoding="utf-8")
    assert html.lower().startswith("<!doctype html>") and "dense" in html and "<svg" in html
    cmp = json.loads(bastion("eval", "compare", run["run_id"], two["run_id"], "--config-b", "dense", "--json").output)
    assert cmp["same_set"] is True and "f1" in cmp["metrics"]
    runs = json.loads(bastion("eval", "runs", "--set", "hr", "--json").output)["runs"]
    assert len(runs) == 3 and [r["run_id"] for r in runs][1:] == [two["run_id"], run["run_id"]]  # newest first


def test_promote_refusal_exits_1_and_is_audited_and_pinned_sets_run_from_monitor(home, tmp_path):
    good = tmp_path / "hr.jsonl"
    good.write_text("".join(json.dumps(x) + "\n" for x in ROWS[:2]), encoding="utf-8")
    bastion("eval", "set", "import", "hr", str(good), "--as", "alice")
    bastion("eval", "config", "add", "timid", "--min-evidence", "1.5")
    before = (home / "bastion.toml").read_text(encoding="utf-8")
    r = bastion("eval", "promote", "timid", "--set", "hr", code=1)
    assert "not promoted" in r.output
    assert (home / "bastion.toml").read_text(encoding="utf-8") == before
    audit = json.loads(bastion("audit", "list", "--json").output)
    assert any(e["action"] == "eval.promote" and e["outcome"] == "denied" for e in audit)

    bastion("eval", "pin", "hr", "--tolerance", "0.05")
    first = json.loads(bastion("monitor", "run", "--json").output)
    assert [e["trigger"] for e in first["evaluations"]] == ["first"]
    assert json.loads(bastion("monitor", "run", "--json").output)["evaluations"] == []
    pins = json.loads(bastion("eval", "pins", "--json").output)["pins"]
    assert pins[0]["set"] == "hr" and pins[0]["due"] is None
