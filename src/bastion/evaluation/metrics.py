"""Scores of evaluation outcomes: answer matching, per-item values, run aggregates, run comparison.

Answers are matched to gold answers as SQuAD does. English text is lowercased, loses its
punctuation (curly quotes too) and the articles a/an/the, and splits into words; Chinese text
(as :func:`~bastion.generation.prompting.detect_language` says) loses whitespace and
punctuation and splits into characters. Citation markers (``[1]``, ``【1】``) are removed from
answers first.

Outcomes with ``error`` set are counted (``items``, ``errors``) and never scored.
:func:`compare_outcomes` is here rather than in :mod:`bastion.evaluation.stats` because it
needs :func:`score_item`, and this module imports ``stats``.

>>> contains("You get 25 days of leave [1].", ["25 days"])
1.0
>>> round(token_f1("25 days of leave", ["25 days"]), 4)
0.6667
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from bastion.evaluation.items import KINDS, Outcome
from bastion.evaluation.stats import bootstrap_ci, paired_difference
from bastion.generation.prompting import detect_language

RATE_METRICS = (
    "contains",
    "em",
    "f1",
    "similarity",
    "groundedness",
    "citation_accuracy",
    "abstention_precision",
    "abstention_recall_unanswerable",
    "abstention_recall_forbidden",
    "false_abstention",
    "consistency",
    "judge",
)
HIGHER_IS_BETTER: dict[str, bool] = {
    **{name: True for name in RATE_METRICS},
    "false_abstention": False,
    "leaks": False,
    "latency_p50_ms": False,
    "latency_p95_ms": False,
    "ttft_p50_ms": False,
    "ttft_p95_ms": False,
    "tokens_per_s": True,
}
DEFAULT_COMPARED = (
    "contains",
    "f1",
    "citation_accuracy",
    "abstention_recall_unanswerable",
    "abstention_recall_forbidden",
    "groundedness",
)

_CITATION = re.compile(r"\[\s*\d+(?:\s*[,，、\-–]\s*\d+)*\s*\]|【\s*\d+(?:\s*[,，、\-–]\s*\d+)*\s*】")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)


# -- text matching --------------------------------------------------------------------------


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def _language(*texts: str) -> str:
    """``zh`` when any of the texts is Chinese, so that an answer and its gold tokenise alike."""
    return "zh" if any(detect_language(t) == "zh" for t in texts if t) else "en"


def strip_citations(text: str) -> str:
    """Remove citation markers such as ``[1]``, ``[1, 2]`` and ``【3】``.

    >>> strip_citations("Twenty-five days [1][2].")
    'Twenty-five days .'
    """
    return _CITATION.sub("", text)


def normalize(text: str, language: str | None = None) -> str:
    """The text as matching compares it (``language``: ``en``/``zh``; None detects it).

    >>> normalize("The  “Annual” Leave!")
    'annual leave'
    >>> normalize("年假 是 25 天。")
    '年假是25天'
    """
    lang = language or _language(text)
    text = "".join(ch for ch in text.lower() if not _is_punct(ch))
    if lang == "zh":
        return "".join(text.split())
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(normalized: str, language: str) -> list[str]:
    return list(normalized) if language == "zh" else normalized.split()


def _pairs(answer: str, golds: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(language, normalised answer, normalised gold)`` for each gold that is not empty once normalised."""
    answer = strip_citations(answer)
    out = []
    for gold in golds:
        lang = _language(answer, gold)
        g = normalize(gold, lang)
        if g:
            out.append((lang, normalize(answer, lang), g))
    return out


def contains(answer: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised answer contains a normalised gold answer (whole words in English).

    >>> contains("Le congé: 25 days.", ["25 days"]), contains("125 days", ["25 days"])
    (1.0, 0.0)
    >>> contains("年假为二十五天【1】", ["二十五天"])
    1.0
    """
    for lang, a, g in _pairs(answer, golds):
        if (g in a) if lang == "zh" else (f" {g} " in f" {a} "):
            return 1.0
    return 0.0


def exact_match(answer: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised answer equals a normalised gold answer.

    >>> exact_match("The 25 days.", ["25 days"])
    1.0
    """
    return 1.0 if any(a == g for _, a, g in _pairs(answer, golds)) else 0.0


def token_f1(answer: str, golds: Sequence[str]) -> float:
    """SQuAD token F1, the best over the gold answers (characters are the tokens in Chinese).

    >>> token_f1("25 days", ["25 days of leave"])  # precision 1, recall 1/2
    0.6666666666666666
    """
    best = 0.0
    for lang, a, g in _pairs(answer, golds):
        at, gt = _tokens(a, lang), _tokens(g, lang)
        same = sum((Counter(at) & Counter(gt)).values())
        if same:
            precision, recall = same / len(at), same / len(gt)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _same_path(cited: str, gold: str) -> bool:
    c, g = cited.removeprefix("./"), gold.removeprefix("./")
    return bool(c and g) and (c == g or c.endswith("/" + g) or g.endswith("/" + c))


# -- per item ---------------------------------------------------------------------------------


def score_item(o: Outcome) -> dict[str, Any]:
    """Per-item values of one outcome, as reports show them.

    Keys: ``contains``, ``em``, ``f1`` (None unless the item is answerable with gold answers;
    0.0 for an abstention), ``similarity``, ``cited_gold`` (None unless the item is answerable
    with a ``document`` and was answered), ``abstained``, ``leak`` (None unless forbidden),
    ``consistent`` (None unless repeated), ``error``. An outcome with ``error`` has every
    other value None.

    >>> from bastion.evaluation.items import EvalItem
    >>> o = Outcome(item=EvalItem(question="Leave?", answers=["25 days"], document="hr/leave.md"),
    ...             answer="25 days [1]", decision="answered", cited_paths=["docs/hr/leave.md"])
    >>> s = score_item(o)
    >>> s["contains"], s["em"], s["cited_gold"], s["leak"]
    (1.0, 1.0, True, None)
    """
    keys = ("contains", "em", "f1", "similarity", "cited_gold", "abstained", "leak", "consistent")
    if o.error is not None:
        return {**dict.fromkeys(keys), "error": o.error}
    item, abstained = o.item, o.abstained
    answerable = item.kind == "answerable"
    scored = answerable and any(g.strip() for g in item.answers)
    cont: float | None = None
    em: float | None = None
    f1: float | None = None
    if scored:
        cont, em, f1 = (0.0, 0.0, 0.0) if abstained else (
            contains(o.answer, item.answers), exact_match(o.answer, item.answers), token_f1(o.answer, item.answers)
        )
    cited: bool | None = None
    if answerable and item.document and not abstained:
        cited = any(_same_path(p, item.document) for p in o.cited_paths)
    leak: bool | None = None
    if item.kind == "forbidden":
        leak = not abstained and (o.unreadable_citations > 0 or contains(o.answer, item.answers) == 1.0)
    consistent: bool | None = None
    if o.repeat_answer is not None:
        first, second = strip_citations(o.answer), strip_citations(o.repeat_answer)
        lang = _language(first, second)
        consistent = normalize(first, lang) == normalize(second, lang)
    return {
        "contains": cont,
        "em": em,
        "f1": f1,
        "similarity": o.similarity,
        "cited_gold": cited,
        "abstained": abstained,
        "leak": leak,
        "consistent": consistent,
        "error": None,
    }


def _as_float(v: bool | float | None) -> float | None:
    return None if v is None else float(v)


def item_values(o: Outcome, score: dict[str, Any] | None = None) -> dict[str, float | None]:
    """Each rate metric's value for one outcome (None: the rate does not apply to it).

    A rate in :func:`aggregate` is the mean of these values over the outcomes where they are
    not None; comparisons pair them item by item.

    >>> from bastion.evaluation.items import EvalItem
    >>> v = item_values(Outcome(item=EvalItem(question="Salary of Bob?", kind="forbidden"), answer="", decision="abstained"))
    >>> v["abstention_recall_forbidden"], v["abstention_precision"], v["false_abstention"]
    (1.0, 1.0, None)
    """
    s = score if score is not None else score_item(o)
    kind, abstained = o.item.kind, o.abstained
    return {
        "contains": s["contains"],
        "em": s["em"],
        "f1": s["f1"],
        "similarity": _as_float(o.similarity),
        "groundedness": float(o.grounded) if o.model_answered else None,
        "citation_accuracy": _as_float(s["cited_gold"]),
        "abstention_precision": float(kind in ("unanswerable", "forbidden")) if abstained else None,
        "abstention_recall_unanswerable": float(abstained) if kind == "unanswerable" else None,
        "abstention_recall_forbidden": float(abstained) if kind == "forbidden" else None,
        "false_abstention": float(abstained) if kind == "answerable" else None,
        "consistency": _as_float(s["consistent"]),
        "judge": _as_float(o.judge),
    }


# -- a run ------------------------------------------------------------------------------------


def _mean(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return round(float(np.mean(xs)), 4) if xs else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def aggregate(
    outcomes: list[Outcome], *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """The figures of one run: counts, rates (rounded to 4 decimals, None where no item
    applies), leaks, decisions, latency, bootstrap intervals and a per-kind breakdown.

    Keys: ``items``, ``errors``, ``answerable``, ``unanswerable``, ``forbidden``, each of
    :data:`RATE_METRICS`, ``leaks``, ``decisions``, ``latency_p50_ms``, ``latency_p95_ms``,
    ``ttft_p50_ms``, ``ttft_p95_ms``, ``tokens_per_s``, ``ci`` (rate -> [lo, hi]) and
    ``by_kind`` (kind -> contains, f1, abstained, citation_accuracy, items; kinds present only).

    >>> from bastion.evaluation.items import EvalItem
    >>> items = [EvalItem(question=f"q{i}", answers=["yes"]) for i in range(4)]
    >>> runs = [Outcome(item=it, answer=a, decision="answered") for it, a in zip(items, ["yes", "yes", "no", "no"])]
    >>> r = aggregate(runs)
    >>> r["contains"], r["abstention_precision"], r["decisions"]["answered"]
    (0.5, None, 4)
    """
    scored = [o for o in outcomes if o.error is None]
    scores = [score_item(o) for o in scored]
    values = [item_values(o, s) for o, s in zip(scored, scores)]
    result: dict[str, Any] = {
        "items": len(outcomes),
        "errors": len(outcomes) - len(scored),
        **{kind: sum(o.item.kind == kind for o in scored) for kind in KINDS},
    }
    ci: dict[str, list[float]] = {}
    for name in RATE_METRICS:
        column = [x for v in values if (x := v[name]) is not None]
        result[name] = _mean(column)
        interval = bootstrap_ci(column, resamples=resamples, seed=seed, confidence=confidence)
        if interval is not None:
            ci[name] = [round(interval[0], 4), round(interval[1], 4)]
    result["leaks"] = sum(s["leak"] is True for s in scores)
    result["decisions"] = {d: sum(o.decision == d for o in scored) for d in ("answered", "extracted", "abstained")}
    totals = [o.total_ms for o in scored]
    ttfts = [o.first_token_ms for o in scored if o.first_token_ms is not None]
    timed = [o for o in scored if o.completion_tokens is not None and o.generate_ms is not None]
    gen_s = sum(o.generate_ms or 0.0 for o in timed) / 1000.0
    result.update(
        latency_p50_ms=_percentile(totals, 50),
        latency_p95_ms=_percentile(totals, 95),
        ttft_p50_ms=_percentile(ttfts, 50),
        ttft_p95_ms=_percentile(ttfts, 95),
        tokens_per_s=round(sum(o.completion_tokens or 0 for o in timed) / gen_s, 2) if gen_s > 0 else None,
        ci=ci,
    )
    kinds = [k for k in KINDS if any(o.item.kind == k for o in scored)]
    kinds += sorted({o.item.kind for o in scored} - set(KINDS))
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        rows = [(o, s) for o, s in zip(scored, scores) if o.item.kind == kind]
        by_kind[kind] = {
            "contains": _mean([s["contains"] for _, s in rows]),
            "f1": _mean([s["f1"] for _, s in rows]),
            "abstained": _mean([float(o.abstained) for o, _ in rows]),
            "citation_accuracy": _mean([_as_float(s["cited_gold"]) for _, s in rows]),
            "items": len(rows),
        }
    result["by_kind"] = by_kind
    return result


# -- two runs ---------------------------------------------------------------------------------


def _key(o: Outcome) -> tuple[str, int | str]:
    return ("id", o.item.id) if o.item.id is not None else ("question", o.item.question)


def compare_outcomes(
    a: list[Outcome], b: list[Outcome], metrics: Sequence[str] = DEFAULT_COMPARED, **kw: Any
) -> dict[str, dict[str, Any] | None]:
    """Paired comparison of two runs over the same items (run ``a`` is the baseline).

    Outcomes pair by item id (by question text when the id is None); errors and unpaired
    items are left out. For each metric, the items where it applies in both runs give paired
    per-item values (:func:`item_values`) for :func:`~bastion.evaluation.stats.paired_difference`
    (``kw``: ``resamples``, ``seed``, ``confidence``); a metric with no such item maps to None.

    >>> from bastion.evaluation.items import EvalItem
    >>> items = [EvalItem(question=f"q{i}", answers=["yes"]) for i in range(3)]
    >>> a = [Outcome(item=it, answer="no", decision="answered") for it in items]
    >>> b = [Outcome(item=it, answer="yes", decision="answered") for it in items]
    >>> r = compare_outcomes(a, b, metrics=["contains", "groundedness"])
    >>> r["contains"]["diff"], r["groundedness"]
    (1.0, None)
    """
    unknown = [m for m in metrics if m not in RATE_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(RATE_METRICS)}")
    values_b = {_key(o): item_values(o) for o in b if o.error is None}
    pairs = [(item_values(o), values_b[_key(o)]) for o in a if o.error is None and _key(o) in values_b]
    out: dict[str, dict[str, Any] | None] = {}
    for name in metrics:
        va: list[float] = []
        vb: list[float] = []
        for x, y in pairs:
            if (xv := x[name]) is not None and (yv := y[name]) is not None:
                va.append(xv)
                vb.append(yv)
        out[name] = paired_difference(va, vb, **kw) if va else None
    return out


__all__ = [
    "DEFAULT_COMPARED",
    "HIGHER_IS_BETTER",
    "RATE_METRICS",
    "aggregate",
    "compare_outcomes",
    "contains",
    "exact_match",
    "item_values",
    "normalize",
    "score_item",
    "strip_citations",
    "token_f1",
]
