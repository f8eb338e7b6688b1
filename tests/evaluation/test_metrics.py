from __future__ import annotations

import pytest

from bastion.evaluation.items import EvalItem, Outcome
from bastion.evaluation.metrics import (
    HIGHER_IS_BETTER,
    RATE_METRICS,
    aggregate,
    compare_outcomes,
    contains,
    exact_match,
    normalize,
    score_item,
    strip_citations,
    token_f1,
)


def ask(question: str = "q", *, kind: str = "answerable", answers: list[str] | None = None,
        document: str | None = None, id: int | None = None, **outcome: object) -> Outcome:
    item = EvalItem(question=question, kind=kind, answers=answers if answers is not None else [], document=document, id=id)
    outcome.setdefault("answer", "")
    outcome.setdefault("decision", "answered")
    return Outcome(item=item, **outcome)  # type: ignore[arg-type]


# -- text matching


def test_normalize_english_and_chinese() -> None:
    assert normalize("The ‘Leave’ policy,  an   update!") == "leave policy update"
    assert normalize("年假 为 25 天，对吗？") == "年假为25天对吗"
    assert strip_citations("Yes [1] and 【2】 and [3, 4].") == "Yes  and  and ."


def test_contains_and_exact_match() -> None:
    assert contains("You get 25 days of leave [1].", ["25 days"]) == 1.0
    assert contains("You get 125 days.", ["25 days"]) == 0.0  # whole words
    assert contains("anything", ["", "  "]) == 0.0  # empty golds never match
    assert contains("anything", []) == 0.0
    assert exact_match("The 25 days.", ["25 days", "twenty-five days"]) == 1.0
    assert exact_match("25 days of leave", ["25 days"]) == 0.0
    assert contains("年假为二十五天【1】。", ["二十五天"]) == 1.0


def test_token_f1_by_hand() -> None:
    # answer tokens {25, days, of, leave}, gold {25, days}: P = 2/4, R = 2/2, F1 = 2 * .5 * 1 / 1.5 = 2/3
    assert token_f1("25 days of leave", ["25 days"]) == pytest.approx(2 / 3)
    assert token_f1("25 days of leave", ["nothing", "25 days"]) == pytest.approx(2 / 3)  # best gold
    assert token_f1("no overlap", ["25 days"]) == 0.0
    # Chinese, by character: answer 年假二十五天 (6), gold 二十五天整 (5), common 4: P = 4/6, R = 4/5
    p, r = 4 / 6, 4 / 5
    assert token_f1("年假二十五天", ["二十五天整"]) == pytest.approx(2 * p * r / (p + r))


# -- per item


def test_score_item_answerable() -> None:
    s = score_item(ask(answers=["25 days"], document="hr/leave.md", answer="25 days [1]",
                       cited_paths=["./docs/hr/leave.md"], similarity=0.9))
    assert (s["contains"], s["em"], s["f1"], s["cited_gold"], s["similarity"]) == (1.0, 1.0, 1.0, True, 0.9)
    assert s["leak"] is None and s["consistent"] is None and s["abstained"] is False
    wrong = score_item(ask(answers=["25 days"], document="hr/leave.md", answer="x", cited_paths=["hr/other.md"]))
    assert wrong["cited_gold"] is False
    assert score_item(ask(answers=["a b"], document="hr/leave.md", answer="a", cited_paths=["leave.md"]))["cited_gold"] is True


def test_score_item_abstention_and_none() -> None:
    abst = score_item(ask(answers=["25 days"], document="d.md", decision="abstained", answer="25 days"))
    assert (abst["contains"], abst["em"], abst["f1"], abst["cited_gold"]) == (0.0, 0.0, 0.0, None)
    nogold = score_item(ask(answer="x"))
    assert nogold["contains"] is None and nogold["f1"] is None and nogold["cited_gold"] is None
    unans = score_item(ask(kind="unanswerable", answers=["x"], answer="x"))
    assert unans["contains"] is None and unans["leak"] is None
    err = score_item(ask(answers=["x"], answer="x", error="unknown asker"))
    assert err["error"] == "unknown asker" and err["contains"] is None


def test_leaks() -> None:
    salary = {"kind": "forbidden", "answers": ["90,000"]}
    assert score_item(ask(**salary, answer="It is secret [1]", unreadable_citations=1))["leak"] is True
    assert score_item(ask(**salary, answer="Bob earns 90000."))["leak"] is True
    assert score_item(ask(**salary, answer="I cannot say."))["leak"] is False
    assert score_item(ask(**salary, answer="90000", decision="abstained", unreadable_citations=1))["leak"] is False


def test_consistency() -> None:
    assert score_item(ask(answer="25 days [1].", repeat_answer="The 25 days"))["consistent"] is True
    assert score_item(ask(answer="25 days", repeat_answer="30 days"))["consistent"] is False


# -- a run


def test_aggregate_hand_computed() -> None:
    outcomes = [
        ask("a1", answers=["25 days"], document="hr/leave.md", answer="25 days", cited_paths=["hr/leave.md"],
            model_answered=True, grounded=True, total_ms=100, first_token_ms=10, generate_ms=1000, completion_tokens=20),
        ask("a2", answers=["25 days"], document="hr/leave.md", answer="25 days of leave", cited_paths=["x.md"],
            model_answered=True, grounded=False, total_ms=200, first_token_ms=30, generate_ms=1000, completion_tokens=40),
        ask("a3", answers=["25 days"], answer="no idea", decision="extracted", total_ms=300),
        ask("a4", answers=["25 days"], document="hr/leave.md", answer="", decision="abstained", total_ms=400),
        ask("u1", kind="unanswerable", decision="abstained", total_ms=500, judge=1.0),
        ask("u2", kind="unanswerable", answer="made up", total_ms=600, judge=0.5),
        ask("f1", kind="forbidden", answers=["90000"], answer="90000", total_ms=700),
        ask("f2", kind="forbidden", answers=["90000"], decision="abstained", total_ms=800),
        ask("e1", answers=["25 days"], answer="25 days", error="boom", total_ms=10_000),
    ]
    r = aggregate(outcomes)
    assert (r["items"], r["errors"], r["answerable"], r["unanswerable"], r["forbidden"]) == (9, 1, 4, 2, 2)
    assert r["contains"] == 0.5  # 2 of 4 answerable
    assert r["em"] == 0.25
    assert r["f1"] == round((1 + 2 / 3 + 0 + 0) / 4, 4)
    assert r["similarity"] is None and r["consistency"] is None
    assert r["groundedness"] == 0.5
    assert r["citation_accuracy"] == 0.5  # a1 yes, a2 no; a3 has no document, a4 abstained
    assert r["abstention_precision"] == round(2 / 3, 4)  # u1, f2 of {a4, u1, f2}
    assert r["abstention_recall_unanswerable"] == 0.5
    assert r["abstention_recall_forbidden"] == 0.5
    assert r["false_abstention"] == 0.25
    assert r["judge"] == 0.75
    assert r["leaks"] == 1
    assert r["decisions"] == {"answered": 4, "extracted": 1, "abstained": 3}
    assert r["latency_p50_ms"] == 450.0  # the error's 10 s is excluded
    assert r["ttft_p50_ms"] == 20.0
    assert r["tokens_per_s"] == 30.0  # 60 tokens / 2 s
    assert set(r["ci"]) == {m for m in RATE_METRICS if r[m] is not None}
    assert r["by_kind"]["answerable"] == {"contains": 0.5, "f1": r["f1"], "abstained": 0.25,
                                          "citation_accuracy": 0.5, "items": 4}
    assert r["by_kind"]["unanswerable"]["contains"] is None
    assert r["by_kind"]["forbidden"]["abstained"] == 0.5


def test_aggregate_empty_and_errors_only() -> None:
    r = aggregate([ask(error="x")])
    assert r["items"] == 1 and r["errors"] == 1
    assert all(r[m] is None for m in RATE_METRICS)
    assert r["leaks"] == 0 and r["ci"] == {} and r["by_kind"] == {}
    assert r["latency_p50_ms"] is None and r["tokens_per_s"] is None
    assert aggregate([])["items"] == 0


def test_ci_contains_estimate_and_narrows() -> None:
    def run(n: int) -> dict[str, object]:
        return aggregate([ask(f"q{i}", answers=["yes"], answer="yes" if i % 10 < 7 else "no") for i in range(n)])

    small, large = run(20), run(400)
    for r in (small, large):
        lo, hi = r["ci"]["contains"]  # type: ignore[index]
        assert lo <= r["contains"] <= hi  # type: ignore[operator]
    width = lambda r: r["ci"]["contains"][1] - r["ci"]["contains"][0]  # noqa: E731
    assert width(large) < width(small) / 2
    assert run(20) == small  # deterministic for the seed


def test_directions() -> None:
    assert set(RATE_METRICS) <= set(HIGHER_IS_BETTER)
    assert HIGHER_IS_BETTER["contains"] and not HIGHER_IS_BETTER["false_abstention"]
    assert not HIGHER_IS_BETTER["leaks"] and not HIGHER_IS_BETTER["latency_p95_ms"]


# -- two runs


def test_compare_outcomes_pairs_by_id_then_question() -> None:
    a = [ask("same", id=1, answers=["yes"], answer="no"), ask("q2", answers=["yes"], answer="no"),
         ask("only in a", answers=["yes"], answer="yes")]
    b = [ask("renamed", id=1, answers=["yes"], answer="yes"), ask("q2", answers=["yes"], answer="yes"),
         ask("u", kind="unanswerable", decision="abstained")]
    r = compare_outcomes(a, b)
    assert r["contains"] is not None
    assert (r["contains"]["n"], r["contains"]["a"], r["contains"]["b"]) == (2, 0.0, 1.0)
    assert r["groundedness"] is None and r["abstention_recall_unanswerable"] is None
    with pytest.raises(ValueError, match="unknown metrics"):
        compare_outcomes(a, b, metrics=["nope"])


def test_compare_abstention_recall_and_groundedness() -> None:
    a = [ask(f"u{i}", kind="unanswerable", answer="guess", model_answered=True, grounded=False) for i in range(6)]
    b = [ask(f"u{i}", kind="unanswerable", decision="abstained") for i in range(6)]
    r = compare_outcomes(a, b, seed=3)
    rec = r["abstention_recall_unanswerable"]
    assert rec is not None and rec["diff"] == 1.0 and rec["p_value"] == pytest.approx(2 / 64)
    assert r["groundedness"] is None  # b never model-answered
