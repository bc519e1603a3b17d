"""Model views a client may read although it may not read what they read.

Postgres reads a view's tables with the view owner's privileges (unless the view is
``security_invoker``): a role granted SELECT on ``digit_predictions`` alone gets its rows.
SieveDB inlines views to narrow model inputs, which would read those tables as the client
(42501). Such a view is left whole in the statement instead, and its model calls are
materialized from the view's own definition, read as the view's owner on a connection of
SieveDB's (no condition of the client's is evaluated there: only what the view itself says),
so that Postgres, reading the view as its owner, finds every output it needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from planner.outcome import PlanError

INSUFFICIENT_PRIVILEGE = "42501"

# In the client's session: (name, whether its search_path finds another relation first,
# whether the session may read the view but not what it reads, the role the session runs as).
# Nothing here can make SieveDB do more than the client may: a view said to be read whole is
# checked again on SieveDB's connection (VIEWS_READ_WHOLE), which also names its owner.
CLIENT_VIEWS = """
SELECT n, pg_catalog.to_regclass(pg_catalog.quote_ident(n)) IS DISTINCT FROM c.oid,
       pg_catalog.has_table_privilege(c.oid, 'SELECT')
       AND EXISTS (SELECT 1 FROM sieve.view_relations(c.oid) r
                   WHERE NOT pg_catalog.has_table_privilege(r, 'SELECT')),
       current_user::text
FROM pg_catalog.unnest($1::text[]) AS n
JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass('public.' || pg_catalog.quote_ident(n))
"""

# On SieveDB's own connection: (name, owner) of the views role $2 may read whole but not
# through (a table or view they read, at any depth, it may not read), not security_invoker.
VIEWS_READ_WHOLE = """
SELECT n, pg_catalog.pg_get_userbyid(c.relowner)
FROM pg_catalog.unnest($1::text[]) AS n
JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass('public.' || pg_catalog.quote_ident(n))
WHERE pg_catalog.has_table_privilege($2, c.oid, 'SELECT')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_options_to_table(c.reloptions) o
                  WHERE o.option_name = 'security_invoker' AND o.option_value IN ('true', 'on', '1', 'yes'))
  AND EXISTS (SELECT 1 FROM sieve.view_relations(c.oid) r
              WHERE NOT pg_catalog.has_table_privilege($2, r, 'SELECT'))
"""


class OwnerPort:
    """The planner's SessionPort for a view's own inputs, read as the view's owner in a
    read-only transaction on SieveDB's connection; progress and timeouts go to the client."""

    def __init__(self, pool: asyncpg.Pool, owner: str, client) -> None:
        self._pool, self._owner, self._client = pool, owner, client
        self.user, self.database, self.in_transaction = owner, client.database, False
        self._conn: asyncpg.Connection | None = None
        self._tx = None

    async def __aenter__(self) -> OwnerPort:
        self._conn = await self._pool.acquire()
        self._tx = self._conn.transaction(readonly=True)
        await self._tx.start()
        try:
            await self._conn.execute("SELECT pg_catalog.set_config('role', $1, true)", self._owner)
        except asyncpg.PostgresError as exc:
            await self.__aexit__(None, None, None)
            raise PlanError(
                INSUFFICIENT_PRIVILEGE,
                f'SieveDB cannot read a model view as its owner "{self._owner}": {exc}',
                hint="run SieveDB as a superuser, or grant its role membership in the view owner's role",
            ) from None
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            if self._tx is not None:
                await self._tx.rollback()
        finally:
            if self._conn is not None:
                await self._pool.release(self._conn)
            self._conn = self._tx = None

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        yield  # one transaction already

    @contextlib.asynccontextmanager
    async def stream(self, sql: str, args: tuple = (), *, chunk_rows: int = 1024, lenient: bool = False):
        cursor = await self._conn.cursor(sql, *args)

        async def chunks():
            while rows := await cursor.fetch(chunk_rows):
                yield [tuple(r) for r in rows]

        yield chunks()

    async def fetch(self, sql: str, args: tuple = (), *, lenient: bool = False) -> list[tuple]:
        return [tuple(r) for r in await self._conn.fetch(sql, *args)]

    async def fetchval(self, sql: str, args: tuple = (), *, lenient: bool = False) -> object:
        return await self._conn.fetchval(sql, *args)

    async def arm_statement_timeout(self) -> None:
        await self._client.arm_statement_timeout()

    def notice(self, message: str) -> None:
        self._client.notice(message)

    def progress(self, model: str, done: int, total: int | None, elapsed: float) -> None:
        self._client.progress(model, done, total, elapsed)
