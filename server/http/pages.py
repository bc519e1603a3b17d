"""The static files of the web face (package data in ``server/http/static/``) and the headers
every answer carries."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"

# The pages carry their token in the URL: no referrer may leak it, no other site may frame them,
# and only this origin's scripts run (no inline script, no CDN).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@cache
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def static_page(name: str) -> web.Response:
    return web.Response(text=_read(name), content_type="text/html")


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    for header, value in SECURITY_HEADERS.items():
        if header == "Cache-Control" and request.path.startswith("/static/"):
            continue
        response.headers.setdefault(header, value)
    return response
