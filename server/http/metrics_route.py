"""/metrics: the server's Prometheus metrics (server/metrics.py) in the text format. No token:
the web face listens on loopback unless TLS or --allow-trust-remote opens it."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

EMPTY = CollectorRegistry()  # a server without metrics still answers, with no families


async def metrics(request: web.Request) -> web.Response:
    metrics_of = getattr(request.app["server"], "metrics", None)
    body = generate_latest(EMPTY) if metrics_of is None else await metrics_of.scrape()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
