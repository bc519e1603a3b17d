"""The web face (``--http-port``): /label for people who label, /status and /metrics for people
who run the server. aiohttp on the server's own event loop; plain HTML and a little vanilla JS."""

from server.http.face import WebFace, check_config

__all__ = ["WebFace", "check_config"]
