"""The listening server: accepts clients, owns the backing Postgres and the cancel-key table."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from planner.classify import Classifier
from planner.lazy_pool import LazyInferencePool
from planner.materialize import Databases
from planner.planner import Planner
from server import messages
from server.backend import send_cancel
from server.session import ClientSession
from storage.embedded import EmbeddedPostgres, EmbeddedSettings
from storage.migrations import migrate
from storage.target import BackendTarget, parse_dsn

log = logging.getLogger("sievedb.server")


class PlannerConnection(asyncpg.Connection):
    """The planner's own connections never LISTEN, take advisory locks or change settings
    outside transactions, so the pool's reset on release (a round trip per statement) is moot."""

    def get_reset_query(self) -> str:
        return ""


class ConfigError(Exception):
    """The server was asked to start in a way it refuses to."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5433
    data_dir: Path = Path(".sievedb")
    postgres_dsn: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    embedded_password: str | None = None
    allow_trust_remote: bool = False
    max_message_bytes: int = messages.FRAME_MAX_LEN
    max_backend_connections: int = 300
    models_dir: Path = Path("models")
    inference_workers: int | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SieveServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.classifier = Classifier()
        self.planner: Planner | None = None
        self.inference: LazyInferencePool | None = None
        self.db: asyncpg.Pool | None = None
        self.db_writer: asyncpg.Pool | None = None
        self.sessions: set[ClientSession] = set()
        self.max_message_bytes = config.max_message_bytes
        self.ssl_context = self._ssl_context()
        self.embedded: EmbeddedPostgres | None = None
        self.backend_target: BackendTarget | None = None
        self._cancel_keys: dict[tuple[int, bytes], ClientSession] = {}
        self._listener: asyncio.base_events.Server | None = None
        self._stopped = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._check_open_door()
        self.backend_target = await asyncio.to_thread(self._start_storage)
        await self._migrate()
        await self._start_planner()
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: ClientSession(self),
            self.config.host,
            self.config.port,
            reuse_address=True,
            backlog=1024,
        )
        port = self.bound_port
        log.info(
            "SieveDB listening on %s:%d (backing Postgres %s, tls=%s)",
            self.config.host,
            port,
            self.backend_target.describe(),
            self.ssl_context is not None,
        )
        log.info(
            "connect with: psql -h %s -p %d -U %s %s",
            self._connect_host(),
            port,
            self.backend_target.user,
            self.backend_target.database,
        )

    @property
    def bound_port(self) -> int:
        return self._listener.sockets[0].getsockname()[1]

    def _connect_host(self) -> str:
        return "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "") else self.config.host

    def _start_storage(self) -> BackendTarget:
        if self.config.postgres_dsn:
            return parse_dsn(self.config.postgres_dsn)
        settings = EmbeddedSettings(
            data_dir=self.config.data_dir,
            password=self.config.embedded_password,
            max_connections=self.config.max_backend_connections,
        )
        self.embedded = EmbeddedPostgres(settings)
        return self.embedded.start()

    async def _migrate(self) -> None:
        conn = await asyncpg.connect(**self.backend_target.asyncpg_kwargs())
        try:
            version = await migrate(conn)
        finally:
            await conn.close()
        log.info("sieve catalog at schema version %d", version)

    async def _start_planner(self) -> None:
        connect = self.backend_target.asyncpg_kwargs()
        self.db = await asyncpg.create_pool(
            **connect, min_size=1, max_size=16, connection_class=PlannerConnection
        )
        self.db_writer = await asyncpg.create_pool(
            **connect, min_size=1, max_size=4, connection_class=PlannerConnection
        )
        self.inference = LazyInferencePool(workers=self.config.inference_workers)
        dbs = Databases(read=self.db, write=self.db_writer)
        self.planner = Planner(dbs, self.inference, self.classifier, self.config.models_dir.resolve())
        await self.planner.start()

    def _check_open_door(self) -> None:
        if self.config.postgres_dsn or is_loopback(self.config.host):
            return
        if self.config.embedded_password or self.config.allow_trust_remote:
            return
        raise ConfigError(
            f"refusing to listen on {self.config.host}: the embedded Postgres lets every role in "
            "without a password. Set one with --embedded-password-file (or SIEVEDB_PASSWORD), or "
            "pass --allow-trust-remote if this network is trusted."
        )

    def _ssl_context(self) -> ssl.SSLContext | None:
        cert, key = self.config.tls_cert, self.config.tls_key
        if not cert and not key:
            return None
        if not (cert and key):
            raise ConfigError("--tls-cert and --tls-key must be given together")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        return context

    async def serve_until_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, end every session with 57P01, stop the embedded Postgres."""
        if self._listener is not None:
            self._listener.close()
        for session in list(self.sessions):
            session.shutdown()
        await asyncio.sleep(0.05)  # let the closes flush
        if self.inference is not None:
            await self.inference.close()
        for pool in (self.db, self.db_writer):
            if pool is not None:
                await pool.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        self._stopped.set()
        log.info("SieveDB stopped")

    # -- sessions and cancellation ------------------------------------------------------------

    def register_cancel_key(self, session: ClientSession, pid: int, key_length: int) -> tuple[int, bytes]:
        key = (pid, secrets.token_bytes(key_length))
        self._cancel_keys[key] = session
        return key

    def forget(self, session: ClientSession) -> None:
        self.sessions.discard(session)
        if session.cancel_key is not None:
            self._cancel_keys.pop(session.cancel_key, None)

    def request_cancel(self, pid: int, key: bytes) -> None:
        session = self._cancel_keys.get((pid, key))
        if session is None or session.backend_key is None:
            log.info("cancel request for unknown key pid=%d ignored", pid)
            return
        log.info("cancel request pid=%d user=%s", pid, session.user)
        if session.cancel_planned("user request"):
            return
        asyncio.get_running_loop().create_task(self._send_cancel(*session.backend_key))

    async def _send_cancel(self, pid: int, key: bytes) -> None:
        try:
            await send_cancel(self.backend_target, pid, key)
        except (TimeoutError, OSError) as exc:
            log.warning("could not deliver cancel to backend pid=%d: %s", pid, exc)
