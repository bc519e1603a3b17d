"""The web face's lifecycle: an aiohttp application on the server's own event loop, TLS with the
server's certificate when it has one, loopback unless TLS (or --allow-trust-remote) protects it."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from server.http import label_routes, metrics_route, pages, status_routes
from server.http.errors import error_middleware

log = logging.getLogger("sievedb.http")


def check_config(config: Any, has_tls: bool) -> None:
    """Refuse, before anything starts, a web face open to the network in clear text: its tokens
    and labels would cross it readable by anyone on the path."""
    from server.app import ConfigError, is_loopback  # server.app imports this module

    if config.http_port is None or is_loopback(config.http_host) or has_tls or config.allow_trust_remote:
        return
    raise ConfigError(
        f"refusing to serve the web face on {config.http_host} without TLS: its labelling and status "
        "links carry tokens that anyone on the network path could read and use. Give --tls-cert and "
        "--tls-key, keep --http-host on loopback, or pass --allow-trust-remote if this network is trusted."
    )


def build_app(server: Any) -> web.Application:
    app = web.Application(middlewares=[pages.security_headers, error_middleware], client_max_size=64 * 1024)
    app["server"] = server
    label_routes.add_routes(app)
    status_routes.add_routes(app)
    metrics_route.add_routes(app)
    app.router.add_static("/static/", pages.STATIC, show_index=False)
    return app


def base_url(host: str, port: int, tls: bool) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    netloc = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{netloc}:{port}"


class WebFace:
    """Started by SieveServer.start() when ``config.http_port`` is set; stopped by its stop()."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.url: str | None = None

    async def start(self) -> None:
        config, ssl_context = self._server.config, self._server.ssl_context
        self._runner = web.AppRunner(build_app(self._server), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.http_host, config.http_port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            from server.app import ConfigError  # server.app imports this module

            raise ConfigError(
                f"cannot serve the web face on {config.http_host}:{config.http_port}: {exc.strerror or exc} "
                "(pick another --http-port, or 0 for any free one)"
            ) from None
        self.port = self._runner.addresses[0][1]
        self.url = base_url(config.http_host, self.port, ssl_context is not None)
        self._server.planners.set_http_base_url(self.url)
        log.info("web face on %s (/label, /status, /metrics)", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
