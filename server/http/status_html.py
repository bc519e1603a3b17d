"""The status page's body, rendered on the server from ``server.status_data.status_for``'s dict:
running statements (progress, time left, a cancel button on the viewer's own), recent queries
with targets and certified levels (and a picture of each approximate run), models, assertions.

Every value goes through ``html.escape``. Sections other than the running statements show every
column their rows carry (those people read first, first), so a new field of the status data
shows up without a change here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from server.http.svg import trace_svg

MAX_CELL = 160
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
HIDDEN = {"trace", "progress"}  # drawn, not tabled
RUNNING_FIRST = ("id", "role", "kind", "text", "seconds")
QUERY_FIRST = (
    "query_id",
    "started_at",
    "role",
    "query",
    "mode",
    "target",
    "confidence",
    "certified",
    "certified_level",
)


def cell(value: Any) -> str:
    if value is None:
        return '<span class="muted">—</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (Mapping, list, tuple)):
        value = json.dumps(value, default=str)
    text = str(value)
    if ISO_TIME.match(text):  # to the second: the page is read by people
        text = text[:19].replace("T", " ")
    short = text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"
    return f'<span title="{escape(text)}">{escape(short)}</span>' if short != text else escape(text)


def columns_of(rows: Sequence[Mapping], first: Sequence[str] = (), only: bool = False) -> list[str]:
    """``first`` in that order, then (unless ``only``) every other column the rows carry."""
    seen = [c for c in first if any(c in r for r in rows)]
    if only:
        return seen
    for row in rows:
        seen += [c for c in row if c not in seen and c not in HIDDEN]
    return seen


def table(
    section: str, rows: Sequence[Mapping], first: Sequence[str] = (), extra=None, only: bool = False
) -> str:
    """Rows as a table; ``extra(row)`` adds a last cell (a button, a progress bar)."""
    if not rows:
        return f'<p class="muted empty" data-section="{section}">none</p>'
    columns = columns_of(rows, first, only)
    head = "".join(f"<th>{escape(c)}</th>" for c in columns) + ("<th></th>" if extra else "")
    body = []
    for row in rows:
        cells = "".join(f'<td data-column="{escape(c)}">{cell(row.get(c))}</td>' for c in columns)
        if extra:
            cells += f"<td>{extra(row)}</td>"
        body.append(f'<tr data-id="{escape(str(row.get("id", row.get("query_id", ""))))}">{cells}</tr>')
    return (
        f'<table class="grid" data-section="{section}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def progress_cell(row: Mapping) -> str:
    """A bar and the time left, from {"done", "total", "seconds_left"} (or a fraction)."""
    progress, left = row.get("progress"), row.get("time_left_s")
    if isinstance(progress, Mapping):
        total, left = progress.get("total"), progress.get("seconds_left")
        progress = progress.get("done", 0) / total if total else None
    if progress is None:
        return ""
    done = min(1.0, max(0.0, float(progress)))
    rest = f", about {float(left):.0f} s left" if left is not None else ""
    return f'<progress max="1" value="{done:.3f}"></progress> {done:.0%}{escape(rest)}'


def is_own(row: Mapping, role: str) -> bool:
    if "own" in row:
        return bool(row["own"])
    return row.get("role") == role


def running_section(rows: Sequence[Mapping], role: str) -> str:
    def extra(row: Mapping) -> str:
        button = ""
        if is_own(row, role) and row.get("id") is not None:
            button = (
                f' <button type="button" class="cancel" data-id="{escape(str(row["id"]))}">Cancel</button>'
            )
        return progress_cell(row) + button

    return table("running", rows, RUNNING_FIRST, extra, only=True)


def pictures_section(rows: Sequence[Mapping]) -> str:
    """One figure per approximate run that left a trace: its histogram, samples, thresholds."""
    figures = []
    for row in rows:
        trace = row.get("trace")
        if not isinstance(trace, Mapping) or not trace:
            continue
        query_id = escape(str(row.get("query_id", "")))
        caption = f"query {query_id} ({escape(str(row.get('mode') or trace.get('kind') or ''))})"
        level = trace.get("certified_level")
        if level is not None:
            caption += f", certified level {float(level):.3g}"
        figures.append(
            f'<figure class="picture" data-query-id="{query_id}">{trace_svg(trace)}'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    if not figures:
        return '<p class="muted empty" data-section="pictures">no approximate run yet</p>'
    return f'<div class="pictures" data-section="pictures">{"".join(figures)}</div>'


def rows_of(status: Mapping, *names: str) -> list[Mapping]:
    for name in names:
        rows = status.get(name)
        if rows:
            return [r for r in rows if isinstance(r, Mapping)]
    return []


def status_body(status: Mapping[str, Any], role: str, database: str) -> str:
    """The page's body for ``role`` on ``database``."""
    recent = rows_of(status, "recent", "queries")
    parts = [
        f'<p class="muted" id="viewer">as role <b>{escape(role)}</b> '
        f"on database <b>{escape(database)}</b></p>",
        "<h2>Running statements</h2>",
        running_section(rows_of(status, "running"), role),
        "<h2>Recent queries</h2>",
        table("queries", recent, QUERY_FIRST),
        "<h2>Approximate runs</h2>",
        pictures_section(recent),
        "<h2>Models</h2>",
        table(
            "models", rows_of(status, "models"), ("name", "version", "device", "ms_per_row", "batch_sizes")
        ),
        "<h2>Assertions</h2>",
        table("assertions", rows_of(status, "assertions"), ("name", "kind", "violations")),
        "<h2>Labels pending</h2>",
        table("labels", rows_of(status, "labels"), ("function", "pending", "oldest")),
    ]
    return "\n".join(parts)
