"""``bastion monitor report``: one self-contained HTML page (inline SVG plots, no scripts, no
external files) with each source's time series, open alerts and schema changes."""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from jinja2 import Environment

from bastion.catalog.models import utc_iso, utcnow

if TYPE_CHECKING:
    from bastion.monitoring.monitor import Monitor

SERIES = (  # (title, unit, how to read one run's metrics)
    ("Live documents", "", lambda m: (m.get("state") or {}).get("documents")),
    ("Live chunks", "", lambda m: (m.get("state") or {}).get("chunks")),
    ("Documents removed by the sync", "", lambda m: (m.get("delta") or {}).get("removed")),
    ("Hours since the previous successful sync", "h",
     lambda m: _hours((m.get("freshness") or {}).get("since_previous_sync_s"))),
    ("Newest change in the source, age at sync (h)", "h",
     lambda m: _hours((m.get("freshness") or {}).get("newest_change_age_s"))),
    ("Parse failures (share of documents)", "%", lambda m: _pct((m.get("state") or {}).get("failed_ratio"))),
    ("Garbled chunks (share of live)", "%", lambda m: _pct((m.get("state") or {}).get("garbled_ratio"))),
    ("Empty documents (share of live)", "%", lambda m: _pct((m.get("state") or {}).get("empty_ratio"))),
    ("Duplicate new chunks (share)", "%", lambda m: _pct((m.get("delta") or {}).get("duplicate_ratio"))),
)


def _hours(s: float | None) -> float | None:
    return None if s is None else round(s / 3600, 2)


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def sparkline(points: list[tuple[str, float | None]], unit: str = "", width: int = 320, height: int = 70) -> str:
    """An inline SVG line chart of (label, value) points; gaps where a value is missing."""
    vals = [v for _, v in points if v is not None]
    if not vals:
        return '<p class="none">no data yet</p>'
    lo, hi = min(vals), max(vals)
    lo = min(lo, 0)
    span = (hi - lo) or 1
    n = len(points)
    pad = 6

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)
        return round(x, 1), round(height - pad - (height - 2 * pad) * (v - lo) / span, 1)

    segs: list[list[tuple[float, float]]] = []
    cur: list[tuple[float, float]] = []
    for i, (_, v) in enumerate(points):
        if v is None:
            if cur:
                segs.append(cur)
            cur = []
        else:
            cur.append(xy(i, v))
    if cur:
        segs.append(cur)
    lines = "".join(f'<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{" ".join(f"{x},{y}" for x, y in s)}"/>'
                    for s in segs)
    dots = "".join(f'<circle cx="{x}" cy="{y}" r="2.5" fill="#2563eb"><title>{escape(label)}: {v:g}{unit}</title></circle>'
                   for i, (label, v) in enumerate(points) if v is not None for x, y in [xy(i, v)])
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 14}" width="100%" role="img">'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#ccc"/>{lines}{dots}'
            f'<text x="{pad}" y="{height + 11}" font-size="10" fill="#555">min {min(vals):g}{unit} · max {hi:g}{unit} · '
            f'last {vals[-1]:g}{unit}</text></svg>')


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bastion data health — {{ workspace }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#111;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.card{border:1px solid #e5e5e5;border-radius:6px;padding:8px}.card h3{font-size:13px;margin:0 0 4px}
.hard{color:#b91c1c;font-weight:600}.warn{color:#b45309;font-weight:600}.ok{color:#15803d}.none{color:#777}
code{background:#f4f4f5;padding:0 3px}
</style></head><body>
<h1>Data health — {{ workspace }}</h1>
<p>Generated {{ generated }} · {{ alerts|length }} unresolved alert(s) · {{ sources|length }} source(s)</p>
<h2>Unresolved alerts</h2>
{% if alerts %}<table><tr><th>#</th><th>source</th><th>kind</th><th>severity</th><th>status</th><th>opened</th><th>message</th></tr>
{% for a in alerts %}<tr><td>{{ a.id }}</td><td>{{ a.source }}</td><td>{{ a.kind }}</td><td class="{{ a.severity }}">{{ a.severity }}</td>
<td>{{ a.status }}</td><td>{{ a.opened_at }}</td><td>{{ a.message }}</td></tr>{% endfor %}</table>
{% else %}<p class="ok">No open alerts.</p>{% endif %}
{% for s in sources %}
<h2>{{ s.name }}</h2>
<p>Last sync: {{ s.last_status or "never" }} {{ s.last_at or "" }} · live documents {{ s.documents }} · chunks by language: {{ s.languages }}</p>
{% if s.schema_changes %}<h3>Schema changes</h3><table><tr><th>object</th><th>status</th><th>removed</th><th>added</th><th>when</th></tr>
{% for c in s.schema_changes %}<tr><td>{{ c.detail.object }}</td><td>{{ c.status }}</td><td>{{ c.detail.removed|join(", ") }}</td>
<td>{{ c.detail.added|join(", ") }}</td><td>{{ c.opened_at }}</td></tr>{% endfor %}</table>{% endif %}
<div class="grid">{% for title, svg in s.charts %}<div class="card"><h3>{{ title }}</h3>{{ svg|safe }}</div>{% endfor %}</div>
{% endfor %}
</body></html>
"""


def build_report(monitor: Monitor, source_names: list[str], workspace: str, runs: int = 60) -> str:
    alerts = monitor.alerts()
    sources = []
    for name in source_names:
        history = list(reversed(monitor.history(name, limit=runs)))
        charts = [(title, sparkline([(f"run {h['run_id']} {h['started_at']}", get(h["metrics"])) for h in history], unit))
                  for title, unit, get in SERIES]
        last = history[-1] if history else None
        state: dict[str, Any] = next(((h["metrics"].get("state")) for h in reversed(history) if h["metrics"].get("state")), {}) or {}
        schema = [a for a in monitor.alerts(source=name, include_resolved=True) if a["kind"] == "schema"]
        sources.append({"name": name, "charts": charts, "last_status": last and last["status"],
                        "last_at": last and last["finished_at"], "documents": state.get("documents", 0),
                        "languages": " · ".join(f"{k} {v}" for k, v in sorted((state.get("languages") or {}).items(),
                                                                                     key=lambda kv: -kv[1])) or "-",
                        "schema_changes": schema})
    env = Environment(autoescape=True)
    return env.from_string(TEMPLATE).render(workspace=workspace, generated=utc_iso(utcnow()),
                                            alerts=alerts, sources=sources)
