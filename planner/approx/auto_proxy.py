"""An automatic proxy for approximate queries that name none (no USING PROXY, no sieve.proxy).

Cheap features of each candidate row come from the FROM tables' own columns: numbers and booleans
as they are, numeric arrays element by element (padded or cut to one length), text as hashed
word counts. ``sampling.train_proxy`` spends a stated share of the budget labelling a uniform
sample, fits a logistic regression, and scores every row; the operator then draws its own fresh
sample, so its guarantee holds given the proxy (which is all the training labels influence).
Columns of other types (bytea images, json, ...) are not used.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from planner.install import quote_ident
from planner.outcome import PlanError

TRAIN_FRACTION = 0.2  # share of BUDGET spent on the training sample
MAX_ARRAY = 1024  # array elements used as features, per column
TEXT_BUCKETS = 256  # hashed word-count features, per text column
MAX_COLUMNS = 64
_SCALAR = {"int2", "int4", "int8", "float4", "float8", "numeric", "bool", "oid"}
# asyncpg names array types "float4[]"; pg_type's own name is "_float4"
_ARRAY = {
    f"{p}{t}{s}"
    for t in ("int2", "int4", "int8", "float4", "float8", "numeric")
    for p, s in (("_", ""), ("", "[]"))
}
_TEXT = {"text", "varchar", "bpchar", "name"}
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Features:
    names: list[str]  # column names as the user wrote them
    kinds: list[str]  # "scalar" | "array" | "text"
    sql: list[str]  # expressions fetched after (key, proxy) with the candidate rows


@dataclass
class AutoProxyInfo:
    proxy: object  # sampling.AutoProxy
    features: Features
    width: int  # number of numeric features after expansion
    budget: int

    def describe(self) -> str:
        used = int(self.proxy.oracle_calls)
        positives = int(np.sum(self.proxy.train_labels))
        return (
            f"automatic proxy: logistic regression on {self.width} features of "
            f"{', '.join(self.features.names)}, trained on {used} uniformly sampled rows "
            f"({TRAIN_FRACTION:.0%} of budget {self.budget}, {positives} positive)"
        )


async def feature_columns(port, relations: list[str], from_sql: str) -> Features:
    """The usable columns of the FROM tables ``relations`` (one prepared statement per table)."""
    names, kinds, sql = [], [], []
    for rel in relations:
        try:
            columns = await port.column_types(f"SELECT {rel}.* FROM {from_sql} LIMIT 0")
        except PlanError as exc:
            message = f"reading the columns of {rel} for an automatic proxy: {exc}"
            raise PlanError(exc.sqlstate, message) from None
        for column in columns:
            kind = _kind(column.name)
            if kind is None or len(names) >= MAX_COLUMNS:
                continue
            names.append(column.column if len(relations) == 1 else f"{rel}.{column.column}")
            kinds.append(kind)
            sql.append(_fetch_sql(f"{rel}.{quote_ident(column.column)}", kind, column.name))
    if not names:
        raise PlanError(
            "0A000",
            "this approximate query names no proxy and its tables have no numeric, array or text "
            "columns to train one on",
            hint="append USING PROXY <expression> (a score in [0, 1], e.g. a cheap model's output)",
        )
    return Features(names, kinds, sql)


def _kind(type_name: str) -> str | None:
    if type_name in _SCALAR:
        return "scalar"
    if type_name in _ARRAY:
        return "array"
    if type_name in _TEXT:
        return "text"
    return None


def _fetch_sql(column: str, kind: str, type_name: str) -> str:
    if kind == "scalar":
        return f"({column})::int::float8" if type_name == "bool" else f"({column})::float8"
    if kind == "array":
        return f"({column})::float8[]"
    return f"({column})::text"


def matrix(features: Features, rows: list, first: int = 2) -> np.ndarray:
    """Rows x features; ``rows`` carry the feature columns from position ``first`` on."""
    blocks = []
    for j, kind in enumerate(features.kinds):
        values = [r[first + j] for r in rows]
        if kind == "scalar":
            blocks.append(np.array([np.nan if v is None else v for v in values], dtype=np.float64)[:, None])
        elif kind == "array":
            blocks.append(_arrays(values))
        else:
            blocks.append(_hashed_words(values))
    x = np.hstack(blocks) if blocks else np.empty((len(rows), 0))
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def _arrays(values: list) -> np.ndarray:
    width = min(MAX_ARRAY, max((len(v) for v in values[:1000] if v is not None), default=0))
    out = np.zeros((len(values), max(width, 1)))
    for i, v in enumerate(values):
        if v:
            cut = v[:width]
            out[i, : len(cut)] = [np.nan if e is None else e for e in cut]
    return out


def _hashed_words(values: list) -> np.ndarray:
    out = np.zeros((len(values), TEXT_BUCKETS))
    for i, text in enumerate(values):
        if text:
            for word in _WORD.findall(text.lower()):
                out[i, zlib.crc32(word.encode()) % TEXT_BUCKETS] += 1.0
    return np.log1p(out)


def train(features: Features, rows: list, oracle, *, budget: int, rng: np.random.Generator):
    """(AutoProxyInfo, the budgeted oracle the operator must use: training calls count)."""
    from sampling import train_proxy

    x = matrix(features, rows)
    proxy, budgeted = train_proxy(x, oracle, budget=budget, rng=rng, train_fraction=TRAIN_FRACTION)
    return AutoProxyInfo(proxy, features, x.shape[1], budget), budgeted
