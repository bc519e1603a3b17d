"""/label and the JSON it uses: one item at a time from the token's function's queue.

GET  /label?token=...                 the page (static HTML + label.js), after the token is checked
GET  /api/label/next?skip=id,id       {"task", "progress", "item" (null when the queue is empty)}
POST /api/label      {request_id, value}   the answer; 409 when given already, 410 when the row is gone
POST /api/label/undo {request_id}          takes back this role's answer; the item is queued again
GET  /label/item/<id>/input/<n>.png   an image the same token was shown
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from aiohttp import web

from server.http import pages
from server.http.access import Access, from_header, from_page
from server.http.body import integer, json_body
from server.http.errors import MALFORMED_REQUEST, NOT_FOUND, HttpError
from server.http.items import ImageShelf, show_item

log = logging.getLogger("sievedb.http.label")

LABEL = ("label",)
MAX_SKIPS = 200


def plain(value: Any) -> Any:
    """A desk value object as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def task_view(task: Any) -> dict:
    choices = list(task.choices or [])
    if not choices and str(task.result_type).lower() in ("boolean", "bool"):
        choices = [True, False]
    return {
        "function": task.function,
        "instructions": task.instructions,
        "choices": plain(choices),
        "result_type": str(task.result_type),
    }


async def progress_view(access: Access) -> dict:
    return plain(await access.desk.progress(access.grant))


def skip_list(request: web.Request) -> tuple[int, ...]:
    """The request ids the labeller skipped (``?skip=3,9``), the page's memory of them."""
    items = [s for s in request.query.get("skip", "").split(",") if s][:MAX_SKIPS]
    if not all(s.isdigit() for s in items):
        raise HttpError(400, "skip must list request ids: ?skip=3,9", MALFORMED_REQUEST)
    return tuple(int(s) for s in items)


def label_text(value: Any) -> str:
    """The answer as the desk takes it: text, as SQL's ``sieve.label`` would get it."""
    return value if isinstance(value, str) else json.dumps(value)


async def page(request: web.Request) -> web.Response:
    await from_page(request, LABEL)
    return pages.static_page("label.html")


async def next_item(request: web.Request) -> web.Response:
    access = await from_header(request, LABEL)
    desk, grant = access.desk, access.grant
    task = await desk.task(grant)
    item = await desk.next_item(grant, skip_list(request))
    shown = None if item is None else await show_item(item, access.token, request.app["shelf"])
    return web.json_response(
        {"task": task_view(task), "progress": await progress_view(access), "item": shown}
    )


async def give(request: web.Request) -> web.Response:
    access = await from_header(request, LABEL)
    body = await json_body(request, "request_id", "value")
    request_id = integer(body, "request_id")
    given = await access.desk.give(access.grant, request_id, label_text(body["value"]))
    log.info(
        "label given function=%s request=%s role=%s",
        access.grant.function,
        request_id,
        access.grant.role,
    )
    return web.json_response({"given": plain(given), "progress": await progress_view(access)})


async def undo(request: web.Request) -> web.Response:
    access = await from_header(request, LABEL)
    body = await json_body(request, "request_id")
    request_id = integer(body, "request_id")
    await access.desk.undo(access.grant, request_id)
    return web.json_response({"undone": request_id, "progress": await progress_view(access)})


async def image(request: web.Request) -> web.Response:
    access = await from_header(request, LABEL)
    shelf: ImageShelf = request.app["shelf"]
    picture = shelf.get(access.token, request.match_info["request_id"], int(request.match_info["index"]))
    if picture is None:
        raise HttpError(404, "no such image was shown to this token (load the item again)", NOT_FOUND)
    return web.Response(body=picture.png, content_type="image/png", headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app["shelf"] = ImageShelf()
    app.router.add_get("/label", page)
    app.router.add_get("/api/label/next", next_item)
    app.router.add_post("/api/label", give)
    app.router.add_post("/api/label/undo", undo)
    app.router.add_get(r"/label/item/{request_id}/input/{index:\d+}.png", image)
