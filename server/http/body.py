"""The JSON bodies the API takes: an object, its fields present, its ids integers (400 otherwise)."""

from __future__ import annotations

import json

from aiohttp import web

from server.http.errors import MALFORMED_REQUEST, HttpError


async def json_body(request: web.Request, *fields: str) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"the body is not JSON: {exc}", MALFORMED_REQUEST) from exc
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object", MALFORMED_REQUEST)
    missing = [f for f in fields if body.get(f) is None]
    if missing:
        raise HttpError(400, f"the body lacks {', '.join(missing)}", MALFORMED_REQUEST)
    return body


def integer(body: dict, field: str) -> int:
    """An id field: a JSON integer (not a string, a float or a boolean)."""
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, f"{field} must be an integer, not {json.dumps(value)}", MALFORMED_REQUEST)
    return value
