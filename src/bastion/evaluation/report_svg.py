"""Small inline-SVG charts for the evaluation report: a labelled scatter, grouped bars and
stacked bars, with the axes, ticks and legends they share. No plotting library, no scripts;
every label is escaped here, so the caller may insert the result as markup.

>>> svg = scatter([("<a>", 120.0, 0.5)], x_label="p95 latency (ms)", y_label="F1")
>>> svg.startswith("<svg") and "&lt;a&gt;" in svg and "<a>" not in svg
True
"""
from __future__ import annotations

import math
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")
NONE = '<p class="none">no data</p>'


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(hi: float, n: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``hi``.

    >>> nice_ticks(2100.0)
    [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0]
    """
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [float(round(i * step, 10)) for i in range(math.ceil(hi / step - 1e-9) + 1)]


def _num(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.3g}"


def _svg(width: int, height: int, label: str, body: str) -> str:
    return (f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(label)}" '
            f'class="chart">{body}</svg>')


def _text(x: float, y: float, s: str, *, anchor: str = "start", size: int = 11, fill: str = "#333",
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}"{extra}>'
            f'{escape(s)}</text>')


def _y_axis(ticks: list[float], left: int, top: int, bottom: int, right: int, label: str,
            fmt: str = "num") -> str:
    """Horizontal grid lines with tick labels on the left and the axis title rotated beside them."""
    out = []
    hi = ticks[-1]
    for t in ticks:
        y = bottom - (bottom - top) * t / hi
        shown = f"{t * 100:.0f}%" if fmt == "pct" else _num(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(_text(left - 4, y + 4, shown, anchor="end", size=10, fill="#555"))
    mid = (top + bottom) / 2
    out.append(_text(12, mid, label, anchor="middle", fill="#555", extra=f' transform="rotate(-90 12 {mid:.1f})"'))
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/>')
    return "".join(out)


def _legend(names: list[str], x: float, y: float, colors: list[str] | None = None) -> str:
    out, cx = [], x
    for i, name in enumerate(names):
        fill = colors[i] if colors else color(i)
        out.append(f'<rect x="{cx:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{fill}"/>')
        out.append(_text(cx + 14, y, name, size=10))
        cx += 24 + 6.2 * len(name)
    return "".join(out)


def scatter(points: list[tuple[str, float | None, float | None]], *, x_label: str, y_label: str,
            width: int = 560, height: int = 320) -> str:
    """Labelled points (label, x, y); y is a share in [0, 1]; points missing a coordinate are left out."""
    pts = [(label, x, y) for label, x, y in points if x is not None and y is not None]
    if not pts:
        return NONE
    left, top, right, bottom = 56, 12, width - 16, height - 40
    xt, yt = nice_ticks(max(x for _, x, _ in pts)), nice_ticks(1.0, 4)
    body = [_y_axis(yt, left, top, bottom, right, y_label)]
    for t in xt:
        x = left + (right - left) * t / xt[-1]
        body.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#999"/>')
        body.append(_text(x, bottom + 16, _num(t), anchor="middle", size=10, fill="#555"))
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>')
    body.append(_text((left + right) / 2, height - 6, x_label, anchor="middle", fill="#555"))
    for i, (label, xv, yv) in enumerate(pts):
        x = left + (right - left) * xv / xt[-1]
        y = bottom - (bottom - top) * min(max(yv, 0.0), 1.0)
        flip = x > left + 0.7 * (right - left)
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color(i)}">'
                    f'<title>{escape(label)}: {_num(xv)} ms, {yv:.2f}</title></circle>')
        body.append(_text(x - 8 if flip else x + 8, y - 6, label, anchor="end" if flip else "start", size=10))
    return _svg(width, height, f"{y_label} against {x_label}", "".join(body))


def grouped_bars(groups: list[str], series: list[str], values: dict[tuple[str, str], float | None], *,
                 y_label: str, width: int = 720, height: int = 300) -> str:
    """Vertical bars of shares in [0, 1]: one cluster per group, one coloured bar per series in it."""
    if not groups or not series or all(v is None for v in values.values()):
        return NONE
    left, top, right, bottom = 56, 24, width - 12, height - 44
    body = [_legend(series, left, 12), _y_axis(nice_ticks(1.0, 4), left, top, bottom, right, y_label, "pct")]
    slot = (right - left) / len(groups)
    bar = min(28.0, (slot - 12) / len(series))
    for g, group in enumerate(groups):
        x0 = left + g * slot + (slot - bar * len(series)) / 2
        for s, name in enumerate(series):
            v = values.get((group, name))
            if v is None:
                continue
            h = max((bottom - top) * min(max(v, 0.0), 1.0), 1.5)  # a zero still shows as a sliver
            body.append(f'<rect x="{x0 + s * bar:.1f}" y="{bottom - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                        f'fill="{color(s)}"><title>{escape(name)} · {escape(group)}: {v:.2f}</title></rect>')
        body.append(_text(left + (g + 0.5) * slot, bottom + 16, group, anchor="middle", size=10))
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>')
    return _svg(width, height, y_label, "".join(body))


def stacked_bars(bars: list[tuple[str, dict[str, int]]], keys: list[str], *, colors: dict[str, str] | None = None,
                 width: int = 720) -> str:
    """Horizontal bars, one per label, split into the share of each key's count; ``colors`` by key, else the palette."""
    rows = [(label, counts) for label, counts in bars if sum(counts.values()) > 0]
    if not rows:
        return NONE
    fills = [(colors or {}).get(key) or color(k) for k, key in enumerate(keys)]
    left, right, row_h = 170, width - 12, 26
    height = 30 + row_h * len(rows)
    body = [_legend(keys, left, 12, fills)]
    for r, (label, counts) in enumerate(rows):
        y, x, total = 24 + r * row_h, float(left), sum(counts.values())
        body.append(_text(left - 6, y + 15, label[:28], anchor="end", size=10))
        for k, key in enumerate(keys):
            n = counts.get(key, 0)
            if not n:
                continue
            w = (right - left) * n / total
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" fill="{fills[k]}">'
                        f'<title>{escape(label)} · {escape(key)}: {n} ({n / total:.0%})</title></rect>')
            if w > 24:
                body.append(_text(x + w / 2, y + 14, str(n), anchor="middle", size=10, fill="#fff"))
            x += w
    return _svg(width, height, "decisions", "".join(body))


__all__ = ["color", "grouped_bars", "nice_ticks", "scatter", "stacked_bars"]
