"""Model DDL: CREATE [OR REPLACE] FUNCTION … LANGUAGE onnx, DROP FUNCTION, and re-installing
models whose storage an upgrade removed. Keeps ``sieve.models``, the caches and Postgres's
catalog consistent with each other."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import asyncpg

from inference.errors import ModelLoadError, ModelNotFoundError
from inference.signature import read_signature
from planner.install import drop_sql, grant_sql, install_sql, signature_sql
from planner.model_ddl import DropModel, is_onnx_function, read_create, read_drop
from planner.model_spec import INVALID_DEFINITION, ModelSpec, bind_signature, missing_file, resolve_path
from planner.outcome import Done, Failed, Forward, Outcome, PlanError, SessionPort
from planner.privileges import refuse_in_transaction, require_model_admin, require_owner

if TYPE_CHECKING:
    from planner.planner import Planner

log = logging.getLogger("sievedb.planner.lifecycle")

NEXT_MODEL_ID = "SELECT nextval('sieve.model_ids')"
REINSTALL_LOCK = 0x5133_7EDC  # advisory lock: one server at a time re-installs stale models
STALE_MODELS = (
    "SELECT name FROM sieve.models "
    "WHERE to_regclass(format('sieve_cache.m%s_v%s', id, version)) IS NULL ORDER BY id"
)
DUPLICATE_FUNCTION = "42723"
FEATURE_NOT_SUPPORTED = "0A000"


class ModelLifecycle:
    """The DDL half of a database's planner."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    @property
    def catalog(self):
        return self.planner.catalog

    async def reinstall_stale(self) -> None:
        """Re-install models whose cache table is missing: after the upgrade to per-model ids and
        SHA-256 keys (migration 0006 drops the old caches), their SQL functions still read the old
        tables. Serialised by an advisory lock: servers sharing one Postgres start together."""
        dbs = self.planner.dbs
        stale = await dbs.read.fetch(STALE_MODELS)
        if not stale:
            return
        async with dbs.write.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", REINSTALL_LOCK)
            for row in await conn.fetch(STALE_MODELS):
                spec = self.catalog.get(row["name"])
                if spec is None:
                    continue
                try:
                    async with conn.transaction():  # a savepoint: one broken model spoils no other
                        await conn.execute(install_sql(spec, spec))
                except asyncpg.PostgresError as exc:
                    log.error("could not re-install model %s: %s", spec.name, exc)
                    continue
                log.info("model re-installed name=%s version=%d", spec.name, spec.version)
        await self.planner.refresh()

    async def run(self, statements: list, port: SessionPort) -> Outcome:
        if len(statements) != 1:
            return Failed(
                FEATURE_NOT_SUPPORTED, "put CREATE/DROP FUNCTION of a model in a statement of its own"
            )
        stmt = statements[0]
        if is_onnx_function(stmt):
            return await self._create(stmt, port)
        drop = read_drop(stmt)
        if drop is not None:
            return await self._drop(drop, port)
        return Forward()

    async def _create(self, stmt, port: SessionPort) -> Outcome:
        request = read_create(stmt)
        spec = request.spec
        refuse_in_transaction(port, "CREATE FUNCTION ... LANGUAGE onnx")
        owner = await require_model_admin(port, spec.name)  # before any file is looked at
        await self.catalog.reload()
        previous = self.catalog.get(spec.name)
        if previous is not None and not request.replace:
            raise PlanError(
                DUPLICATE_FUNCTION,
                f"function {spec.name} already exists",
                hint="use CREATE OR REPLACE FUNCTION to load a new version",
            )
        if previous is not None:
            await require_owner(port, previous)
        declared = spec.path
        path = resolve_path(declared, self.planner.models_dir, self.planner.max_model_bytes)
        spec.path = str(path)
        try:
            # off the event loop: a large file is parsed in a child process (see read_signature)
            signature = await read_signature(path)
        except ModelNotFoundError:  # removed since resolve_path looked: the same answer as then
            raise missing_file(declared) from None
        except ModelLoadError as exc:
            raise PlanError(
                INVALID_DEFINITION, f'model file "{declared}" is not a loadable ONNX model: {exc}'
            ) from None
        spec.content_hash = signature.sha256
        bind_signature(spec, signature)
        spec.version = _next_version(previous, spec)
        spec.id = previous.id if previous is not None else await self.planner.db.fetchval(NEXT_MODEL_ID)
        await self._privileged(install_sql(spec, previous), *grant_sql(spec, owner))
        await self.planner.refresh()
        log.info("model registered name=%s version=%d path=%s", spec.name, spec.version, spec.path)
        return Done("CREATE FUNCTION")

    async def _drop(self, drop: DropModel, port: SessionPort) -> Outcome:
        await self.catalog.reload()
        specs = [self.catalog.get(n) for n in drop.names]
        if not any(specs):
            return Forward()  # not a model: an ordinary DROP FUNCTION for Postgres
        if not all(specs):
            return Failed(FEATURE_NOT_SUPPORTED, "drop model functions in a statement of their own")
        refuse_in_transaction(port, "DROP FUNCTION of a model")
        for spec in specs:
            # Postgres decides in the client's session: ownership, dependent views, CASCADE
            result = await port.run_sql(f"DROP FUNCTION {signature_sql(spec, with_names=False)}")
            if result.error is not None:
                return result.error
            await self._privileged(drop_sql(spec, function=False))
        await self.planner.refresh()
        return Done("DROP FUNCTION")

    async def _privileged(self, *scripts: str) -> None:
        """SieveDB's own catalog and cache DDL, in one transaction on its own connection."""
        try:
            async with self.planner.dbs.write.acquire() as conn, conn.transaction():
                for script in scripts:
                    await conn.execute(script)
        except asyncpg.PostgresError as exc:
            raise PlanError(getattr(exc, "sqlstate", None) or "XX000", str(exc)) from None


def _next_version(previous: ModelSpec | None, spec: ModelSpec) -> int:
    if previous is None:
        return 1
    same = (
        previous.content_hash == spec.content_hash
        and previous.options == spec.options
        and previous.args == spec.args
        and previous.bindings == spec.bindings
    )
    return previous.version if same else previous.version + 1
