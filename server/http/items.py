"""What a labeller sees of one queued item: its inputs as an image, as text or as bytes.

A ``bytea`` input that Pillow can read is served as a PNG (decoded in a thread, never on the
event loop); any other ``bytea`` is shown as its size and first bytes in hex; everything else as
text. The PNGs of items recently served wait on a small shelf keyed by the token, so the image
endpoint hands out only what that same token was shown.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 64_000_000  # above this Pillow's decompression-bomb guard refuses the input
SHOWN_SIDE = 1024  # larger images are scaled down for the page
HEX_BYTES = 64  # how much of a non-image bytea the page shows
TEXT_CHARS = 20_000
SHELF_SIZE = 256


@dataclass(frozen=True)
class Picture:
    png: bytes
    width: int
    height: int


def to_png(data: bytes) -> Picture | None:
    """``data`` as a PNG when it is an image Pillow reads, else None (blocking: run in a thread)."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
            if image.mode not in ("1", "L", "LA", "RGB", "RGBA", "P"):
                image = image.convert("RGBA")
            image.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
            out = io.BytesIO()
            image.save(out, format="PNG")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None
    return Picture(out.getvalue(), width, height)


def key_text(key: Any) -> str:
    """The item's key as text (what the page exposes in ``data-key``): a primary key's text as
    it is, anything else as JSON, nothing when the input has no source row."""
    if key is None:
        return ""
    return key if isinstance(key, str) else json.dumps(key, default=str, separators=(",", ":"))


class ImageShelf:
    """PNGs of items recently shown, by (token, request id, input position)."""

    def __init__(self, size: int = SHELF_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, Any, int], Picture] = OrderedDict()

    def put(self, token: str, request_id: Any, index: int, picture: Picture) -> None:
        self._items[(token, str(request_id), index)] = picture
        self._items.move_to_end((token, str(request_id), index))
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def get(self, token: str, request_id: Any, index: int) -> Picture | None:
        return self._items.get((token, str(request_id), index))


async def show_input(value: Any) -> tuple[dict, Picture | None]:
    """One input as the page shows it, and its picture when it is an image."""
    if value is None:
        return {"kind": "null"}, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        picture = await asyncio.to_thread(to_png, data)
        if picture is not None:
            return {
                "kind": "image",
                "width": picture.width,
                "height": picture.height,
                "size": len(data),
            }, picture
        return {
            "kind": "bytes",
            "size": len(data),
            "hex": data[:HEX_BYTES].hex(),
            "truncated": len(data) > HEX_BYTES,
        }, None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return {"kind": "text", "text": text[:TEXT_CHARS], "truncated": len(text) > TEXT_CHARS}, None


async def show_item(item: Any, token: str, shelf: ImageShelf) -> dict:
    """``item`` (a LabelItem) as the JSON the page renders; its images go on ``shelf``."""
    inputs = []
    for index, given in enumerate(item.inputs):
        shown, picture = await show_input(given.value)
        if picture is not None:
            shelf.put(token, item.request_id, index, picture)
            shown["url"] = f"/label/item/{item.request_id}/input/{index}.png"
        inputs.append({"name": given.name, "sql_type": given.sql_type, **shown})
    return {
        "request_id": item.request_id,
        "function": item.function,
        "table": item.table,
        "key": key_text(item.key),
        "requested_by": item.requested_by,
        "requested_at": str(item.requested_at),
        "inputs": inputs,
    }
