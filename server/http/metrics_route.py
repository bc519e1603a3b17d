"""/metrics: the server's Prometheus registry in the text format (no token: the web face listens
on loopback unless TLS or --allow-trust-remote opens it)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

EMPTY = CollectorRegistry()  # a server without metrics still answers, with no families


async def metrics(request: web.Request) -> web.Response:
    metrics_of = getattr(request.app["server"], "metrics", None)
    registry = getattr(metrics_of, "registry", None) or EMPTY
    body = generate_latest(registry)  # a walk over in-memory collectors: cheap enough for the loop
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
