"""The assertion DDL (not in Postgres's grammar, so read here, as the approximate clause is):

    CREATE ASSERTION name AS <select>
    CREATE ASSERTION name ON relation
        LEARNED FROM (expr AS feature [, ...]) [PER expr] KEY (column [, ...])
    DROP ASSERTION [IF EXISTS] name

A consistency assertion is any query: its columns other than ``severity`` are the key of a
flagged row; severity > 0 flags, 0 or NULL abstains (no severity column: every row flags, 1.0).
A learned assertion names numeric features of a relation's rows (a table, a view over models, a
table of human labels); their distribution is learned from the rows and unlikely rows flag.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.parser import ParseError, scan

from planner.outcome import PlanError
from planner.rewrite.ast_util import render
from planner.sqlstate import FEATURE_NOT_SUPPORTED, SYNTAX_ERROR

STATEMENT = re.compile(r"^\s*(create|drop)\s+assertion\b", re.IGNORECASE)
_NAME = re.compile(r'^\s*("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)', re.IGNORECASE)


@dataclass(frozen=True)
class Consistency:
    name: str
    query: str  # the SELECT, as written


@dataclass(frozen=True)
class Learned:
    name: str
    relation: str  # SQL of the FROM item
    features: tuple[tuple[str, str], ...]  # (name, SQL expression)
    per: str | None  # SQL of the grouping expression
    key: tuple[str, ...]  # SQL of the key columns


@dataclass(frozen=True)
class Drop:
    name: str
    if_exists: bool


def is_assertion_ddl(sql: str) -> bool:
    return STATEMENT.match(_strip_comments(sql)) is not None


def parse_assertion_ddl(sql: str) -> Consistency | Learned | Drop:
    text = _strip_comments(sql).strip().rstrip(";").strip()
    m = STATEMENT.match(text)
    if m is None:
        raise PlanError(SYNTAX_ERROR, "expected CREATE ASSERTION or DROP ASSERTION")
    rest = text[m.end() :]
    if m.group(1).lower() == "drop":
        return _drop(rest)
    name, rest = _name(rest, "CREATE ASSERTION")
    head = rest.lstrip()
    if re.match(r"as\b", head, re.IGNORECASE):
        return _consistency(name, head[2:])
    if re.match(r"on\b", head, re.IGNORECASE):
        return _learned(name, head[2:])
    raise PlanError(
        SYNTAX_ERROR,
        f"CREATE ASSERTION {name}: expected AS <query> or ON <relation> LEARNED FROM (...)",
        hint="CREATE ASSERTION name AS SELECT key, severity FROM ... | CREATE ASSERTION name ON t "
        "LEARNED FROM (expr AS feature, ...) [PER column] KEY (column, ...)",
    )


def _drop(rest: str) -> Drop:
    if_exists = False
    m = re.match(r"\s*if\s+exists\b", rest, re.IGNORECASE)
    if m:
        if_exists, rest = True, rest[m.end() :]
    name, rest = _name(rest, "DROP ASSERTION")
    if rest.strip():
        raise PlanError(SYNTAX_ERROR, f"DROP ASSERTION {name}: unexpected {rest.strip()[:40]!r}")
    return Drop(name, if_exists)


def _consistency(name: str, query: str) -> Consistency:
    try:
        statements = [raw.stmt for raw in parse_sql(query)]
    except ParseError as exc:
        raise PlanError(SYNTAX_ERROR, f"CREATE ASSERTION {name}: {exc}") from None
    if len(statements) != 1 or not isinstance(statements[0], ast.SelectStmt):
        raise PlanError(FEATURE_NOT_SUPPORTED, f"CREATE ASSERTION {name} AS needs one SELECT")
    return Consistency(name, query.strip())


def _learned(name: str, rest: str) -> Learned:
    m = re.search(r"\blearned\s+from\b", rest, re.IGNORECASE)
    if m is None:
        raise PlanError(SYNTAX_ERROR, f"CREATE ASSERTION {name} ON ...: expected LEARNED FROM (...)")
    relation = rest[: m.start()].strip()
    if not relation:
        raise PlanError(SYNTAX_ERROR, f"CREATE ASSERTION {name} ON: the relation is missing")
    features_sql, rest = _parenthesised(rest[m.end() :], f"CREATE ASSERTION {name}: LEARNED FROM")
    per = None
    m = re.match(r"\s*per\b", rest, re.IGNORECASE)
    if m:
        k = re.search(r"\bkey\b", rest, re.IGNORECASE)
        per = rest[m.end() : k.start() if k else len(rest)].strip()
        rest = rest[k.start() :] if k else ""
        if not per:
            raise PlanError(SYNTAX_ERROR, f"CREATE ASSERTION {name}: PER needs an expression")
    m = re.match(r"\s*key\b", rest, re.IGNORECASE)
    if m is None:
        raise PlanError(
            SYNTAX_ERROR,
            f"CREATE ASSERTION {name}: a learned assertion needs KEY (column, ...)",
            hint="the key names a flagged row, e.g. KEY (frame, box_id)",
        )
    key_sql, rest = _parenthesised(rest[m.end() :], f"CREATE ASSERTION {name}: KEY")
    if rest.strip():
        raise PlanError(SYNTAX_ERROR, f"CREATE ASSERTION {name}: unexpected {rest.strip()[:40]!r}")
    features = _features(name, features_sql)
    key = tuple(render(t.val) for t in _targets(f"SELECT {key_sql}", name, "KEY"))
    return Learned(name, relation, features, per, key)


def _features(name: str, sql: str) -> tuple[tuple[str, str], ...]:
    out = []
    for target in _targets(f"SELECT {sql}", name, "LEARNED FROM"):
        if target.name is None:
            raise PlanError(
                SYNTAX_ERROR,
                f"CREATE ASSERTION {name}: every feature needs a name ({render(target.val)} AS name)",
            )
        out.append((target.name, render(target.val)))
    return tuple(out)


def _targets(sql: str, name: str, what: str):
    try:
        return parse_sql(sql)[0].stmt.targetList
    except ParseError as exc:
        raise PlanError(SYNTAX_ERROR, f"CREATE ASSERTION {name}: {what}: {exc}") from None


def _parenthesised(text: str, what: str) -> tuple[str, str]:
    """(the inside of the parenthesis that opens ``text``, what follows it)."""
    body = text.lstrip()
    if not body.startswith("("):
        raise PlanError(SYNTAX_ERROR, f"{what} needs a parenthesised list")
    depth = 0
    for tok in scan(body):
        piece = body[tok.start : tok.end + 1]
        depth += piece == "("
        depth -= piece == ")"
        if depth == 0:
            return body[1 : tok.start], body[tok.end + 1 :]
    raise PlanError(SYNTAX_ERROR, f"{what}: unbalanced parentheses")


def _name(text: str, what: str) -> tuple[str, str]:
    m = _NAME.match(text)
    if m is None:
        raise PlanError(SYNTAX_ERROR, f"{what} needs a name")
    raw = m.group(1)
    name = raw[1:-1].replace('""', '"') if raw.startswith('"') else raw.lower()
    return name, text[m.end() :]


def _strip_comments(sql: str) -> str:
    """The statement with leading comments removed (they may precede CREATE ASSERTION)."""
    text = sql.lstrip()
    while text.startswith("--") or text.startswith("/*"):
        end = text.find("\n") if text.startswith("--") else text.find("*/")
        if end < 0:
            return ""
        text = text[end + (1 if text.startswith("--") else 2) :].lstrip()
    return text


def parsed_from_row(row) -> Consistency | Learned:
    """The assertion a ``sieve.assertions`` row holds."""
    if row["kind"] == "consistency":
        return Consistency(row["name"], row["query"])
    features = json.loads(row["features"]) if isinstance(row["features"], str) else row["features"]
    key = json.loads(row["key"]) if isinstance(row["key"], str) else row["key"]
    return Learned(row["name"], row["relation"], tuple(tuple(f) for f in features), row["per"], tuple(key))


def catalog_row(parsed: Consistency | Learned, definition: str, models: list[str], owner: str) -> dict:
    """The ``sieve.assertions`` row of a new assertion."""
    row = {"name": parsed.name, "definition": definition, "models": models, "owner": owner}
    if isinstance(parsed, Consistency):
        return {**row, "kind": "consistency", "query": parsed.query}
    return {
        **row,
        "kind": "learned",
        "relation": parsed.relation,
        "features": [list(f) for f in parsed.features],
        "per": parsed.per,
        "key": list(parsed.key),
    }
