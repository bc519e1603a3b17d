"""Who may do what with models: Postgres's own privileges, checked in the client's session.

Registering a model is like creating a function in an untrusted language: superusers and
members of ``sieve_model_admin`` only (the role is made by migration 0005). Running a model
follows the function's EXECUTE privilege (GRANT/REVOKE as for any function), checked before
any input is read or any model runs. Dropping or renaming one takes ownership (Postgres's
DROP and ALTER decide, in the client's session).
"""

from __future__ import annotations

from planner.function_ddl import leaves_block_open
from planner.install import signature_sql
from planner.model_spec import ModelSpec
from planner.outcome import PlanError, SessionPort

ADMIN_ROLE = "sieve_model_admin"
INSUFFICIENT_PRIVILEGE = "42501"
ACTIVE_SQL_TRANSACTION = "25001"
DUPLICATE_FUNCTION = "42723"

_MAY_REGISTER = (
    "SELECT current_user::text, coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r "
    "WHERE r.rolname = current_user), false) OR pg_catalog.pg_has_role(current_user, "
    f"'{ADMIN_ROLE}', 'MEMBER')"
)
_NAME_TAKEN = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
    "ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.proname = $1 "
    "AND p.oid IS DISTINCT FROM pg_catalog.to_regprocedure($2)::pg_catalog.oid)"
)
_NOT_EXECUTABLE = (
    "SELECT s FROM pg_catalog.unnest($1::pg_catalog.text[]) AS s "
    "WHERE NOT pg_catalog.has_function_privilege(s, 'EXECUTE')"
)


async def require_model_admin(port: SessionPort, name: str) -> str:
    """The client's current role, when it may register models; else 42501."""
    role, allowed = (await port.fetch(_MAY_REGISTER))[0]
    if not allowed:
        raise PlanError(
            INSUFFICIENT_PRIVILEGE,
            f"permission denied to register model {name}",
            detail="Registering a model loads a file into the server, like an untrusted language.",
            hint=f"ask a superuser to GRANT {ADMIN_ROLE} TO {role}",
        )
    return role


def refuse_in_transaction(port: SessionPort, what: str, statements: list | None = None) -> None:
    """Model DDL changes the model's caches and catalog row on SieveDB's own connection, where a
    ROLLBACK could not undo it: refused inside a transaction block, as CREATE DATABASE is. With
    ``statements`` (sent together), a block they close themselves (BEGIN; ...; COMMIT) is fine:
    it is decided by the time SieveDB follows what they did."""
    if statements is None:
        open_block = port.in_transaction
    else:
        open_block = leaves_block_open(statements, port.in_transaction)
    if open_block:
        raise PlanError(
            ACTIVE_SQL_TRANSACTION,
            f"{what} cannot run inside a transaction block",
            detail="SieveDB keeps a model's catalog row and caches outside the client's transaction: "
            "a later COMMIT or ROLLBACK could not take them along.",
            hint="run it on its own, outside BEGIN ... COMMIT",
        )


async def require_free_name(port: SessionPort, name: str, models: set[str], keep: str | None = None) -> None:
    """A model function keeps a name of its own: SieveDB finds models by name, so giving a model
    another function's name, or the reverse (an overload, for Postgres), is refused (42723).
    ``keep``: the regprocedure of a model being replaced, which may keep its name."""
    taken = name in models or await port.fetchval(_NAME_TAKEN, (name, keep))
    if taken:
        raise PlanError(
            DUPLICATE_FUNCTION,
            f"function {name} already exists in schema public",
            detail="A model function's name must be its own: SieveDB finds models by name.",
            hint="choose another name",
        )


async def require_execute(port: SessionPort, specs: list[ModelSpec]) -> None:
    """42501 unless the client may EXECUTE every model function of the statement."""
    names = {signature_sql(s, with_names=False): s.name for s in specs}
    if not names:
        return
    denied = await port.fetch(_NOT_EXECUTABLE, (list(names),))
    if denied:
        raise PlanError(INSUFFICIENT_PRIVILEGE, f"permission denied for function {names[denied[0][0]]}")


async def require_owner(port: SessionPort, spec: ModelSpec) -> None:
    """Replacing a model, like CREATE OR REPLACE FUNCTION, takes owning the function."""
    owns = await port.fetchval(
        "SELECT pg_catalog.pg_has_role(current_user, p.proowner, 'USAGE') "
        "FROM pg_catalog.pg_proc p WHERE p.oid = $1::pg_catalog.regprocedure",
        (signature_sql(spec, with_names=False),),
    )
    if owns is False:
        raise PlanError(INSUFFICIENT_PRIVILEGE, f"must be owner of function {spec.name}")
