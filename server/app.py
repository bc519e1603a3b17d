"""The listening server: accepts clients, owns the backing Postgres and the cancel-key table."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import resource
import ssl
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from planner.catalog_events import LISTENER_SETTINGS
from planner.classify import Classifier
from planner.lazy_pool import BackendUnavailable, LazyInferencePool
from planner.materialize import Databases
from planner.planner import Planner
from planner.planners import Planners
from server import hba, messages, tls
from server.activity import Activity
from server.backend import send_cancel
from server.http import WebFace
from server.http import check_config as check_web_config
from server.metrics import Metrics
from server.peers import Peers, as_issued, issue_key, split_address
from server.session import ClientSession
from storage.embedded import EmbeddedPostgres, EmbeddedSettings
from storage.migrations import migrate
from storage.pools import DatabasePools
from storage.target import BackendTarget, parse_dsn

log = logging.getLogger("sievedb.server")

# The planner's pools open all their connections at start and keep them, so that clients filling
# the backing Postgres never starve a model query (it would fail with "too many clients").
PLANNER_POOL_SIZE = 16
WRITER_POOL_SIZE = 4
# Backends beyond the pools and the clients: Postgres's superuser_reserved_connections (3 by
# default, unusable by other roles), SieveDB's own short connections (migration, checks) and the
# catalog listener (planner/catalog_events.py).
BACKEND_HEADROOM = 3 + 1 + 1


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
    tls_require: bool = False
    max_message_bytes: int = messages.FRAME_MAX_LEN
    max_connections: int = 100
    authentication_timeout: float = 60.0
    max_backend_connections: int = 300
    models_dir: Path = Path("models")
    max_model_bytes: int = 2 << 30
    inference_workers: int | None = None
    http_port: int | None = None  # the web face (server/http/): off unless set
    http_host: str = "127.0.0.1"
    ray_address: str | None = None  # inference on a Ray cluster (inference/ray_pool.py)
    ray_max_replicas: int | None = None
    advertise_address: str | None = None  # host:port peers forward CancelRequests to


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
        self.sessions: set[ClientSession] = set()  # every open client socket
        self.admitted = 0  # sessions past their startup packet: each holds a backend
        # Sockets still in startup are bounded too; each closes after authentication_timeout.
        self.socket_limit = 2 * config.max_connections + 16
        self.max_message_bytes = config.max_message_bytes
        self.ssl_context = self._ssl_context()
        self.embedded: EmbeddedPostgres | None = None
        self.backend_target: BackendTarget | None = None
        self._cancel_keys: dict[tuple[int, bytes], ClientSession] = {}
        self.peers: Peers | None = None  # the other front-ends over this Postgres (cancels)
        self.web: WebFace | None = None  # /label, /status, /metrics (--http-port)
        self.http_port: int | None = None  # its bound port
        self._listener: asyncio.base_events.Server | None = None
        self._stopped = asyncio.Event()
        # what /status and /metrics show (server.activity, server.metrics)
        self.metrics = Metrics(connections=lambda: self.admitted, pool=lambda: self.db)
        self.activity = Activity(self.cancel_session)
        self.activity.watch_sessions(lambda: tuple(self.sessions))

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._check_limits()
        self._check_open_door()
        self._check_advertise_address()
        check_web_config(self.config, self.ssl_context is not None)
        self.backend_target = await asyncio.to_thread(self._start_storage)
        await self._check_backend()
        await self._migrate()
        await self._start_planner()
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: ClientSession(self),
            self.config.host,
            self.config.port,
            reuse_address=True,
            backlog=1024,
            start_serving=False,  # registered first: every cancel key names this front-end
        )
        self.peers = Peers(self.db, self._advertise_address())
        await self.peers.start()
        await self._listener.start_serving()
        if self.config.http_port is not None:
            self.web = WebFace(self)
            await self.web.start()
            self.http_port = self.web.port  # the bound port (0 picks one)
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

    def _advertise_address(self) -> str:
        return self.config.advertise_address or f"{self._connect_host()}:{self.bound_port}"

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
            **connect,
            min_size=PLANNER_POOL_SIZE,
            max_size=PLANNER_POOL_SIZE,
            max_inactive_connection_lifetime=0,
            connection_class=PlannerConnection,
        )
        self.db_writer = await asyncpg.create_pool(
            **connect,
            min_size=WRITER_POOL_SIZE,
            max_size=WRITER_POOL_SIZE,
            max_inactive_connection_lifetime=0,
            connection_class=PlannerConnection,
        )
        try:
            self.inference = LazyInferencePool(
                workers=self.config.inference_workers,
                ray_address=self.config.ray_address,
                ray_max_replicas=self.config.ray_max_replicas,
            )
        except BackendUnavailable as exc:
            raise ConfigError(str(exc)) from None
        self.pools = DatabasePools(self.backend_target, PlannerConnection)
        self.pools.add(self.backend_target.database, self.db, self.db_writer)

        async def open_database(name: str) -> Databases:
            read, write = await self.pools.get(name)
            return Databases(read=read, write=write)

        async def connect(name: str) -> asyncpg.Connection:  # a catalog listener's own
            target = dataclasses.replace(self.backend_target, database=name)
            return await asyncpg.connect(**target.asyncpg_kwargs(), server_settings=LISTENER_SETTINGS)

        self.planners = Planners(
            open_database,
            self.inference,
            self.classifier,
            self.config.models_dir.resolve(),
            connect=connect,
            max_model_bytes=self.config.max_model_bytes,
            observer=self.metrics,
        )
        self.metrics.listen_to_inference()
        self.planner = await self.planners.get(self.backend_target.database)

    def _check_limits(self) -> None:
        config = self.config
        if config.max_connections < 1 or config.authentication_timeout <= 0:
            raise ConfigError("--max-connections and --authentication-timeout must be positive")
        if not 4 < config.max_message_bytes <= messages.FRAME_MAX_LEN:
            raise ConfigError(f"--max-message-bytes must be between 5 and {messages.FRAME_MAX_LEN}")
        needed = config.max_connections + PLANNER_POOL_SIZE + WRITER_POOL_SIZE + BACKEND_HEADROOM
        if not config.postgres_dsn and needed > config.max_backend_connections:
            raise ConfigError(
                f"--max-connections {config.max_connections} does not fit the embedded Postgres: "
                f"with the planner's {PLANNER_POOL_SIZE + WRITER_POOL_SIZE} connections and "
                f"{BACKEND_HEADROOM} reserved it needs --max-backend-connections {needed} or more"
            )
        # Each admitted session holds two descriptors (client, backend); startup sockets one.
        wanted = 2 * config.max_connections + self.socket_limit + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < wanted and (hard == resource.RLIM_INFINITY or hard > soft):
            soft = wanted if hard == resource.RLIM_INFINITY else min(hard, max(wanted, soft))
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if soft < wanted:
            raise ConfigError(
                f"--max-connections {config.max_connections} needs {wanted} file descriptors, "
                f"the limit is {soft} (raise ulimit -n or lower --max-connections)"
            )

    def _check_advertise_address(self) -> None:
        if self.config.advertise_address is not None:
            try:
                split_address(self.config.advertise_address)
            except ValueError as exc:
                raise ConfigError(f"--advertise-address: {exc}") from None

    def _check_open_door(self) -> None:
        """Before anything starts: the embedded cluster without a password trusts every role."""
        if self.config.postgres_dsn or is_loopback(self.config.host):
            return
        if self.config.embedded_password or self.config.allow_trust_remote:
            return
        raise ConfigError(
            f"refusing to listen on {self.config.host}: the embedded Postgres lets every role in "
            "without a password. Set one with --embedded-password-file (or SIEVEDB_PASSWORD), or "
            "pass --allow-trust-remote if this network is trusted."
        )

    async def _check_backend(self) -> None:
        """What only the running Postgres can tell: whether its pg_hba.conf admits relayed
        connections without a password (when listening beyond loopback), and whether
        --max-connections fits its max_connections."""
        conn = await asyncpg.connect(**self.backend_target.asyncpg_kwargs())
        try:
            if not is_loopback(self.config.host) and not self.config.allow_trust_remote:
                await self._check_backend_door(conn)
            row = await conn.fetchrow(
                "SELECT current_setting('max_connections')::int AS max,"
                " current_setting('superuser_reserved_connections')::int"
                " + current_setting('reserved_connections')::int AS reserved"
            )
        finally:
            await conn.close()
        needed = self.config.max_connections + PLANNER_POOL_SIZE + WRITER_POOL_SIZE + 1
        if needed > row["max"] - row["reserved"]:
            log.warning(
                "--max-connections %d and the planner's %d connections exceed the backing Postgres's "
                "max_connections %d (less %d reserved): clients may see its 'too many clients'",
                self.config.max_connections,
                PLANNER_POOL_SIZE + WRITER_POOL_SIZE,
                row["max"],
                row["reserved"],
            )

    async def _check_backend_door(self, conn: asyncpg.Connection) -> None:
        target = self.backend_target
        escape = "pass --allow-trust-remote if this network is trusted"
        try:
            rows = await conn.fetch(hba.RULES_QUERY)
            relay_address = None if target.is_unix else await conn.fetchval("SELECT host(inet_client_addr())")
        except asyncpg.PostgresError as exc:
            raise ConfigError(
                f"refusing to listen on {self.config.host}: cannot read the backing Postgres's "
                f"pg_hba_file_rules as {target.user} ({exc}), so cannot tell whether it lets relayed "
                f"clients in without a password; connect as a superuser, or {escape}."
            ) from exc
        rule = hba.passwordless_rule(hba.rules_from_rows(rows), target.is_unix, relay_address)
        if rule is not None:
            via = "its unix socket" if target.is_unix else f"TCP from {relay_address}"
            raise ConfigError(
                f"refusing to listen on {self.config.host}: the backing Postgres admits SieveDB's "
                f"relayed connections ({via}) without a password by {rule.describe()}. Require "
                f"a password there (scram-sha-256), or {escape}."
            )

    def _ssl_context(self) -> ssl.SSLContext | None:
        cert, key = self.config.tls_cert, self.config.tls_key
        if not cert and not key:
            if self.config.tls_require:
                raise ConfigError("--tls-require needs --tls-cert and --tls-key")
            return None
        if not (cert and key):
            raise ConfigError("--tls-cert and --tls-key must be given together")
        return tls.server_context(cert, key)

    async def serve_until_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, end every session with 57P01, stop the embedded Postgres."""
        if self._listener is not None:
            self._listener.close()
        if self.web is not None:
            await self.web.stop()
        for session in list(self.sessions):
            session.shutdown()
        await asyncio.sleep(0.05)  # let the closes flush
        self.metrics.stop_listening()
        if self.inference is not None:
            await self.inference.close()
        if self.peers is not None:
            await self.peers.close()
        if getattr(self, "planners", None) is not None:
            await self.planners.close()
        if getattr(self, "pools", None) is not None:
            await self.pools.close()
        for pool in (self.db, self.db_writer):
            if pool is not None:
                await pool.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        self._stopped.set()
        log.info("SieveDB stopped")

    # -- sessions and cancellation ------------------------------------------------------------

    def register_cancel_key(self, session: ClientSession, pid: int, key_length: int) -> tuple[int, bytes]:
        key = (pid, issue_key(self.peers.id if self.peers else 0, key_length))
        self._cancel_keys[key] = session
        return key

    def admit(self, session: ClientSession) -> bool:
        """Count a session that is about to spend a backend; False when the house is full."""
        if self.admitted >= self.config.max_connections:
            return False
        self.admitted += 1
        session.admitted = True
        return True

    def forget(self, session: ClientSession) -> None:
        self.sessions.discard(session)
        if session.admitted:
            session.admitted = False
            self.admitted -= 1
        if session.cancel_key is not None:
            self._cancel_keys.pop(session.cancel_key, None)

    def request_cancel(self, pid: int, key: bytes) -> None:
        session = self._cancel_keys.get((pid, as_issued(key)))
        if session is None and self.peers is not None and self.peers.forward_cancel(pid, key):
            return  # another front-end's key
        if session is None or session.backend_key is None:
            log.info("cancel request for unknown key pid=%d ignored", pid)
            return
        log.info("cancel request pid=%d user=%s", pid, session.user)
        self.cancel_session(session)

    def cancel_session(self, session: ClientSession) -> None:
        """Cancel what the session runs now: the planner's work, or else Postgres's."""
        if session.cancel_planned("user request") or session.backend_key is None:
            return
        asyncio.get_running_loop().create_task(self._send_cancel(*session.backend_key))

    async def _send_cancel(self, pid: int, key: bytes) -> None:
        try:
            await send_cancel(self.backend_target, pid, key)
        except (TimeoutError, OSError) as exc:
            log.warning("could not deliver cancel to backend pid=%d: %s", pid, exc)
