"""One shape for every refusal the web face gives: an HTTP status, a message and a SQLSTATE.

The JSON API answers ``{"error", "sqlstate"}``; the pages answer a readable HTML page. Errors of
the label desk (``LabelError``) carry their own status and SQLSTATE and are shown as they are.
"""

from __future__ import annotations

import html
import json
import logging

from aiohttp import web

from planner.labels.errors import LabelError
from server import sqlstate

log = logging.getLogger("sievedb.http")

MALFORMED_REQUEST = "22P02"  # a body that is not the JSON the endpoint takes
NOT_FOUND = "42704"  # undefined_object: no such page or item
INSUFFICIENT_PRIVILEGE = "42501"


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.sqlstate = status, message, code


def from_label_error(exc: LabelError) -> HttpError:
    """A desk error as it is: its status (401/403/404/409/410/400) and SQLSTATE."""
    message = str(exc) + (f" ({exc.hint})" if exc.hint else "")
    return HttpError(exc.http_status, message, exc.sqlstate)


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/label/item/")


def json_error(error: HttpError) -> web.Response:
    body = json.dumps({"error": error.message, "sqlstate": error.sqlstate})
    return web.Response(status=error.status, text=body, content_type="application/json")


def html_error(error: HttpError) -> web.Response:
    title = {401: "Link not valid", 403: "Not allowed", 404: "Not found", 410: "Gone"}.get(
        error.status, "Request refused"
    )
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>SieveDB: {html.escape(title)}</title><link rel=stylesheet href=/static/style.css>"
        "</head><body><main class=error-page>"
        f"<h1>{html.escape(title)}</h1><p id=error-message>{html.escape(error.message)}</p>"
        f"<p class=muted>HTTP {error.status} · SQLSTATE <code id=error-sqlstate>"
        f"{html.escape(error.sqlstate)}</code></p></main></body></html>"
    )
    return web.Response(status=error.status, text=page, content_type="text/html")


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every failure becomes one answer to this request; nothing else is touched."""
    try:
        return await handler(request)
    except HttpError as exc:
        error = exc
    except web.HTTPNotFound:
        error = HttpError(404, f"no page at {request.path}", NOT_FOUND)
    except web.HTTPMethodNotAllowed as exc:
        error = HttpError(405, f"{request.method} is not allowed on {request.path}", NOT_FOUND)
        error.message += f" (use {', '.join(sorted(exc.allowed_methods))})"
    except web.HTTPException:
        raise
    except LabelError as exc:
        error = from_label_error(exc)
    except Exception as exc:  # the server and other requests go on; this one says what happened
        log.exception("web face: %s %s failed", request.method, request.path)
        error = HttpError(500, f"internal error: {exc}", sqlstate.INTERNAL_ERROR)
    log.info("web face: %s %s -> %d %s", request.method, request.path, error.status, error.sqlstate)
    return json_error(error) if is_api(request) else html_error(error)
