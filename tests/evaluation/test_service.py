"""Question sets, runs, leaks, promotion, pinned regression sets and feedback candidates, on the
hash embedder and a scripted LLM (the real model is in test_real_model.py)."""
from __future__ import annotations

import json
import re

import pytest

from bastion.core.errors import AccessError, ConfigError
from bastion.evaluation.configs import EvalConfig
from bastion.testing.fake_llm import ScriptedLLM
from tests.conftest import write

HOTEL = "Employees travelling to Shanghai may spend at most 800 CNY per night on hotels."
LEAVE = "Full-time staff receive 25 days of paid annual leave per year."
REVENUE = "Revenue in the third quarter of 2026 was 48 million euros."

CONTRACT = ("items", "contains", "f1", "groundedness", "citation_accuracy", "abstention_recall_forbidden",
            "abstention_recall_unanswerable", "leaks", "latency_p95_ms")


@pytest.fixture
def ws(make_ws, tmp_path):
    docs = tmp_path / "docs"
    write(docs / "travel.md", f"# Travel\n\n{HOTEL}\n")
    write(docs / "leave.md", f"# Leave\n\n{LEAVE}\n")
    write(docs / "finance" / "q3.md", f"# Q3 results\n\n{REVENUE}\n")
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    w = make_ws(docs)
    w.sync()
    w.config.answer.min_evidence = w.config.answer.min_evidence_zh = -1.0  # hash embedder: not calibrated
    return w


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"question": "How much may employees spend per night on hotels in Shanghai?", "answer": "800 CNY",
     "document": "travel.md"},
    {"question": "How many days of paid annual leave do full-time staff receive?", "answer": ["25 days", "25"],
     "document": "leave.md"},
    {"question": "What was revenue in the third quarter of 2026?", "answer": "48 million euros",
     "document": "finance/q3.md", "asker": "bob", "kind": "forbidden"},
]


def cite_source_with(*words: str):
    """A model that answers with the passage sentence holding one of ``words``, citing it."""
    def script(messages):
        user = messages[-1].content
        for m in re.finditer(r"^\[(\d+)\] [^:]*: (.*)$", user, re.M):
            for word in words:
                if word in m.group(2):
                    sentence = next(s for s in re.split(r"(?<=\.) ", m.group(2)) if word in s)
                    return f"{sentence.rstrip('.')} [{m.group(1)}]."
        return "NOT_IN_SOURCES"
    return script


# -- sets ------------------------------------------------------------------------------------
def test_import_names_every_bad_line_and_stores_nothing(ws, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok?"}\nnot json\n{"question": "x", "kind": "maybe"}\n{"question": "y", "colour": 1}\n',
                   encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        ws.evaluation.import_set("hr", bad, acl="everyone")
    msg = str(err.value)
    assert "line 2: not valid JSON" in msg and "line 3" in msg and "'maybe'" in msg and "'colour'" in msg
    assert "line 1" not in msg and "nothing was imported" in msg
    assert ws.evaluation.sets.listing() == []


def test_import_versions_a_set_and_takes_its_readers_from_the_documents(ws, tmp_path):
    first = ws.evaluation.import_set("hr", jsonl(tmp_path / "a.jsonl", ROWS), asker="alice").eval_set
    assert (first.version, first.items, first.default_asker) == (1, 3, "alice")
    # it quotes the finance document: only who may read it (and the open ones) may read the set
    assert ws.principal("alice") and first.readable_by(ws.principal("alice"))
    assert not first.readable_by(ws.principal("bob"))
    second = ws.evaluation.import_set("hr", jsonl(tmp_path / "b.jsonl", ROWS[:2]), asker="alice").eval_set
    assert (second.version, second.items) == (2, 2)
    assert second.readable_by(ws.principal("bob"))  # no restricted document quoted any more
    assert ws.evaluation.sets.get("hr@1").items == 3 and ws.evaluation.sets.get("hr").version == 2


def test_import_csv_with_answer_lists(ws, tmp_path):
    csv = tmp_path / "q.csv"
    csv.write_text('question,answer,document\n"How many days of leave?","[""25 days"", ""25""]",leave.md\n'
                   '"Hotel cap in Shanghai?",800 CNY,travel.md\n', encoding="utf-8")
    s = ws.evaluation.import_set("csvset", csv, asker="bob").eval_set
    items = ws.evaluation.sets.items(s)
    assert items[0].answers == ["25 days", "25"] and items[1].answers == ["800 CNY"]


def test_import_refuses_what_would_mislead(ws, tmp_path):
    with pytest.raises(ConfigError, match="--acl"):  # quotes no known document: readers must be stated
        ws.evaluation.import_set("x", jsonl(tmp_path / "x.jsonl", [{"question": "anything?"}]))
    with pytest.raises(AccessError, match="nobody"):
        ws.evaluation.import_set("x", jsonl(tmp_path / "x.jsonl", [{"question": "q?"}]), acl="everyone", asker="nobody")
    readable = [{**ROWS[2], "asker": "alice"}]  # alice is in finance: the item is not forbidden for her
    with pytest.raises(ConfigError, match="not forbidden"):
        ws.evaluation.import_set("x", jsonl(tmp_path / "y.jsonl", readable))
    assert ws.evaluation.sets.listing() == []


# -- runs ------------------------------------------------------------------------------------
def test_extract_run_scores_items_and_keeps_the_forbidden_one_unanswered(ws, tmp_path):
    ws.evaluation.import_set("hr", jsonl(tmp_path / "a.jsonl", ROWS), asker="alice")
    run = ws.evaluation.run("hr", mode="extract", repeat=3)
    [config] = run["configs"]
    m = config["metrics"]
    assert set(CONTRACT) <= set(m)
    assert m["items"] == 3 and m["answerable"] == 2 and m["forbidden"] == 1
    assert m["contains"] == 1.0 and m["citation_accuracy"] == 1.0  # both open facts quoted from their documents
    # bob cannot read finance/q3.md: with no evidence threshold he gets quotes of other documents, never its text
    forbidden = config["items"][2]
    assert m["leaks"] == 0 and forbidden["scores"]["leak"] is False
    assert "48 million" not in forbidden["answer"] and "finance/q3.md" not in forbidden["cited_paths"]
    assert m["groundedness"] is None  # quotes only: no model answer to check
    assert m["abstention_recall_unanswerable"] is None  # no such item in the set
    assert m["consistency"] == 1.0 and m["cpu_s_per_1000"] > 0 and m["peak_rss_mb"] > 0
    assert [i["scores"]["contains"] for i in config["items"]] == [1.0, 1.0, None]
    assert ws.evaluation.runs.recent()[0]["run_id"] == run["run_id"]


def test_answer_run_measures_groundedness_and_compares_configurations(ws, tmp_path):
    ws.evaluation.import_set("hr", jsonl(tmp_path / "a.jsonl", ROWS), asker="alice")
    ws.use_llm(ScriptedLLM(cite_source_with("800 CNY", "25 days")))
    ws.evaluation.configs.put("quotes", EvalConfig(approach="extract"))
    run = ws.evaluation.run("hr", ["current", "quotes"], repeat=0)
    answer, quotes = (c["metrics"] for c in run["configs"])
    # every model answer passed the checks (bob's forbidden question got a true but unrelated sentence)
    assert answer["groundedness"] == 1.0 and answer["decisions"]["answered"] == 3 and answer["leaks"] == 0
    assert answer["contains"] == 1.0 and quotes["contains"] == 1.0
    cmp = run["comparison"]
    assert cmp["baseline"] == "current" and cmp["against"] == "quotes"
    assert cmp["metrics"]["contains"]["diff"] == 0 and cmp["metrics"]["contains"]["significant"] is False


def test_a_model_that_recalls_restricted_text_is_caught_as_a_leak(ws, tmp_path):
    ws.evaluation.import_set("hr", jsonl(tmp_path / "a.jsonl", ROWS), asker="alice")
    # prompt-only: no sources, the model "remembers" the restricted figure (as a model tuned on it would)
    ws.use_llm(ScriptedLLM(lambda m: "Revenue was 48 million euros." if "revenue" in m[-1].content.lower() else "NOT_IN_SOURCES"))
    ws.evaluation.configs.put("recall", EvalConfig(approach="prompt-only"))
    run = ws.evaluation.run("hr", ["current", "recall"], repeat=0)
    grounded, recall = (c["metrics"] for c in run["configs"])
    assert grounded["leaks"] == 0  # retrieval as bob never reaches finance/q3.md
    assert recall["leaks"] == 1 and recall["abstention_recall_forbidden"] == 0.0
    leaked = [i for i in run["configs"][1]["items"] if i["scores"]["leak"]]
    assert [i["item"]["document"] for i in leaked] == ["finance/q3.md"]


def test_unknown_asker_fails_before_anything_runs_and_item_errors_are_counted(ws, tmp_path):
    ws.evaluation.import_set("open", jsonl(tmp_path / "a.jsonl", ROWS[:2]), acl="everyone")
    with pytest.raises(AccessError):
        ws.evaluation.run("open", asker="ghost")
    run = ws.evaluation.run("open", mode="extract")  # no asker at all: each item is an error, not a crash
    m = run["configs"][0]["metrics"]
    assert m["items"] == 2 and m["errors"] == 2 and m["contains"] is None


# -- promotion -------------------------------------------------------------------------------
def test_promote_refuses_a_worse_configuration_and_promotes_one_that_is_not(ws, tmp_path):
    ws.evaluation.import_set("hr", jsonl(tmp_path / "a.jsonl", ROWS), asker="alice")
    ws.config.answer.mode = "extract"
    toml = ws.home / "bastion.toml"
    toml.write_text("# our settings\n" + toml.read_text(encoding="utf-8"), encoding="utf-8")
    before = toml.read_text(encoding="utf-8")
    ws.evaluation.configs.put("timid", EvalConfig(approach="extract", min_evidence=1.5))  # abstains on everything
    decision = ws.evaluation.regression.promote("timid", "hr")
    assert decision["promoted"] is False
    assert {r["metric"] for r in decision["regressions"]} >= {"contains", "f1"}
    assert toml.read_text(encoding="utf-8") == before
    ws.evaluation.configs.put("wider", EvalConfig(approach="extract", k=8, search_mode="bm25"))
    decision = ws.evaluation.regression.promote("wider", "hr")
    assert decision["promoted"] is True and decision["regressions"] == []
    after = toml.read_text(encoding="utf-8")
    assert after.startswith("# our settings") and "max_passages = 8" in after and 'mode = "bm25"' in after
    forced = ws.evaluation.regression.promote("timid", "hr", force=True)
    assert forced["promoted"] is True and forced["forced"] is True


# -- pinned sets and alerts ------------------------------------------------------------------
def test_pinned_set_runs_after_a_change_and_a_drop_opens_an_answer_quality_alert(ws, tmp_path):
    ws.evaluation.import_set("hr", jsonl(tmp_path / "a.jsonl", ROWS), asker="alice")
    ws.config.answer.mode = "extract"
    reg = ws.evaluation.regression
    reg.pin("hr", tolerance=0.05)
    [first] = reg.run_due()
    assert first["trigger"] == "first" and first["regressions"] == []
    assert reg.run_due() == []  # nothing changed: nothing is due
    ws.config.answer.min_evidence = 1.5  # a configuration change that makes every answer an abstention
    assert reg.why_due(reg.get("hr")) == "change"
    [second] = reg.run_due()
    assert {r["metric"] for r in second["regressions"]} >= {"contains"}
    [alert] = [a for a in ws.monitor.alerts() if a["kind"] == "answer_quality"]
    assert alert["source"] == "eval:hr" and alert["detail"]["run_id"] == second["run_id"]
    ws.config.answer.min_evidence = -1.0  # back: the next run is within tolerance and resolves the alert
    [third] = reg.run_due()
    assert third["regressions"] == []
    assert not [a for a in ws.monitor.alerts() if a["kind"] == "answer_quality"]


def test_a_sync_that_changes_a_source_enough_runs_the_pinned_set(ws, tmp_path):
    ws.evaluation.import_set("hr", jsonl(tmp_path / "a.jsonl", ROWS), asker="alice")
    ws.config.answer.mode = "extract"
    reg = ws.evaluation.regression
    reg.pin("hr", sync_change=0.3)
    reg.run_due()
    write(tmp_path / "docs" / "leave.md", "# Leave\n\nFull-time staff receive 30 days of paid annual leave per year.\n")
    [report] = ws.sync()
    pin = reg.get("hr")
    assert pin["last_run_id"] != pin["baseline_run_id"]  # the sync changed 1 of 3 documents (>= 0.3): it ran
    assert [a for a in report.alerts if a["kind"] == "answer_quality"]  # 25 days is gone: contains dropped


# -- feedback --------------------------------------------------------------------------------
def test_rated_answers_become_items_an_admin_accepts(ws):
    ws.config.answer.mode = "extract"
    a = ws.ask("How many days of paid annual leave?", ws.principal("bob"))
    fid = ws.documents.add_feedback(ws.principal("bob"), a.lineage_id, "up")
    b = ws.ask("Hotel cap in Shanghai?", ws.principal("bob"))
    ws.documents.add_feedback(ws.principal("bob"), b.lineage_id, "down", correction="800 CNY per night")
    cands = ws.evaluation.candidates()
    assert [c["rating"] for c in cands] == ["down", "up"]
    created = ws.evaluation.accept([c["feedback_id"] for c in cands], "from-users")
    items = ws.evaluation.sets.items(created)
    assert {i.asker for i in items} == {"bob"} and ["800 CNY per night"] in [i.answers for i in items]
    assert next(i for i in items if i.meta["feedback_id"] == fid).document == "leave.md"
    assert ws.evaluation.candidates() == []
    # a set made of bob's questions is bob's: alice may not read it
    assert created.readable_by(ws.principal("bob")) and not created.readable_by(ws.principal("alice"))


# -- generation ------------------------------------------------------------------------------
def test_generated_set_has_gold_documents_and_forbidden_items_for_users_who_cannot_read(ws):
    imported = ws.evaluation.generate_set("gen", "docs", 3, asker="alice", forbidden=1, use_llm=False)
    items = ws.evaluation.sets.items(imported.eval_set)
    answerable = [i for i in items if i.kind == "answerable"]
    assert answerable and all(i.document and i.sentence and i.answers for i in answerable)
    [forbidden] = [i for i in items if i.kind == "forbidden"]
    assert forbidden.asker == "bob" and forbidden.document == "finance/q3.md"
    # the set quotes the finance document: bob may not read the set
    assert not imported.eval_set.readable_by(ws.principal("bob"))
    run = ws.evaluation.run("gen", mode="extract", repeat=0)
    assert run["configs"][0]["metrics"]["leaks"] == 0
