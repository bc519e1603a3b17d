"""Who is asking: the token of a request, resolved by the label desk of the token's database.

Pages take the token from their URL (``?token=``: that is the link SQL hands out); the JSON API
takes it only from the ``Authorization: Bearer`` header its page's script sends, never from a
cookie, so another site cannot make a browser act with it (no CSRF).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from planner.labels.desk import Grant, LabelDesk, database_of
from server import sqlstate
from server.http.errors import INSUFFICIENT_PRIVILEGE, HttpError


@dataclass(frozen=True)
class Access:
    """A resolved token: the desk that answers for its database and the grant it stands for."""

    token: str
    desk: LabelDesk
    grant: Grant


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpError(
            401, "this endpoint needs 'Authorization: Bearer <token>'", sqlstate.INVALID_AUTHORIZATION
        )
    return token.strip()


def page_token(request: web.Request) -> str:
    token = request.query.get("token", "").strip()
    if not token:
        raise HttpError(
            401,
            "this page needs the link SQL gives: SELECT sieve.labelling_link('function') "
            "or SELECT sieve.status_link()",
            sqlstate.INVALID_AUTHORIZATION,
        )
    return token


async def resolve(server: Any, token: str, scopes: tuple[str, ...]) -> Access:
    """The grant of ``token`` (401 when no database knows it), refused (403) outside ``scopes``."""
    database = database_of(token)
    if database is None or not await _database_exists(server, database):
        raise HttpError(
            401, "unknown or expired token: ask SQL for a new link", sqlstate.INVALID_AUTHORIZATION
        )
    planner = await server.planners.get(database)
    desk = planner.labels
    grant = await desk.resolve(token)
    if grant.scope not in scopes:
        raise HttpError(
            403,
            f"a {grant.scope} token cannot open this page (it takes a {' or '.join(scopes)} token)",
            INSUFFICIENT_PRIVILEGE,
        )
    return Access(token, desk, grant)


async def _database_exists(server: Any, database: str) -> bool:
    """Whether a token's database is one to open a planner for (a forged prefix opens nothing)."""
    return bool(
        await server.db.fetchval(
            "SELECT true FROM pg_catalog.pg_database WHERE datname = $1 AND datallowconn", database
        )
    )


async def from_header(request: web.Request, scopes: tuple[str, ...]) -> Access:
    return await resolve(request.app["server"], bearer_token(request), scopes)


async def from_page(request: web.Request, scopes: tuple[str, ...]) -> Access:
    return await resolve(request.app["server"], page_token(request), scopes)
