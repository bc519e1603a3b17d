"""Front-ends over one Postgres, as pgbouncer peers: a CancelRequest that reaches the wrong one
(a TCP load balancer in front) is forwarded to the one that issued the key.

Each front-end registers in ``sieve.frontends`` (migration 0015) with a small id and the address
peers reach it at, and keeps its row alive with a heartbeat; rows without one for ``STALE_S``
are ignored and deleted. The id travels in the first byte of the secret key the front-end gives
its clients: ``id << 1 | forwarded``. A front-end that does not know a key forwards it once, with
the forwarded bit set, to the front-end its id names; a forwarded key is never forwarded again.

The key keeps the length Postgres gave (4 bytes in protocol 3.0, up to 256 in 3.2), so it stays
within both versions' rules; in 3.0 that leaves 24 random bits, against Postgres's 32.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import asyncpg

from server import messages

log = logging.getLogger("sievedb.server.peers")

MAX_ID = 127  # ids fit the key's first byte beside the forwarded bit
FORWARDED = 0x01
HEARTBEAT_S = 2.0
STALE_S = 10.0  # a registration this long without a heartbeat is a front-end that is gone
FORWARD_TIMEOUT_S = 5.0

_REGISTER_LOCK = 0x5133_7EDD  # advisory lock: two front-ends starting together pick distinct ids
_DELETE_STALE = "DELETE FROM sieve.frontends WHERE heartbeat < now() - make_interval(secs => $1)"
_FREE_ID = (
    "SELECT min(i) FROM generate_series(1, $1::int) AS i "
    "WHERE NOT EXISTS (SELECT FROM sieve.frontends f WHERE f.id = i)"
)
_INSERT = "INSERT INTO sieve.frontends (id, address) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id"
_HEARTBEAT = "UPDATE sieve.frontends SET heartbeat = now(), address = $2 WHERE id = $1 RETURNING id"
_ADDRESS = (
    "SELECT address FROM sieve.frontends WHERE id = $1 AND heartbeat >= now() - make_interval(secs => $2)"
)


# -- keys -----------------------------------------------------------------------------------------


def issue_key(frontend_id: int, length: int) -> bytes:
    """A fresh secret key of ``length`` bytes that names front-end ``frontend_id`` (0: none)."""
    return bytes([frontend_id << 1]) + secrets.token_bytes(length - 1)


def key_owner(key: bytes) -> int:
    """The id of the front-end that issued ``key`` (0: unknown)."""
    return key[0] >> 1 if key else 0


def was_forwarded(key: bytes) -> bool:
    return bool(key) and bool(key[0] & FORWARDED)


def as_issued(key: bytes) -> bytes:
    """The key as its front-end issued it (the forwarded bit cleared)."""
    return bytes([key[0] & ~FORWARDED]) + key[1:] if key else key


def as_forwarded(key: bytes) -> bytes:
    return bytes([key[0] | FORWARDED]) + key[1:]


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for an IPv6 host) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"advertise address {address!r} is not host:port")
    return host.strip("[]"), int(port)


# -- the registry ---------------------------------------------------------------------------------


class Peers:
    """This front-end's registration, its heartbeat and the forwarding of others' cancels."""

    def __init__(self, pool: asyncpg.Pool, address: str) -> None:
        split_address(address)  # refuse a bad --advertise-address before anything is written
        self._pool = pool
        self.address = address
        self.id = 0
        self._heartbeat: asyncio.Task | None = None
        self._forwards: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self._register()
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        for task in list(self._forwards):
            task.cancel()
        if self.id:
            with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                await self._pool.execute("DELETE FROM sieve.frontends WHERE id = $1", self.id)

    async def _register(self, wanted: int | None = None) -> None:
        """Take ``wanted`` (the id this front-end had, when its row was deleted while it was
        away) if it is free, else the smallest free id."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _REGISTER_LOCK)
            await conn.execute(_DELETE_STALE, STALE_S)
            got = await conn.fetchval(_INSERT, wanted, self.address) if wanted else None
            if got is None:
                free = await conn.fetchval(_FREE_ID, MAX_ID)
                got = await conn.fetchval(_INSERT, free, self.address) if free is not None else None
        if got is None:
            log.error("no free front-end id (%d registered): cancels will not be forwarded here", MAX_ID)
            self.id = 0
            return
        if wanted and got != wanted:
            log.warning("front-end id %d was taken while this front-end was away; now %d", wanted, got)
        self.id = got
        log.info("front-end registered id=%d address=%s", self.id, self.address)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                alive = self.id and await self._pool.fetchval(_HEARTBEAT, self.id, self.address)
                if not alive:
                    await self._register(self.id or None)
                await self._pool.execute(_DELETE_STALE, STALE_S)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("front-end heartbeat failed: %s", exc)

    # -- forwarding -------------------------------------------------------------------------------

    def forward_cancel(self, pid: int, key: bytes) -> bool:
        """Forward a cancel for a key this front-end does not know to the peer that issued it;
        False when there is none to forward to (already forwarded, ours, or no such id)."""
        owner = key_owner(key)
        if was_forwarded(key) or owner == 0 or owner == self.id:
            return False
        task = asyncio.get_running_loop().create_task(self._forward(owner, pid, key))
        self._forwards.add(task)
        task.add_done_callback(self._forwards.discard)
        return True

    async def _forward(self, owner: int, pid: int, key: bytes) -> None:
        try:
            address = await self._pool.fetchval(_ADDRESS, owner, STALE_S)
            if address is None:
                log.info("cancel request for front-end %d: no live registration, dropped", owner)
                return
            host, port = split_address(address)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), FORWARD_TIMEOUT_S)
            try:
                writer.write(messages.cancel_request(pid, as_forwarded(key)))
                await writer.drain()
                await asyncio.wait_for(reader.read(), FORWARD_TIMEOUT_S)  # the peer closes when done
            finally:
                writer.close()
            log.info("cancel request pid=%d forwarded to front-end %d at %s", pid, owner, address)
        except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("could not forward a cancel request to front-end %d: %s", owner, exc)
