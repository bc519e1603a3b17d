"""What SieveDB checks before DROP / ALTER / CREATE of functions goes on to Postgres.

Postgres judges the statement itself (privileges, CASCADE, overloads, argument lists); SieveDB
refuses only what it could not follow afterwards: a model moved out of schema public (0A000),
a name a model already has given to another function (42723: SieveDB finds models by name),
model DDL whose fate a later COMMIT or ROLLBACK decides (25001), and a model call sent in the
same query string (0A000: it would go to Postgres unplanned). Names are resolved by Postgres in
the client's session (its search_path, its overloads).
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast
from pglast.enums import ObjectType
from pglast.stream import RawStream

from planner.catalog import ModelCatalog
from planner.classify import Classifier, Route
from planner.function_ddl import (
    RENAME,
    SET_SCHEMA,
    FunctionChange,
    FunctionRef,
    drops_dependents,
    read_function_change,
)
from planner.install import signature_sql
from planner.outcome import PlanError, SessionPort
from planner.privileges import DUPLICATE_FUNCTION, refuse_in_transaction, require_free_name

FEATURE_NOT_SUPPORTED = "0A000"
IN_FAILED_TRANSACTION = "25P02"

# Where each named function is, and whether it is the model of that name.
RESOLVE = """
SELECT n.nspname::text,
       coalesce(f.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(t.model)::pg_catalog.oid, false)
FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[]))
    WITH ORDINALITY AS t(lookup, how, model, i)
CROSS JOIN LATERAL (
    SELECT CASE WHEN t.how = 'args' THEN pg_catalog.to_regprocedure(t.lookup)::pg_catalog.oid
                ELSE pg_catalog.to_regproc(t.lookup)::pg_catalog.oid END AS oid) f
LEFT JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) f.oid
LEFT JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
ORDER BY t.i
"""
CURRENT_SCHEMA = "SELECT pg_catalog.current_schema()::text"
_FUNCTIONS = (ObjectType.OBJECT_FUNCTION, ObjectType.OBJECT_ROUTINE)
# Statements that define or drop but never evaluate an expression: they run no model.
_NEVER_RUN_MODELS = (
    ast.DropStmt,
    ast.DropOwnedStmt,
    ast.TransactionStmt,
    ast.RenameStmt,
    ast.AlterObjectSchemaStmt,
    ast.AlterOwnerStmt,
    ast.AlterFunctionStmt,
    ast.CommentStmt,
    ast.GrantStmt,
    ast.ViewStmt,
    ast.CreateFunctionStmt,
)


@dataclass(frozen=True)
class Resolved:
    schema: str | None  # where Postgres finds the function; None: nowhere
    is_model: bool


def is_postgres_own(stmt: ast.Node) -> bool:
    """ALTER FUNCTION … OWNER TO, other ALTER FUNCTION actions, COMMENT ON FUNCTION: Postgres's
    business, transactional, nothing of SieveDB's changes (ownership and grants are read from
    Postgres when needed). A new version in place resets ALTER FUNCTION settings, as CREATE OR
    REPLACE FUNCTION does."""
    if isinstance(stmt, ast.AlterFunctionStmt):
        return True
    if isinstance(stmt, ast.AlterOwnerStmt):
        return stmt.objectType in _FUNCTIONS
    return isinstance(stmt, ast.CommentStmt) and stmt.objtype in _FUNCTIONS


def may_change_functions(stmt: ast.Node) -> bool:
    """Cheap, before anything is asked: whether ``vet`` has anything to look at."""
    return (
        isinstance(stmt, ast.CreateFunctionStmt)
        or read_function_change(stmt) is not None
        or drops_dependents(stmt)
    )


async def vet(statements: list, port: SessionPort, catalog: ModelCatalog) -> bool:
    """Raise PlanError for what SieveDB could not follow; True when SieveDB must follow the
    statements once Postgres has run them, False when they cannot touch a model."""
    changes = [c for c in map(read_function_change, statements) if c is not None]
    created = [n for n in map(_created_in_public, statements) if n is not None and catalog.get(n[1])]
    named = any(catalog.get(r.name) for c in changes for r in c.targets)
    taking = any(c.new_name in catalog.names for c in changes if c.action == RENAME)
    if not (named or taking or created or any(drops_dependents(s) for s in statements)):
        return False
    if created:
        await _refuse_created_over(created, port)
    refs = [r for c in changes for r in c.targets]
    where = dict(zip(refs, await _resolve(refs, port, catalog), strict=True)) if refs else {}
    touching = [c for c in changes if any(where[r].is_model for r in c.targets)]
    if touching:
        models = sorted({r.name for c in touching for r in c.targets if where[r].is_model})
        action = "ALTER FUNCTION ... RENAME TO" if touching[0].action == RENAME else "DROP FUNCTION"
        refuse_in_transaction(port, f"{action} of model function {', '.join(models)}", statements)
    for change in changes:
        await _check_change(change, where, port, catalog)
    if len(statements) > 1:
        _refuse_planned_neighbours(statements, catalog)
    return True


async def _resolve(refs: list[FunctionRef], port: SessionPort, catalog: ModelCatalog) -> list[Resolved]:
    models = [catalog.get(r.name) for r in refs]
    try:
        rows = await port.fetch(
            RESOLVE,
            (
                [r.lookup for r in refs],
                ["args" if r.with_args else "name" for r in refs],
                [None if m is None else signature_sql(m, with_names=False) for m in models],
            ),
        )
    except PlanError as exc:
        if exc.sqlstate != IN_FAILED_TRANSACTION:
            raise
        # Nothing can be asked in a failed block; take each name of a model for the model (the
        # statements may end the block first: ROLLBACK; DROP FUNCTION ...).
        return [Resolved("public", m is not None) for m in models]
    return [Resolved(schema, bool(is_model)) for schema, is_model in rows]


async def _check_change(
    change: FunctionChange, where: dict[FunctionRef, Resolved], port: SessionPort, catalog: ModelCatalog
) -> None:
    found = [where[r] for r in change.targets]
    models = [r.name for r in change.targets if where[r].is_model]
    if change.action == SET_SCHEMA and models and change.new_schema != "public":
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            f"model function {models[0]} cannot move to schema {change.new_schema}",
            detail="SieveDB keeps model functions in schema public.",
            hint=f"call it as public.{models[0]}(...) from anywhere, or DROP FUNCTION it and "
            "CREATE FUNCTION ... LANGUAGE onnx again",
        )
    if change.action != RENAME:
        return
    if models:
        await require_free_name(port, change.new_name, catalog.names)
    elif change.new_name in catalog.names and found[0].schema == "public":
        raise _taken(change.new_name)


def _created_in_public(stmt: ast.Node) -> tuple[bool, str] | None:
    """(qualified, name) of a function a CREATE FUNCTION / PROCEDURE may make in schema public."""
    if not isinstance(stmt, ast.CreateFunctionStmt):
        return None
    parts = [p.sval for p in stmt.funcname]
    if len(parts) == 1:
        return False, parts[0]
    return (True, parts[-1]) if parts[:-1] == ["public"] else None


async def _refuse_created_over(created: list[tuple[bool, str]], port: SessionPort) -> None:
    """A plain function of a model's name (a replacement or an overload) would be taken for the
    model: refused. An unqualified name is made in the session's current schema."""
    for qualified, name in created:
        if not qualified:
            try:
                schema = await port.fetchval(CURRENT_SCHEMA)
            except PlanError as exc:
                if exc.sqlstate != IN_FAILED_TRANSACTION:
                    raise
                schema = "public"
            if schema != "public":
                continue
        raise _taken(name, replacing=True)


def _taken(name: str, replacing: bool = False) -> PlanError:
    hint = "choose another name"
    if replacing:
        hint = (
            f"CREATE OR REPLACE FUNCTION {name}(...) ... LANGUAGE onnx loads a new version of the model; "
            f"DROP FUNCTION {name} first to make a plain function of that name"
        )
    return PlanError(
        DUPLICATE_FUNCTION,
        f"function {name} is a model function",
        detail="A model function's name is its own: SieveDB finds models by name.",
        hint=hint,
    )


def _refuse_planned_neighbours(statements: list, catalog: ModelCatalog) -> None:
    """Statements sent with model DDL are forwarded with it, unplanned: none may run a model
    (its inputs would never be materialized). Each is routed as if sent alone."""
    classifier = Classifier()
    classifier.set_models(catalog.names, set(catalog.views))
    for stmt in statements:
        if isinstance(stmt, _NEVER_RUN_MODELS):
            continue
        try:
            decision = classifier.classify(RawStream()(stmt))
        except Exception:  # a statement pglast cannot print: assume the worst
            decision = None
        if decision is None or (decision.route is Route.PLAN and not decision.lifecycle):
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                "a statement that uses a model cannot share a query string with DROP or ALTER "
                "FUNCTION of a model",
                hint="send the DROP or ALTER FUNCTION as a query string of its own",
            )
