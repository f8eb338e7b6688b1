"""``bastion eval report``: one self-contained HTML page (inline CSS and SVG, no scripts, no
external files) for one or more evaluation runs: the metrics of each run × configuration, the
quality/latency, per-kind and decision plots, the comparison of two configurations, and the worst
items of each configuration. Questions, answers and quotes are untrusted text: the template
escapes everything, and the SVG helpers (:mod:`bastion.evaluation.report_svg`) escape their labels.

Runs are the runner's ``to_dict()``; any metric may be null (shown as "–") and any key may be
missing (older runs), so every read here has a default.

>>> run = {"run_id": "r1", "set": {"name": "hr-faq", "version": 2},
...        "configs": [{"name": "current", "metrics": {"f1": 0.41, "leaks": 0}}]}
>>> page = build_report([run])
>>> page.startswith("<!doctype html>") and "hr-faq" in page and "0.41" in page
True
"""
from __future__ import annotations

from typing import Any

from jinja2 import Environment

from bastion.catalog.models import utc_iso, utcnow
from bastion.evaluation.items import KINDS
from bastion.evaluation.metrics import HIGHER_IS_BETTER
from bastion.evaluation.report_svg import grouped_bars, scatter, stacked_bars

DASH = "–"
QUALITY = (  # (column, metric key, format)
    ("items", "items", "int"), ("errors", "errors", "int"), ("contains", "contains", "share"), ("EM", "em", "share"),
    ("F1", "f1", "share"), ("similarity", "similarity", "share"), ("grounded", "groundedness", "share"),
    ("citation accuracy", "citation_accuracy", "share"), ("abstention precision", "abstention_precision", "share"),
    ("abstention recall (unanswerable)", "abstention_recall_unanswerable", "share"),
    ("abstention recall (forbidden)", "abstention_recall_forbidden", "share"),
    ("false abstention", "false_abstention", "share"), ("consistency", "consistency", "share"),
    ("judge", "judge", "share"), ("leaks", "leaks", "int"),
)
COST = (
    ("latency p50 (ms)", "latency_p50_ms", "ms"), ("latency p95 (ms)", "latency_p95_ms", "ms"),
    ("first token p50 (ms)", "ttft_p50_ms", "ms"), ("first token p95 (ms)", "ttft_p95_ms", "ms"),
    ("tokens/s", "tokens_per_s", "num"), ("peak RSS (MB)", "peak_rss_mb", "ms"),
    ("CPU s per 1000 questions", "cpu_s_per_1000", "ms"), ("wall time (s)", "seconds", "num"),
)
LOWER_IS_BETTER = {"errors", "peak_rss_mb", "cpu_s_per_1000", "seconds"} | {
    k for k, up in HIGHER_IS_BETTER.items() if not up}
COLUMNS = {key: (name, kind) for name, key, kind in QUALITY + COST}
DECISIONS = ("answered", "extracted", "abstained")
DECISION_COLORS = {"answered": "#2563eb", "extracted": "#0891b2", "abstained": "#9ca3af"}
WORST = 10


def fmt(v: Any, kind: str = "share") -> str:
    """A metric for a table cell: "–" when missing; shares with 2 decimals, times as whole numbers.

    >>> fmt(None), fmt(0.5), fmt(2100.0, "ms"), fmt(3, "int"), fmt("n/a")
    ('–', '0.50', '2,100', '3', 'n/a')
    """
    if v is None:
        return DASH
    if not isinstance(v, int | float):
        return str(v)
    return {"int": f"{v:,.0f}", "ms": f"{v:,.0f}", "num": f"{v:,.1f}"}.get(kind, f"{v:.2f}")


def _ci(metrics: dict[str, Any], key: str) -> str:
    ci = (metrics.get("ci") or {}).get(key)
    if not ci or len(ci) != 2 or None in ci:
        return ""
    return f" ({fmt(ci[0])}{DASH}{fmt(ci[1])})"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _configs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per run × configuration, labelled by the config name (plus the run when several)."""
    several = len(runs) > 1
    out = []
    for run in runs:
        rid = str(run.get("run_id") or "?")
        for cfg in run.get("configs") or []:
            name = str(cfg.get("name") or "?")
            out.append({"label": f"{name} @ {rid[:8]}" if several else name, "run": run, "config": cfg,
                        "metrics": cfg.get("metrics") or {}, "items": cfg.get("items") or []})
    return out


def _row(c: dict[str, Any], columns: tuple[tuple[str, str, str], ...]) -> list[dict[str, str]]:
    m = c["metrics"]
    cells = []
    for _, key, kind in columns:
        v = m.get(key)
        leak = key == "leaks" and (_num(v) or 0) > 0
        cells.append({"text": fmt(v, kind) + _ci(m, key), "cls": "leak" if leak else ""})
    return cells


def _spec(spec: dict[str, Any] | None) -> str:
    return " · ".join(f"{k}={v}" for k, v in (spec or {}).items()) or DASH


def _plots(configs: list[dict[str, Any]]) -> dict[str, str]:
    def quality(m: dict[str, Any]) -> float | None:
        return _num(m.get("f1")) if m.get("f1") is not None else _num(m.get("contains"))

    points = [(c["label"], _num(c["metrics"].get("latency_p95_ms")), quality(c["metrics"])) for c in configs]
    by_kind = {c["label"]: c["metrics"].get("by_kind") or {} for c in configs}
    kinds = [k for k in KINDS if any(k in bk for bk in by_kind.values())]
    kinds += sorted({k for bk in by_kind.values() for k in bk} - set(kinds))
    values = {(f"{kind}: {measure}", label): _num((bk.get(kind) or {}).get(measure))
              for kind in kinds for measure in ("contains", "abstained") for label, bk in by_kind.items()}
    groups = [g for g in dict.fromkeys(g for g, _ in values) if any(values[(g, label)] is not None for label in by_kind)]
    decisions = [(c["label"], {str(k): int(v) for k, v in (c["metrics"].get("decisions") or {}).items()
                               if _num(v) is not None}) for c in configs]
    keys = list(DECISIONS) + sorted({k for _, d in decisions for k in d} - set(DECISIONS))
    return {"scatter": scatter(points, x_label="latency p95 (ms)", y_label="F1 (contains where F1 is missing)"),
            "kinds": grouped_bars(groups, [c["label"] for c in configs], values, y_label="share of items"),
            "decisions": stacked_bars(decisions, keys, colors=DECISION_COLORS)}


def _verdict(key: str, row: dict[str, Any] | None, against: str) -> tuple[str, str]:
    if not row:
        return "not compared: no item has this metric in both", "none"
    diff = _num(row.get("diff"))
    if not row.get("significant") or not diff:
        return "not distinguishable", "none"
    better = (diff < 0) if key in LOWER_IS_BETTER else (diff > 0)
    return (f"{against} better", "ok") if better else (f"{against} worse", "hard")


def _comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for run in runs:
        comp = run.get("comparison")
        if not comp:
            continue
        base, against = str(comp.get("baseline") or "baseline"), str(comp.get("against") or "candidate")
        rows = []
        for key, r in (comp.get("metrics") or {}).items():
            verdict, cls = _verdict(key, r, against)
            r = r or {}
            ci, (name, kind) = r.get("ci") or [], COLUMNS.get(key, (key, "share"))
            rows.append({"metric": name, "a": fmt(r.get("a"), kind), "b": fmt(r.get("b"), kind),
                         "diff": fmt(r.get("diff"), kind),
                         "ci": f"{fmt(ci[0], kind)} to {fmt(ci[1], kind)}" if len(ci) == 2 else DASH,
                         "p": fmt(r.get("p_value")), "n": fmt(r.get("n"), "int"), "verdict": verdict, "cls": cls})
        out.append({"run_id": run.get("run_id"), "baseline": base, "against": against, "rows": rows})
    return out


def badness(outcome: dict[str, Any]) -> tuple[int, float, float, float]:
    """Sort key, worst first: leaks and errors, then the lowest F1, then contains, then a wrong abstention.

    >>> sorted([{"scores": {"f1": 0.2}}, {"scores": {"f1": 0.9, "leak": True}}], key=badness)[0]["scores"]["f1"]
    0.9
    """
    s = outcome.get("scores") or {}
    flagged = bool(s.get("leak")) or bool(s.get("error") or outcome.get("error"))
    f1, contains, abstained = _num(s.get("f1")), _num(s.get("contains")), s.get("abstained")
    kind = (outcome.get("item") or {}).get("kind", "answerable")
    right = None if abstained is None else float(bool(abstained) == (kind != "answerable"))
    return (0 if flagged else 1, 2.0 if f1 is None else f1, 2.0 if contains is None else contains,
            2.0 if right is None else right)


def _worst(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in configs:
        items = []
        for o in sorted((o for o in c["items"] if isinstance(o, dict)), key=badness)[:WORST]:
            item, s = o.get("item") or {}, o.get("scores") or {}
            items.append({"question": item.get("question", ""), "kind": item.get("kind", ""),
                          "answers": item.get("answers") or [], "document": item.get("document"),
                          "sentence": item.get("sentence"), "asker": item.get("asker"),
                          "answer": o.get("answer", ""), "decision": o.get("decision") or DASH,
                          "reason": o.get("reason"), "cited": o.get("cited_paths") or [],
                          "quotes": o.get("quotes") or [], "error": s.get("error") or o.get("error"),
                          "leak": s.get("leak"), "f1": fmt(s.get("f1")), "contains": fmt(s.get("contains"))})
        out.append({"label": c["label"], "items": items})
    return out


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#111;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;white-space:nowrap}.leak{background:#fee2e2;color:#b91c1c;font-weight:700}
.hard{color:#b91c1c;font-weight:600}.ok{color:#15803d;font-weight:600}.none{color:#777}
.chart{max-width:760px;font-family:system-ui,sans-serif}.item{border:1px solid #e5e5e5;border-radius:6px;padding:8px;margin:8px 0}
.item.flag{border-color:#dc2626}.item p{margin:3px 0}.q{font-weight:600}blockquote{margin:4px 0 4px 12px;padding-left:8px;border-left:3px solid #ddd;color:#444}
code{background:#f4f4f5;padding:0 3px}.answer{white-space:pre-wrap}.wide{overflow-x:auto}
</style></head><body>
<h1>{{ title }}</h1>
<p>Set {% for s in sets %}<b>{{ s.name }}</b> v{{ s.version }}{% if s.get('items') is not none %} ({{ s.get('items') }} items){% endif %}{% if not loop.last %}, {% endif %}{% else %}–{% endfor %}
 · {{ runs|length }} run(s) · {{ first or "–" }} to {{ last or "–" }} · generated {{ generated }}</p>
{% if leaks %}<p class="leak">{{ leaks }} leak(s): answers that cited or contained text the asker may not read.</p>{% endif %}
<table><tr><th>run</th><th>set</th><th>started</th><th>finished</th><th>trigger</th><th>status</th></tr>
{% for r in runs %}<tr><td><code>{{ r.run_id or "–" }}</code></td><td>{{ (r.set or {}).name or "–" }} v{{ (r.set or {}).version or "–" }}</td>
<td>{{ r.started_at or "–" }}</td><td>{{ r.finished_at or "–" }}</td><td>{{ r.trigger or "–" }}</td>
<td{% if r.status == "failed" or r.error %} class="hard"{% endif %}>{{ r.status or "–" }}{% if r.error %}: {{ r.error }}{% endif %}</td></tr>{% endfor %}</table>
{% if not configs %}<p class="none">No configurations were evaluated.</p>{% else %}
<h2>Configurations</h2>
<table><tr><th>configuration</th><th>spec</th></tr>{% for c in configs %}<tr><td>{{ c.label }}</td><td>{{ c.spec }}</td></tr>{% endfor %}</table>
{% for heading, columns, key in (("Quality", quality, "quality_cells"), ("Cost", cost, "cost_cells")) %}
<h2>{{ heading }}</h2>
<div class="wide"><table><tr><th>configuration</th>{% for col in columns %}<th>{{ col[0] }}</th>{% endfor %}</tr>
{% for c in configs %}<tr><td>{{ c.label }}</td>{% for cell in c[key] %}<td class="n {{ cell.cls }}">{{ cell.text }}</td>{% endfor %}</tr>{% endfor %}</table></div>
{% endfor %}
<h2>Quality against latency</h2>{{ plots.scatter|safe }}
<h2>By kind of question</h2>{{ plots.kinds|safe }}
<h2>Decisions</h2>{{ plots.decisions|safe }}{% endif %}
{% for comp in comparisons %}
<h2>Comparison: {{ comp.against }} against {{ comp.baseline }}{% if runs|length > 1 %} (run {{ comp.run_id }}){% endif %}</h2>
<table><tr><th>metric</th><th>{{ comp.baseline }}</th><th>{{ comp.against }}</th><th>difference</th><th>95% interval</th><th>p</th><th>n</th><th>verdict</th></tr>
{% for r in comp.rows %}<tr><td>{{ r.metric }}</td><td class="n">{{ r.a }}</td><td class="n">{{ r.b }}</td><td class="n">{{ r.diff }}</td>
<td class="n">{{ r.ci }}</td><td class="n">{{ r.p }}</td><td class="n">{{ r.n }}</td><td class="{{ r.cls }}">{{ r.verdict }}</td></tr>{% endfor %}</table>
{% endfor %}
{% for w in worst %}{% if w['items'] %}
<h2>Worst items — {{ w.label }}</h2>
{% for i in w['items'] %}<div class="item{% if i.leak or i.error %} flag{% endif %}">
<p class="q">{{ loop.index }}. {{ i.question }}</p>
<p>{{ i.kind }}{% if i.asker %} · asked as {{ i.asker }}{% endif %} · F1 {{ i.f1 }} · contains {{ i.contains }}
{% if i.leak %} · <span class="leak">leak{% if i.leak is string %}: {{ i.leak }}{% endif %}</span>{% endif %}
{% if i.error %} · <span class="hard">error: {{ i.error }}</span>{% endif %}</p>
<p>Expected: {% for a in i.answers %}<code>{{ a }}</code>{% if not loop.last %}, {% endif %}{% else %}–{% endfor %}
 · gold document {% if i.document %}<code>{{ i.document }}</code>{% else %}–{% endif %}</p>
{% if i.sentence %}<blockquote>{{ i.sentence }}</blockquote>{% endif %}
<p>Decision <b>{{ i.decision }}</b>{% if i.reason %} ({{ i.reason }}){% endif %}</p>
<div class="answer">{{ i.answer }}</div>
{% if i.cited or i.quotes %}<p>Cited: {% for p in i.cited %}<code>{{ p }}</code>{% if not loop.last %}, {% endif %}{% else %}–{% endfor %}</p>
{% for q in i.quotes %}<blockquote>{{ q }}</blockquote>{% endfor %}{% endif %}
</div>{% endfor %}{% endif %}{% endfor %}
</body></html>
"""


def build_report(runs: list[dict[str, Any]], *, title: str = "Bastion evaluation") -> str:
    """The HTML page for ``runs`` (the runner's ``to_dict()``), as a string."""
    configs = _configs(runs)
    for c in configs:
        c.update(spec=_spec(c["config"].get("spec")), quality_cells=_row(c, QUALITY), cost_cells=_row(c, COST))
    sets = list({(s.get("name"), s.get("version")): s for s in (r.get("set") or {} for r in runs) if s}.values())
    starts = sorted(str(r["started_at"]) for r in runs if r.get("started_at"))
    ends = sorted(str(r["finished_at"]) for r in runs if r.get("finished_at"))
    leaks = sum(int(_num(c["metrics"].get("leaks")) or 0) for c in configs)
    env = Environment(autoescape=True)
    return env.from_string(TEMPLATE).render(
        title=title, runs=runs, sets=sets, first=starts[0] if starts else None, last=ends[-1] if ends else None,
        generated=utc_iso(utcnow()), leaks=leaks, configs=configs, quality=QUALITY, cost=COST,
        plots=_plots(configs) if configs else {}, comparisons=_comparisons(runs), worst=_worst(configs))


__all__ = ["badness", "build_report", "fmt"]
