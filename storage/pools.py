"""SieveDB's own privileged connections, one pair of pools per database of the cluster.

They run only SieveDB's fixed statements (catalog reads, cache writes, the query log); SQL
derived from a client's statement runs in that client's own session instead. The pools of the
server's main database are opened at start; any other database's on its first use, after its
``sieve`` schema has been migrated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import asyncpg

from storage.migrations import migrate
from storage.target import BackendTarget

log = logging.getLogger("sievedb.storage.pools")

READ_POOL_SIZE = 2
WRITE_POOL_SIZE = 4


class DatabasePools:
    def __init__(self, target: BackendTarget, connection_class: type[asyncpg.Connection]) -> None:
        self._target = target
        self._connection_class = connection_class
        self._pools: dict[str, tuple[asyncpg.Pool, asyncpg.Pool]] = {}
        self._lock = asyncio.Lock()
        self._owned: list[asyncpg.Pool] = []

    def add(self, database: str, read: asyncpg.Pool, write: asyncpg.Pool) -> None:
        """Pools opened elsewhere (the main database's, sized for a full house)."""
        self._pools[database] = (read, write)

    async def get(self, database: str) -> tuple[asyncpg.Pool, asyncpg.Pool]:
        found = self._pools.get(database)
        if found is not None:
            return found
        async with self._lock:
            if database not in self._pools:
                self._pools[database] = await self._open(database)
        return self._pools[database]

    async def _open(self, database: str) -> tuple[asyncpg.Pool, asyncpg.Pool]:
        connect = dataclasses.replace(self._target, database=database).asyncpg_kwargs()
        conn = await asyncpg.connect(**connect)
        try:
            version = await migrate(conn)
        finally:
            await conn.close()
        log.info("database opened database=%s schema_version=%d", database, version)
        pools = []
        for size in (READ_POOL_SIZE, WRITE_POOL_SIZE):
            pools.append(
                await asyncpg.create_pool(
                    **connect, min_size=1, max_size=size, connection_class=self._connection_class
                )
            )
        self._owned += pools
        return pools[0], pools[1]

    async def close(self) -> None:
        """Close the pools opened here (those given to ``add`` stay their owner's)."""
        for pool in self._owned:
            await pool.close()
        self._owned.clear()
        self._pools.clear()
