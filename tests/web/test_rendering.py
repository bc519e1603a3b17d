"""The web face's pure parts: the SVG picture, the status body, how an item's inputs are shown."""

from __future__ import annotations

import asyncio
import io
import re

from PIL import Image

from server.http.items import ImageShelf, show_input, to_png
from server.http.status_html import status_body
from server.http.svg import trace_svg

TRACE = {
    "histogram": {"edges": [0.0, 0.25, 0.5, 0.75, 1.0], "counts": [700, 50, 20, 30]},
    "sampled": [{"score": 0.1, "label": False}, {"score": 0.8, "label": True}, {"score": 0.9, "label": True}],
    "thresholds": {"recall": 0.42, "precision": None},
}


def png_of(size: tuple[int, int], mode: str = "L", fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 128).save(out, format=fmt)
    return out.getvalue()


def test_the_picture_has_a_bar_per_bin_a_tick_per_sampled_row_and_a_line_per_threshold():
    svg = trace_svg(TRACE)
    assert svg.count('class="bar"') == 4
    assert svg.count('class="sample"') == 3
    assert svg.count('class="threshold"') == 1  # a threshold of None is not drawn
    assert "recall 0.42" in svg
    assert 'data-bins="4"' in svg and 'data-sampled="3"' in svg
    heights = [float(h) for h in re.findall(r'class="bar"[^>]*height="([\d.]+)"', svg)]
    assert heights[0] == max(heights) and heights[2] == min(heights)  # bars scale with the counts


def test_the_picture_takes_bins_as_a_list_and_escapes_threshold_names():
    svg = trace_svg(
        {"histogram": [[0, 0.5, 3], {"low": 0.5, "high": 1, "count": 1}], "thresholds": {"<b>": 0.5}}
    )
    assert svg.count('class="bar"') == 2
    assert "<b>" not in svg and "&lt;b&gt;" in svg


def test_the_status_body_escapes_statement_text_and_offers_cancel_only_on_the_viewers_statements():
    status = {
        "running": [
            {
                "id": 7,
                "role": "alice",
                "text": "select '<script>x</script>'",
                "kind": "model call",
                "progress": {"model": "m", "done": 25, "total": 100, "seconds_left": 12.0},
            },
            {"id": 8, "role": "bob", "text": "select 2", "kind": "forwarded", "progress": None},
        ],
        "recent": [
            {
                "query_id": 3,
                "query": "select id from t",
                "mode": "recall",
                "target": 0.9,
                "certified": True,
                "trace": TRACE,
            }
        ],
        "models": [{"name": "digit_oracle", "device": "cpu", "ms_per_row": 0.02}],
        "assertions": [],
    }
    body = status_body(status, "alice", "postgres")
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert re.findall(r'class="cancel" data-id="(\d+)"', body) == ["7"]
    assert '<progress max="1" value="0.250">' in body and "about 12 s left" in body
    assert body.count("<svg") == 1 and 'data-query-id="3"' in body
    assert 'data-section="assertions"' in body and "none" in body
    assert "digit_oracle" in body and body.count("<figure") == 1


def test_an_image_becomes_a_png_and_a_large_one_is_scaled_down():
    picture = to_png(png_of((8, 8)))
    assert (picture.width, picture.height) == (8, 8)
    assert picture.png.startswith(b"\x89PNG")
    big = to_png(png_of((3000, 1500), "RGB", "JPEG"))
    assert (big.width, big.height) == (3000, 1500)
    with Image.open(io.BytesIO(big.png)) as shown:
        assert shown.size == (1024, 512)


def test_bytes_that_are_not_an_image_are_shown_as_size_and_hex_and_text_as_text():
    shown, picture = asyncio.run(show_input(b"\x00\x01not an image" * 10))
    assert picture is None and shown["kind"] == "bytes" and shown["size"] == 140
    assert shown["hex"].startswith("00016e6f74") and shown["truncated"]
    shown, picture = asyncio.run(show_input("<b>bold?</b>"))
    assert (shown["kind"], shown["text"], picture) == ("text", "<b>bold?</b>", None)


def test_the_image_shelf_keeps_the_newest_and_only_for_the_token_that_was_shown():
    shelf = ImageShelf(size=2)
    picture = to_png(png_of((4, 4)))
    for request_id in (1, 2, 3):
        shelf.put("tok", request_id, 0, picture)
    assert shelf.get("tok", 1, 0) is None  # the oldest left
    assert shelf.get("tok", "3", 0) is picture  # ids from URLs are text
    assert shelf.get("other", 3, 0) is None
