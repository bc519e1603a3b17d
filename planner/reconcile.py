"""Keeping ``sieve.models`` in step with Postgres's catalog.

Postgres decides DROP and ALTER FUNCTION (privileges, CASCADE, overloads); SieveDB follows what
it did. A model whose function is gone (dropped, directly or by CASCADE / DROP OWNED, or behind
SieveDB's back over a direct connection) is forgotten with its caches, as DROP FUNCTION of the
model would have. A model whose function was renamed is followed: the function is found again by
its body, which reads the model version's own cache table, so an OID changed by a dump and
restore misleads nothing. A function moved out of schema public, or two candidates, are only
logged: SieveDB cannot tell which to follow.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import asyncpg

from planner.install import body_mark, comment_sql, drop_sql, is_own_comment, rename_sql, signature_sql
from planner.model_spec import ModelSpec

log = logging.getLogger("sievedb.planner.reconcile")

FORGET = "forget"
FOLLOW = "follow"  # the function was renamed: the model takes its new name
LEAVE = "leave"  # SieveDB cannot tell what happened: logged, for a person to decide

MODELS = "SELECT id, name, path, content_hash, version, signature, options FROM sieve.models ORDER BY id"
# For each model (its regprocedure text, argument types, body mark): is the function there under
# its name, and if not, where do functions with the same argument types and its body live now.
FUNCTIONS = """
SELECT s.present, coalesce(c.schemas, '{}') AS schemas, coalesce(c.names, '{}') AS names
FROM (SELECT u.*, pg_catalog.to_regprocedure(u.proc) IS NOT NULL AS present
      FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]),
                      pg_catalog.unnest($3::text[])) WITH ORDINALITY AS u(proc, args, mark, i)) s
LEFT JOIN LATERAL (
    SELECT pg_catalog.array_agg(n.nspname::text) AS schemas, pg_catalog.array_agg(p.proname::text) AS names
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE NOT s.present
      AND pg_catalog.strpos(p.prosrc, s.mark) > 0
      AND pg_catalog.to_regprocedure(pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, s.args))
          OPERATOR(pg_catalog.=) p.oid::pg_catalog.regprocedure
) c ON true
ORDER BY s.i
"""
COMMENT = "SELECT pg_catalog.obj_description(pg_catalog.to_regprocedure($1), 'pg_proc')"


@dataclass(frozen=True)
class Fix:
    spec: ModelSpec
    action: str  # FORGET | FOLLOW | LEAVE
    why: str
    new_name: str | None = None


def decide(
    spec: ModelSpec, present: bool, schemas: list[str], names: list[str], taken: set[str]
) -> Fix | None:
    """What to do about one model, given where its function is (pure: tested without Postgres);
    None when its function is where the catalog says."""
    if present:
        return None
    name = spec.name
    if not names:
        return Fix(spec, FORGET, f"model {name}: its function is gone; forgetting the model and its caches")
    if len(names) > 1:
        found = ", ".join(f"{s}.{n}" for s, n in zip(schemas, names, strict=True))
        return Fix(
            spec, LEAVE, f"model {name}: its function is gone and several functions read its cache: {found}"
        )
    if schemas[0] != "public":
        return Fix(
            spec, LEAVE, f"model {name}: its function moved to schema {schemas[0]}; models live in public"
        )
    if names[0] in taken:
        return Fix(spec, LEAVE, f"model {name}: its function is now {names[0]}, the name of another model")
    return Fix(spec, FOLLOW, f"model {name}: its function was renamed to {names[0]}; following it", names[0])


async def find_fixes(conn: asyncpg.Connection) -> list[Fix]:
    specs = []
    for row in await conn.fetch(MODELS):
        try:
            specs.append(ModelSpec.from_row(dict(row)))
        except (KeyError, TypeError, ValueError):
            log.exception("unreadable catalog row for model %s; leaving it", row["name"])
    if not specs:
        return []
    rows = await conn.fetch(
        FUNCTIONS,
        [signature_sql(s, with_names=False) for s in specs],
        [", ".join(t.sql for _, t in s.args) for s in specs],
        [body_mark(s) for s in specs],
    )
    taken = {s.name for s in specs}
    fixes = []
    for spec, row in zip(specs, rows, strict=True):
        fix = decide(spec, row["present"], list(row["schemas"]), list(row["names"]), taken)
        if fix is not None:
            fixes.append(fix)
            taken.add(fix.new_name or spec.name)
    return fixes


async def apply_fix(conn: asyncpg.Connection, fix: Fix) -> None:
    """One fix, in a savepoint of the caller's transaction: one that fails spoils no other."""
    if fix.action == LEAVE:
        return
    try:
        async with conn.transaction():
            if fix.action == FORGET:
                await conn.execute(drop_sql(fix.spec, function=False))
            else:
                await _follow_rename(conn, fix.spec, fix.new_name)
    except asyncpg.PostgresError as exc:
        log.error("could not reconcile model %s (%s): %s", fix.spec.name, fix.action, exc)


async def _follow_rename(conn: asyncpg.Connection, spec: ModelSpec, new_name: str) -> None:
    renamed = dataclasses.replace(spec, name=new_name)
    update, body = rename_sql(renamed)
    await conn.execute(update)
    try:
        async with conn.transaction():
            # the body names the model only in its 'not materialized' error: worth a try, not a failure
            await conn.execute(body)
    except asyncpg.PostgresError as exc:
        log.warning(
            "model %s renamed to %s; its function body keeps the old name: %s", spec.name, new_name, exc
        )
    if is_own_comment(await conn.fetchval(COMMENT, signature_sql(renamed, with_names=False))):
        await conn.execute(comment_sql(renamed))
