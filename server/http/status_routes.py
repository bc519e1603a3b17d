"""/status and its JSON: what the token's role may see of the server, refreshed by status.js.

GET  /status?token=...     the page (a status or a label token)
GET  /api/status           status_for(server, role, database) as JSON
GET  /api/status/html      {"html": the page's body, rendered here (pictures as SVG)}
POST /api/status/cancel    {id}: cancels one of the role's own running statements (403 otherwise)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from server.activity import CancelRefused
from server.http import pages
from server.http.access import Access, from_header, from_page
from server.http.body import integer, json_body
from server.http.errors import INSUFFICIENT_PRIVILEGE, NOT_FOUND, HttpError
from server.http.status_html import status_body
from server.status_data import StatusRefused, status_for

log = logging.getLogger("sievedb.http.status")

VIEW = ("status", "label")


async def status_of(request: web.Request, access: Access) -> dict:
    try:
        return await status_for(request.app["server"], access.grant.role, access.grant.database)
    except StatusRefused as exc:  # SieveDB cannot read as that role (no superuser backing role)
        raise HttpError(403, str(exc), exc.sqlstate) from exc


def as_json(value: Any) -> web.Response:
    return web.Response(text=json.dumps(value, default=str), content_type="application/json")


async def page(request: web.Request) -> web.Response:
    await from_page(request, VIEW)
    return pages.static_page("status.html")


async def status_json(request: web.Request) -> web.Response:
    access = await from_header(request, VIEW)
    return as_json(await status_of(request, access))


async def status_fragment(request: web.Request) -> web.Response:
    access = await from_header(request, VIEW)
    status = await status_of(request, access)
    return as_json({"html": status_body(status, access.grant.role, access.grant.database)})


async def cancel(request: web.Request) -> web.Response:
    access = await from_header(request, VIEW)
    body = await json_body(request, "id")
    statement_id = integer(body, "id")
    activity = request.app["server"].activity
    statement = activity.get(statement_id)
    if statement is None or statement.database != access.grant.database:
        raise HttpError(404, f"statement {statement_id} is not running (any more)", NOT_FOUND)
    try:
        cancelled = activity.cancel(statement_id, access.grant.role)
    except CancelRefused as exc:
        raise HttpError(403, str(exc), INSUFFICIENT_PRIVILEGE) from exc
    if not cancelled:
        raise HttpError(404, f"statement {statement_id} is not running (any more)", NOT_FOUND)
    log.info("statement %d cancelled from /status by role %s", statement_id, access.grant.role)
    return as_json({"cancelled": statement_id})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/status", page)
    app.router.add_get("/api/status", status_json)
    app.router.add_get("/api/status/html", status_fragment)
    app.router.add_post("/api/status/cancel", cancel)
