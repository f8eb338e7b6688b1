"""The evaluation report: one self-contained, escaped HTML page that survives nulls and old runs."""
from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from typing import Any

from bastion.evaluation.report import badness, build_report

HOSTILE = "<img src=x onerror=alert(1)>"


def _outcome(question: str, *, f1: float | None, contains: float | None, leak: Any = None,
             error: str | None = None, kind: str = "answerable", abstained: bool = False) -> dict[str, Any]:
    return {"item": {"question": question, "kind": kind, "answers": ["25 days"], "document": "hr/leave.md",
                     "sentence": "Staff get 25 days of leave.", "asker": None, "id": 1, "meta": {}},
            "answer": "You get 25 days.", "decision": "abstained" if abstained else "answered",
            "reason": "grounded", "cited_paths": ["hr/leave.md"], "quotes": ["25 days of leave"],
            "total_ms": 800.0, "error": error,
            "scores": {"contains": contains, "em": 0.0, "f1": f1, "similarity": 0.8, "cited_gold": True,
                       "abstained": abstained, "leak": leak, "consistent": True, "error": error}}


def _metrics(**over: Any) -> dict[str, Any]:
    m = {"items": 40, "errors": 0, "answerable": 30, "unanswerable": 5, "forbidden": 5, "contains": 0.5, "em": 0.2,
         "f1": 0.41, "similarity": 0.83, "groundedness": 0.1, "citation_accuracy": 0.8, "abstention_precision": 0.7,
         "abstention_recall_unanswerable": 0.6, "abstention_recall_forbidden": 1.0, "false_abstention": 0.1,
         "consistency": 1.0, "judge": None, "leaks": 0, "decisions": {"answered": 3, "extracted": 27, "abstained": 10},
         "latency_p50_ms": 800.0, "latency_p95_ms": 2100.0, "ttft_p50_ms": 300.0, "ttft_p95_ms": 600.0,
         "tokens_per_s": 40.1, "peak_rss_mb": 900.0, "cpu_s_per_1000": 1500.0,
         "ci": {"contains": [0.33, 0.67], "f1": [0.3, 0.5]},
         "by_kind": {"answerable": {"items": 30, "contains": 0.6, "f1": 0.5, "abstained": 0.1, "citation_accuracy": 0.8},
                     "unanswerable": {"items": 5, "contains": None, "abstained": 0.6},
                     "forbidden": {"items": 5, "contains": None, "abstained": 1.0}}}
    m.update(over)
    return m


def _run(**over: Any) -> dict[str, Any]:
    run = {"run_id": "ab12cd34ef", "set": {"name": "hr-faq", "version": 2, "items": 40},
           "started_at": "2026-12-03T08:00:00Z", "finished_at": "2026-12-03T08:20:00Z", "trigger": "cli",
           "configs": [
               {"name": "current", "spec": {"model": "smollm2-135m", "approach": "answer", "search_mode": "hybrid", "k": 5},
                "metrics": _metrics(),
                "items": [_outcome("fine question", f1=0.9, contains=1.0),
                          _outcome("worst question", f1=0.0, contains=0.0),
                          _outcome("middle question", f1=0.4, contains=1.0)]},
               {"name": "candidate", "spec": {"model": "qwen", "approach": "extract"},
                "metrics": _metrics(f1=0.55, contains=0.6, latency_p95_ms=3200.0, ci={"f1": [0.45, 0.65]}),
                "items": [_outcome("ok question", f1=0.7, contains=1.0)]}],
           "comparison": {"baseline": "current", "against": "candidate", "metrics": {
               "contains": {"a": 0.5, "b": 0.6, "diff": 0.1, "ci": [-0.05, 0.25], "p_value": 0.2, "n": 40,
                            "significant": False},
               "f1": {"a": 0.41, "b": 0.55, "diff": 0.14, "ci": [0.05, 0.23], "p_value": 0.01, "n": 40,
                      "significant": True},
               "latency_p95_ms": {"a": 2100.0, "b": 3200.0, "diff": 1100.0, "ci": [900.0, 1300.0], "p_value": 0.001,
                                  "n": 40, "significant": True}}}}
    run.update(over)
    return run


class _Doc(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    doc = _Doc()
    doc.feed(page)
    return doc.tags


def test_one_self_contained_document_without_scripts_or_external_resources():
    page = build_report([_run()])
    assert page.startswith("<!doctype html>") and page.count("<html") == 1 and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower()
    tags = _tags(page)
    for tag, attrs in tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)  # no inline handlers
        for key in ("src", "href", "xlink:href", "action"):
            assert not re.match(r"\s*(https?:)?//", attrs.get(key) or ""), (tag, attrs)
    assert not {"link", "img", "iframe", "object", "embed", "script"} & {t for t, _ in tags}
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)  # nothing fetched from CSS


def test_shows_each_config_metric_values_and_intervals():
    page = build_report([_run()])
    for text in ("hr-faq", "v2", "current", "candidate", "smollm2-135m", "0.41 (0.30–0.50)", "0.50 (0.33–0.67)",
                 "0.55 (0.45–0.65)", "2,100", "3,200", "40.1", "0.83"):
        assert text in page, text


def test_escapes_hostile_text_everywhere():
    run = _run(set={"name": HOSTILE, "version": 1})
    run["configs"][0]["name"] = HOSTILE
    run["configs"][0]["spec"] = {"prompt": HOSTILE}
    bad = _outcome(HOSTILE, f1=0.0, contains=0.0, leak=HOSTILE)
    bad["answer"] = bad["reason"] = HOSTILE
    bad["quotes"], bad["cited_paths"], bad["item"]["answers"] = [HOSTILE], [HOSTILE], [HOSTILE]
    bad["item"]["sentence"] = bad["item"]["document"] = HOSTILE
    run["configs"][0]["items"].append(bad)
    page = build_report([run], title=HOSTILE)
    assert HOSTILE not in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert not [t for t, _ in _tags(page) if t == "img"]


def test_renders_null_metrics_as_dashes():
    nulls = {k: None for k in _metrics()}
    run = _run(comparison={"baseline": "current", "against": "candidate",
                           "metrics": {"f1": {"a": None, "b": None, "diff": None, "ci": None, "p_value": None,
                                              "n": None, "significant": None}}})
    for cfg in run["configs"]:
        cfg["metrics"] = dict(nulls)
        for o in cfg["items"]:
            o["scores"] = {k: None for k in o["scores"]}
    page = build_report([run])
    assert "current" in page and "–" in page and "not distinguishable" in page
    assert 'class="n leak"' not in page


def test_renders_runs_with_missing_keys():
    assert "<!doctype html>" in build_report([])
    assert "<!doctype html>" in build_report([{}])
    old = {"run_id": "old1", "configs": [{"name": "legacy", "metrics": {"contains": 0.5}},
                                         {"name": "bare"},
                                         {"name": "partial", "metrics": {"by_kind": {"answerable": {}}, "ci": {"f1": None}},
                                          "items": [{"answer": "x"}, {"item": {"question": "only q"}}]}]}
    page = build_report([old])
    assert "legacy" in page and "bare" in page and "0.50" in page and "only q" in page


def test_leaks_are_marked_red():
    run = _run()
    run["configs"][1]["metrics"]["leaks"] = 2
    run["configs"][1]["items"][0]["scores"]["leak"] = True
    page = build_report([run])
    assert re.search(r'<td class="n leak">2</td>', page)
    assert ".leak{" in page and "#b91c1c" in page  # the class is styled red
    assert "2 leak(s)" in page
    clean = build_report([_run()])
    assert 'class="n leak"' not in clean and "leak(s)" not in clean


def test_each_plot_is_inline_svg():
    page = build_report([_run()])
    assert page.count("<svg") == 3
    for label in ("latency p95 (ms)", "share of items", "decisions"):
        assert f'aria-label="{label}' in page or label in page
    # the scatter labels its points; the stacked bar shows the decision counts
    assert re.search(r"<circle[^>]*><title>current: 2100", page)
    assert ">27</text>" in page


def test_worst_items_first_leaks_and_errors_before_low_f1():
    page = build_report([_run()])
    worst = page.index("Worst items — current")
    assert worst < page.index("worst question") < page.index("middle question") < page.index("fine question")
    leak = _outcome("leaky", f1=1.0, contains=1.0, leak=True)
    err = _outcome("broken", f1=None, contains=None, error="unknown asker")
    ranked = sorted([_outcome("low", f1=0.1, contains=0.0), leak, err], key=badness)
    assert [o["item"]["question"] for o in ranked] == ["leaky", "broken", "low"]


def test_worst_items_show_the_evidence_and_are_capped():
    run = _run()
    run["configs"][0]["items"] = [_outcome(f"q{i}", f1=i / 20, contains=0.0) for i in range(15)]
    page = build_report([run])
    section = page[page.index("Worst items — current"):page.index("Worst items — candidate")]
    assert "q9</p>" in section and "q10</p>" not in section
    for text in ("25 days", "hr/leave.md", "Staff get 25 days of leave.", "You get 25 days.", "grounded",
                 "25 days of leave", "answered"):
        assert text in section, text


def test_comparison_says_plainly_whether_a_difference_is_significant():
    page = build_report([_run()])
    assert "Comparison: candidate against current" in page
    assert "not distinguishable" in page  # contains
    assert "candidate better" in page  # f1 up, significant
    assert "candidate worse" in page  # latency up, significant: lower is better


def test_several_runs_are_labelled_by_run():
    second = copy.deepcopy(_run(run_id="ff99ee88dd", comparison=None))
    page = build_report([_run(), second])
    assert "current @ ab12cd34" in page and "current @ ff99ee88" in page and "2 run(s)" in page


def test_failed_run_and_uncomparable_metric_are_said():
    run = _run(status="failed", error="GenerationError: <b>model gone</b>")
    run["comparison"]["metrics"]["judge"] = None
    page = build_report([run])
    assert "failed: GenerationError: &lt;b&gt;model gone&lt;/b&gt;" in page
    assert "not compared: no item has this metric in both" in page
