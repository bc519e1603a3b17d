"""Model DDL: keeps ``sieve.models``, the caches and Postgres's catalog consistent.

- ``CREATE [OR REPLACE] FUNCTION … LANGUAGE onnx``: SieveDB runs it (Postgres cannot), outside
  any transaction block: the model's cache and catalog row are SieveDB's, on its own connection.
- ``DROP FUNCTION`` / ``ALTER FUNCTION … RENAME TO`` of a model, and drops that may take model
  functions or views with them (``… CASCADE``, ``DROP OWNED``): the client's statement goes to
  Postgres as it came, so privileges, CASCADE / RESTRICT, IF EXISTS, overloads and argument lists
  are Postgres's to judge and its answer is the client's; once it has answered, SieveDB follows
  what it did (planner/reconcile.py) and reloads the planner. Inside a transaction block that
  would stay open, a later ROLLBACK could undo what SieveDB followed: refused (25001).
- ``ALTER FUNCTION … SET SCHEMA`` of a model: refused (0A000), models live in schema public; a
  plain function given a model's name (CREATE, CREATE OR REPLACE, RENAME TO) is refused (42723):
  SieveDB finds models by name (planner/ddl_checks.py).
- ``ALTER FUNCTION … OWNER TO``, other ALTER FUNCTION actions and ``COMMENT ON FUNCTION``:
  Postgres's business, forwarded (transactional, nothing of SieveDB's changes). SieveDB writes
  its own comment on the functions it installs and rewrites it (new version, rename) only while
  it is still its own: a user's COMMENT ON wins. A new version in place resets ALTER FUNCTION
  settings (COST, volatility), as CREATE OR REPLACE FUNCTION does in Postgres.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import asyncpg
from pglast import ast

from inference.errors import ModelLoadError, ModelNotFoundError
from inference.signature import read_signature
from planner.ddl_checks import is_postgres_own, may_change_functions, vet
from planner.install import grant_sql, install_sql, is_own_comment, replaces_in_place, signature_sql
from planner.model_ddl import is_model_function, read_create
from planner.model_spec import INVALID_DEFINITION, ModelSpec, bind_signature, missing_file, resolve_path
from planner.outcome import Done, Failed, Forward, Outcome, PlanError, SessionPort
from planner.privileges import (
    refuse_in_transaction,
    require_free_name,
    require_model_admin,
    require_owner,
)
from planner.reconcile import COMMENT, LEAVE, apply_fix, find_fixes

if TYPE_CHECKING:
    from planner.planner import Planner

log = logging.getLogger("sievedb.planner.lifecycle")

NEXT_MODEL_ID = "SELECT nextval('sieve.model_ids')"
CATALOG_LOCK = 0x5133_7EDC  # advisory lock: one server at a time changes models' storage
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

    # -- at start -----------------------------------------------------------------------------

    async def reinstall_stale(self) -> None:
        """The start hook. First follow what happened to model functions while SieveDB was away
        (a dropped one must not come back), then re-install models whose cache table is missing:
        after the upgrade to per-model ids and SHA-256 keys (migration 0006 drops the old caches),
        their SQL functions still read the old tables. Serialised by an advisory lock: servers
        sharing one Postgres start together."""
        if await self.reconcile(logging.WARNING):  # done over a direct connection, say
            await self.planner.refresh()
        dbs = self.planner.dbs
        stale = await dbs.read.fetch(STALE_MODELS)
        if not stale:
            return
        async with dbs.write.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CATALOG_LOCK)
            for row in await conn.fetch(STALE_MODELS):
                spec = self.catalog.get(row["name"])
                if spec is None:
                    continue
                try:
                    async with conn.transaction():  # a savepoint: one broken model spoils no other
                        await _install(conn, spec, spec)
                except asyncpg.PostgresError as exc:
                    log.error("could not re-install model %s: %s", spec.name, exc)
                    continue
                log.info("model re-installed name=%s version=%d", spec.name, spec.version)
        await self.planner.refresh()

    async def reconcile(self, level: int = logging.INFO) -> int:
        """Bring ``sieve.models`` and the caches in line with the functions Postgres has; the
        number of models changed (see planner/reconcile.py). ``level``: how loudly to say what
        changed (WARNING where it was done behind SieveDB's back). A failure is logged, not
        raised: the next reconcile catches up."""
        try:
            async with self.planner.dbs.write.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", CATALOG_LOCK)
                fixes = await find_fixes(conn)
                for fix in fixes:
                    log.log(logging.ERROR if fix.action == LEAVE else level, "%s", fix.why)
                    await apply_fix(conn, fix)
        except (asyncpg.PostgresError, OSError) as exc:
            log.error("could not reconcile sieve.models with Postgres's functions: %s", exc)
            return 0
        return sum(1 for fix in fixes if fix.action != LEAVE)

    # -- statements ---------------------------------------------------------------------------

    async def run(self, statements: list, port: SessionPort) -> Outcome | None:
        """The outcome of statements that hold model DDL; None when they hold none (a false
        positive of the classifier's text match): the planner then plans them as a query."""
        if any(is_model_function(stmt) for stmt in statements):
            if len(statements) != 1:
                return Failed(
                    FEATURE_NOT_SUPPORTED,
                    "put CREATE FUNCTION ... LANGUAGE onnx (or labels) in a statement of its own",
                    hint="SieveDB runs it, not Postgres: send it as a query string of its own",
                )
            return await self._create(statements[0], port)
        if all(is_postgres_own(stmt) for stmt in statements):
            return Forward()
        if not any(may_change_functions(stmt) for stmt in statements):
            return None
        await self.catalog.reload()  # another front-end may have changed models
        if not await vet(statements, port, self.catalog):
            return None
        return Forward(after=self._follow)

    async def _follow(self) -> None:
        """Once Postgres has answered the client's statement: follow what it did (nothing when
        it failed) and reload the planner. The client's statement is done either way: a failure
        here is logged, and healed by the next reconcile (any model DDL, or a restart)."""
        changed = await self.reconcile()
        if changed:
            log.info("models changed by the statement: %d", changed)
        try:
            await self.planner.refresh()
        except Exception:  # the session must go on: the next refresh catches up
            log.exception("could not reload the model catalog")

    async def _create(self, stmt: ast.CreateFunctionStmt, port: SessionPort) -> Outcome:
        request = read_create(stmt)
        spec = request.spec
        refuse_in_transaction(port, f"CREATE FUNCTION ... LANGUAGE {spec.language}")
        owner = await require_model_admin(port, spec.name)  # before any file is looked at
        # done behind SieveDB's back since its last look: a model whose function is gone is no
        # previous version
        await self.reconcile(logging.WARNING)
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
        keep = signature_sql(previous, with_names=False) if previous is not None else None
        await require_free_name(port, spec.name, set(), keep)
        if not spec.is_labels:  # a labels function has no file: its options were checked when read
            await self._load(spec)
        spec.version = _next_version(previous, spec)
        spec.id = previous.id if previous is not None else await self.planner.db.fetchval(NEXT_MODEL_ID)
        try:
            async with self.planner.dbs.write.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", CATALOG_LOCK)
                await _install(conn, spec, previous)
                for step in grant_sql(spec, owner):
                    await conn.execute(step)
        except asyncpg.PostgresError as exc:
            raise PlanError(getattr(exc, "sqlstate", None) or "XX000", str(exc)) from None
        await self.planner.refresh()
        log.info("model registered name=%s version=%d path=%s", spec.name, spec.version, spec.path)
        if previous is not None and spec.version != previous.version:
            # assertions over the old version's outputs are re-evaluated over the new version's
            self.planner.assertions.monitor({spec.name}, port)
        return Done("CREATE FUNCTION")

    async def _load(self, spec: ModelSpec) -> None:
        """Find the model file (inside --models-dir) and bind the declaration to its signature."""
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


async def _install(conn: asyncpg.Connection, spec: ModelSpec, previous: ModelSpec | None) -> None:
    """Install ``spec`` (replacing ``previous``), keeping a comment the user wrote."""
    keep_comment = False
    if replaces_in_place(previous, spec):
        comment = await conn.fetchval(COMMENT, signature_sql(previous, with_names=False))
        keep_comment = not is_own_comment(comment)
    await conn.execute(install_sql(spec, previous, comment=not keep_comment))


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
