"""The picture of an approximate query's run, drawn on the server as SVG (no script, no CDN):
the proxy-score histogram as bars, the rows the oracle labelled as ticks below it (positive up,
negative down), and the chosen thresholds as vertical lines."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

WIDTH, HEIGHT = 520, 190
LEFT, RIGHT, TOP = 36, 12, 14
BARS_BOTTOM = 120  # the histogram sits above, the sampled rows' strip below
STRIP_MID = 150
THRESHOLD_COLOURS = ("#c0392b", "#8e44ad", "#d35400", "#16a085")


def _x(score: float) -> float:
    score = min(1.0, max(0.0, float(score)))
    return LEFT + score * (WIDTH - LEFT - RIGHT)


def histogram_bins(histogram: Any) -> list[tuple[float, float, int]]:
    """(low, high, count) per bin, from {"edges", "counts"} or a list of bins."""
    if isinstance(histogram, Mapping):
        edges, counts = list(histogram.get("edges") or []), list(histogram.get("counts") or [])
        return [(edges[i], edges[i + 1], int(c)) for i, c in enumerate(counts) if i + 1 < len(edges)]
    bins = []
    for b in histogram or []:
        if isinstance(b, Mapping):
            bins.append((float(b.get("low", 0)), float(b.get("high", 0)), int(b.get("count", 0))))
        elif isinstance(b, Sequence) and len(b) == 3:
            bins.append((float(b[0]), float(b[1]), int(b[2])))
    return bins


def sampled_points(sampled: Any) -> list[tuple[float, bool | None]]:
    """(proxy score, oracle label) per labelled row."""
    points = []
    for row in sampled or []:
        if isinstance(row, Mapping):
            label = row.get("label", row.get("positive"))
            points.append(
                (float(row.get("score", row.get("proxy", 0.0))), None if label is None else bool(label))
            )
        elif isinstance(row, Sequence) and len(row) >= 2:
            points.append((float(row[0]), None if row[1] is None else bool(row[1])))
    return points


def _bars(bins: list[tuple[float, float, int]]) -> list[str]:
    top = max((c for _, _, c in bins), default=0)
    if top == 0:
        return []
    out = []
    for low, high, count in bins:
        # square-root heights: the few high-score rows stay visible beside the many low ones
        h = (BARS_BOTTOM - TOP) * math.sqrt(count / top)
        x0, x1 = _x(low), _x(high)
        out.append(
            f'<rect class="bar" x="{x0:.1f}" y="{BARS_BOTTOM - h:.1f}" width="{max(0.5, x1 - x0 - 0.5):.1f}" '
            f'height="{h:.1f}" fill="#7f8c8d"><title>{low:.3g}–{high:.3g}: {count} rows</title></rect>'
        )
    return out


def _ticks(points: list[tuple[float, bool | None]]) -> list[str]:
    out = []
    for score, label in points:
        x = _x(score)
        y0, y1, colour = (
            (STRIP_MID - 14, STRIP_MID, "#27ae60") if label else (STRIP_MID, STRIP_MID + 14, "#2c3e50")
        )
        if label is None:
            colour = "#bdc3c7"
        out.append(f'<line class="sample" x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y1}" stroke="{colour}"/>')
    return out


def _thresholds(thresholds: Any) -> list[str]:
    out = []
    items = thresholds.items() if isinstance(thresholds, Mapping) else enumerate(thresholds or [])
    for i, (name, value) in enumerate(items):
        if value is None:
            continue
        x, colour = _x(value), THRESHOLD_COLOURS[i % len(THRESHOLD_COLOURS)]
        out.append(
            f'<line class="threshold" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP - 4}" y2="{STRIP_MID + 18}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="4 2"/>'
            f'<text x="{x + 3:.1f}" y="{TOP + 8 + 12 * i}" fill="{colour}" font-size="11">'
            f"{escape(str(name))} {float(value):.3g}</text>"
        )
    return out


def trace_svg(trace: Mapping[str, Any], title: str = "") -> str:
    """One approximate run as an inline SVG element."""
    bins = histogram_bins(trace.get("histogram"))
    points = sampled_points(trace.get("sampled"))
    axis = [
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{BARS_BOTTOM}" y2="{BARS_BOTTOM}" stroke="#555"/>',
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{STRIP_MID}" y2="{STRIP_MID}" stroke="#ccc"/>',
        *(
            f'<text x="{_x(v):.1f}" y="{HEIGHT - 4}" font-size="10" text-anchor="middle">{v:g}</text>'
            for v in (0, 0.25, 0.5, 0.75, 1)
        ),
        f'<text x="2" y="{STRIP_MID + 4}" font-size="9">oracle</text>',
        f'<text x="2" y="{BARS_BOTTOM - 2}" font-size="9">√rows</text>',
    ]
    body = "".join([*_bars(bins), *axis, *_ticks(points), *_thresholds(trace.get("thresholds"))])
    label = escape(title or "proxy scores, oracle-labelled rows and thresholds")
    return (
        f'<svg class="trace" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}" data-bins="{len(bins)}" '
        f'data-sampled="{len(points)}"><title>{label}</title>{body}</svg>'
    )
