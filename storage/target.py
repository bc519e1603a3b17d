"""Where the backing Postgres is and how SieveDB itself logs in to it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse


@dataclass(frozen=True)
class BackendTarget:
    """A reachable Postgres: a TCP host or a unix-socket directory (a host starting with '/')."""

    host: str
    port: int
    user: str
    password: str | None
    database: str

    @property
    def is_unix(self) -> bool:
        return self.host.startswith("/")

    @property
    def socket_path(self) -> str:
        return f"{self.host}/.s.PGSQL.{self.port}"

    def asyncpg_kwargs(self) -> dict:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "ssl": False,
        }

    def describe(self) -> str:
        where = self.socket_path if self.is_unix else f"{self.host}:{self.port}"
        return f"{self.user}@{where}/{self.database}"


def parse_dsn(dsn: str) -> BackendTarget:
    """Parse ``postgresql://user:pass@host:port/db`` (``?host=/dir`` selects a unix socket)."""
    url = urlparse(dsn)
    if url.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"--postgres-dsn must start with postgresql://, got {dsn!r}")
    query = parse_qs(url.query)
    host = query.get("host", [url.hostname or "localhost"])[0]
    port = int(query.get("port", [url.port or 5432])[0])
    user = unquote(url.username) if url.username else query.get("user", ["postgres"])[0]
    password = unquote(url.password) if url.password else query.get("password", [None])[0]
    database = url.path.lstrip("/") or user
    return BackendTarget(host=host, port=port, user=user, password=password, database=database)
