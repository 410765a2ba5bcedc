"""Inline SVG charts for the auditor's report: no script, no fonts or files from anywhere.

Each function returns one `<svg>` element as text, sized by its viewBox so it scales with the page
and prints crisply. Every label is escaped; the data come from agents (table and agent names).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from html import escape

DECISION_COLORS = {
    "allow": "#2f7d5b",
    "approval_required": "#c98a1b",
    "deny": "#b83a3a",
    "error": "#7b8794",
}
DECISION_LABELS = {"allow": "allowed", "approval_required": "needs approval", "deny": "denied", "error": "failed"}


def nice_ceiling(value: float) -> int:
    """The axis maximum: the next 1, 2 or 5 times a power of ten at or above `value`."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return int(step * power)
    return int(10 * power)


def _divisions(ceiling: int) -> int:
    """Grid lines at whole, round steps: 50 -> 10s, 20 -> 5s, 10 -> 2s, 3 -> 1s."""
    if ceiling <= 5:
        return ceiling
    leading = int(str(ceiling)[0])
    return 4 if leading == 2 else 5


def _label(moment: datetime, bucket: str) -> str:
    if bucket == "hour":
        return moment.strftime("%H:%M")
    return moment.strftime("%d %b")


def legend(order: Sequence[str] = tuple(DECISION_COLORS)) -> str:
    items = []
    for decision in order:
        items.append(
            f'<span class="key"><span class="swatch" style="background:{DECISION_COLORS[decision]}"></span>'
            f"{escape(DECISION_LABELS[decision])}</span>"
        )
    return '<div class="legend">' + "".join(items) + "</div>"


def stacked_bars(series: Sequence[tuple[datetime, Counter[str]]], bucket: str, *, width: int = 960) -> str:
    """Calls per time bucket, stacked by decision (allowed at the bottom)."""
    height, left, right, top, bottom = 240, 44, 12, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((sum(c.values()) for _, c in series), default=0)
    ceiling = nice_ceiling(peak)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Calls per {escape(bucket)} by decision" xmlns="http://www.w3.org/2000/svg">'
    ]
    divisions = _divisions(ceiling)
    for i in range(divisions + 1):
        value = ceiling * i // divisions
        y = top + plot_h - plot_h * i / divisions
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{value:,}</text>')
    count = max(len(series), 1)
    slot = plot_w / count
    bar = max(1.0, min(slot * 0.72, 36.0))
    every = max(1, math.ceil(count / 12))
    for index, (moment, counts) in enumerate(series):
        x = left + slot * index + (slot - bar) / 2
        y = top + plot_h
        for decision in DECISION_COLORS:
            n = counts.get(decision, 0)
            if not n:
                continue
            h = plot_h * n / ceiling
            y -= h
            title = f"{_label(moment, bucket)}: {n} {DECISION_LABELS[decision]}"
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{DECISION_COLORS[decision]}"><title>{escape(title)}</title></rect>'
            )
        if index % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" class="axis" text-anchor="middle">'
                f"{escape(_label(moment, bucket))}</text>"
            )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" class="baseline"/></svg>'
    )
    return "".join(parts)


def horizontal_bars(rows: Sequence[tuple[str, Counter[str]]], *, width: int = 960, label_width: int = 260) -> str:
    """One bar per row (an agent, a table), stacked by decision, with the total at its end."""
    bar_h, gap, top = 18, 8, 6
    height = top * 2 + len(rows) * (bar_h + gap)
    plot_w = width - label_width - 70
    peak = max((sum(c.values()) for _, c in rows), default=0) or 1
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" role="img">']
    for index, (name, counts) in enumerate(rows):
        y = top + index * (bar_h + gap)
        shown = name if len(name) <= 38 else name[:37] + "…"
        parts.append(
            f'<text x="{label_width - 10}" y="{y + bar_h - 5}" class="label" text-anchor="end">'
            f"<title>{escape(name)}</title>{escape(shown)}</text>"
        )
        x = float(label_width)
        for decision in DECISION_COLORS:
            n = counts.get(decision, 0)
            if not n:
                continue
            w = plot_w * n / peak
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" '
                f'fill="{DECISION_COLORS[decision]}"><title>{n} {escape(DECISION_LABELS[decision])}</title></rect>'
            )
            x += w
        total = sum(counts.values())
        parts.append(f'<text x="{x + 6:.1f}" y="{y + bar_h - 5}" class="value">{total:,}</text>')
    parts.append("</svg>")
    return "".join(parts)
