"""ERROR TARGET: COUNT / SUM / AVG (several at once, GROUP BY any expression) over any virtual
table, estimated from a sample of units.

The unit is a row of the statement's base tables (a video frame). For each sampled unit every
model the statement reads runs over that unit's inputs only, and Postgres computes what the
statement computes for it: per (unit, group), each aggregate's row count and sum. A
table-returning model (a detector) gives a unit any number of rows, so this is cluster sampling;
with a proxy over the base rows it is stratified by the proxy. The estimates return as a result
set typed as the exact query's would be.

An interval is *certified* (finite-sample, any data) only when every range it needs is known
before sampling: rows per unit (1 without a table-returning model) and the aggregated values'
range (read off the candidates for a model-free argument; unknown for a model output).
"""

from __future__ import annotations

import numpy as np

from planner.approx.bridge import LoopBridge
from planner.approx.context import ApproxRun
from planner.approx.proxy_sanity import verdict_words
from planner.approx.report import aggregate_notice, budget_words, pct, run_trace
from planner.install import quote_ident, quote_literal
from planner.outcome import Forward, Outcome
from planner.rewrite.ast_util import render

_INTEGRAL = {("pg_catalog", "int2"), ("pg_catalog", "int4"), ("pg_catalog", "int8")}


async def run_aggregate(run: ApproxRun) -> Outcome:
    from sampling import (
        AggSpec,
        estimate_unit_aggregates,
    )  # deferred: scipy costs about 1 s of server start-up

    plan, clause, io = run.plan, run.plan.clause, run.io
    known_groups = bool(plan.groups) and not plan.groups_read_models
    extra = [f"({g})::text" for g in plan.groups] if known_groups else []
    found = await io.candidates(clause.proxy, extra)
    keys = found.keys
    ranges = await io.value_ranges()
    run.report.actuals["candidates"] = len(keys)
    results: list = [None] * len(plan.aggregates)
    if keys:
        group_keys = sorted(set(zip(*found.extra, strict=True)), key=repr) if known_groups else None
        specs = [AggSpec(a.kind, r) for a, r in zip(plan.aggregates, ranges, strict=True)]
        bridge = LoopBridge()
        seen: dict[int, bool] = {}  # candidate position -> the unit gave rows (proxy check)
        oracle = bridge.oracle(_labeller(run, keys, seen))
        results = await bridge.run(
            estimate_unit_aggregates,
            len(keys),
            oracle,
            aggs=specs,
            error_target=clause.error_target,
            budget=plan.budget,
            rng=run.rng(),
            confidence=clause.confidence,
            proxy=found.scores,
            max_rows=plan.max_rows,
            group_keys=[_group_key(g) for g in group_keys] if group_keys is not None else None,
            bound=run.settings.bound if run.settings.bound in ("empirical", "normal") else "betting",
        )
        if clause.proxy is not None and (words := await verdict_words(clause.proxy, found.scores, seen)):
            run.port.notice(words)
        # labels here: whether a sampled unit gave the statement any rows
        run.report.trace = run_trace("aggregate", len(keys), found.scores, seen)
    return await _answer(run, results, len(keys))


def _labeller(run: ApproxRun, keys: list[str], seen: dict[int, bool]):
    """The oracle: unit positions -> a UnitAnswer read off the statement over those units
    (``seen`` collects whether each labelled unit gave any rows)."""
    from sampling import UnitAnswer  # deferred: scipy costs about 1 s of server start-up

    width = len(run.plan.groups)
    n_aggs = len(run.plan.aggregates)

    async def label(idx: np.ndarray):
        asked = [keys[int(i)] for i in idx]
        where = {}
        for pos, key in enumerate(asked):
            where.setdefault(key, pos)
        lines = await run.io.unit_lines(list(where))
        rows = {line[0] for line in lines if any(line[1 + width :: 2])}
        for i, key in zip(idx, asked, strict=True):
            seen[int(i)] = key in rows
        unit = np.array([where[line[0]] for line in lines], dtype=np.int64)
        group = None
        if width:
            group = np.empty(len(lines), dtype=object)
            group[:] = [_group_key(tuple(line[1 : 1 + width])) for line in lines]
        measures = np.array([line[1 + width :] for line in lines], dtype=np.float64).reshape(
            len(lines), 2 * n_aggs
        )
        return UnitAnswer(
            unit=unit,
            group=group,
            counts=measures[:, 0::2].reshape(len(lines), n_aggs),
            sums=measures[:, 1::2].reshape(len(lines), n_aggs),
        )

    return label


# A NULL group's key: Postgres text never holds a NUL byte, so no group value can collide with it,
# and None stays free for the estimator's "no group seen" placeholder (never an answer row).
NULL_GROUP = "\x00"


def _group_key(values: tuple):
    values = tuple(NULL_GROUP if v is None else v for v in values)
    return values[0] if len(values) == 1 else values


def _group_value(key, position: int) -> str | None:
    value = key[position] if isinstance(key, tuple) else key
    return None if value == NULL_GROUP else value


async def _answer(run: ApproxRun, results: list, candidates: int) -> Forward:
    plan, clause = run.plan, run.plan.clause
    reasons = _uncertified_reasons(run)
    for agg, result in zip(plan.aggregates, results, strict=True):
        if result is not None and not result.finite_sample and agg.name in reasons:
            result.details["uncertified"] = reasons[agg.name]
        calls = run.report.model_calls
        run.port.notice(aggregate_notice(agg.name, agg.kind, result, clause, plan.budget, candidates, calls))
    sql = await _estimates_sql(run, results)
    done = [r for r in results if r is not None]
    certified = all(r.target_met and r.finite_sample for r in done)
    first = done[0] if done else None
    await run.report.log(
        f"approx_{plan.aggregates[0].kind}",
        target=clause.error_target,
        estimate=first.estimate if first is not None else None,
        ci_low=first.ci_low if first is not None else None,
        ci_high=first.ci_high if first is not None else None,
        target_met=all(r.target_met for r in done),
        certified=certified,
        certified_level=_certified_error(first) if first is not None and certified else None,
        rows_labelled=max((r.oracle_calls for r in done), default=0),
        groups=_groups_json(plan, results) if plan.groups else None,
    )
    run.report.actuals.update(
        names=[a.name for a in plan.aggregates], results=results, calls=run.report.model_calls
    )
    missed = [r for r in done if not r.target_met]
    if missed:
        needed = max((r.budget_needed or 0) for r in missed)
        spent = max(plan.budget, *(r.oracle_calls for r in missed))
        run.report.strict(
            f"BUDGET {plan.budget} is too small for ERROR TARGET {pct(clause.error_target)}",
            budget_words(needed, candidates, spent),
        )
    return Forward(sql=sql)


def _certified_error(result) -> float | None:
    """The relative error the first aggregate's interval guarantees: the least e with
    |estimate - t| <= e·|t| for every t in [ci_low, ci_high] (None when the interval spans 0)."""
    lo, hi, est = result.ci_low, result.ci_high, result.estimate
    if not all(np.isfinite(v) for v in (lo, hi, est)):
        return None
    if lo == hi == est:
        return 0.0
    if lo > 0:
        return max(est / lo - 1.0, 1.0 - est / hi)
    if hi < 0:
        return max(est / hi - 1.0, 1.0 - est / lo)
    return None


def _uncertified_reasons(run: ApproxRun) -> dict[str, str]:
    plan = run.plan
    out = {}
    for agg in plan.aggregates:
        if plan.max_rows is None:
            out[agg.name] = (
                "the rows one input gives a table-returning model are not bounded in advance: "
                "declare '{\"max_rows\": n}' in its definition to certify"
            )
        elif agg.reads_model:
            out[agg.name] = f"the range of {agg.value} is not known before the model runs"
    return out


def _groups_json(plan, results: list) -> list:
    out = []
    for agg, result in zip(plan.aggregates, results, strict=True):
        if result is None:
            continue
        for key, est in result.groups.items():
            if key is None:
                continue  # no group was seen: nothing to report
            out.append(
                {
                    "aggregate": agg.name,
                    "group": [_group_value(key, i) for i in range(len(plan.groups))],
                    "estimate": _json_number(est.estimate),
                    "ci_low": _json_number(est.ci_low),
                    "ci_high": _json_number(est.ci_high),
                    "target_met": bool(est.target_met),
                }
            )
    return out


def _json_number(value):
    return float(value) if value is not None and np.isfinite(value) else None


async def _estimates_sql(run: ApproxRun, results: list) -> str:
    """The estimates as SQL for Postgres to return, typed as the query without its clause would
    be (so binary results and client type mapping match an exact answer)."""
    plan = run.plan
    described = await run.io.result_types(render(plan.stmt), "typing the estimates")
    types = [_type_sql(t) for t in described]
    integral = [(t.schema, t.name) in _INTEGRAL for t in described]
    bounds = run.settings.bounds
    columns: list[tuple[str, str]] = []
    for out, type_name in zip(plan.outputs, types, strict=True):
        columns.append((out.name, type_name))
        if bounds and out.aggregate is not None:
            columns += [(f"{out.name}_ci_low", "float8"), (f"{out.name}_ci_high", "float8")]
    keys: list = [None]
    if plan.groups:
        keys = sorted({k for r in results if r is not None for k in r.groups if k is not None}, key=repr)
    table = []
    for key in keys:
        line: list[str | None] = []
        for out, whole in zip(plan.outputs, integral, strict=True):
            if out.group is not None:
                line.append(_group_value(key, out.group))
                continue
            agg, result = plan.aggregates[out.aggregate], results[out.aggregate]
            est = result.groups.get(key) if result is not None else None
            if est is None:
                cells = [0.0, 0.0, 0.0] if agg.kind == "count" else [None, None, None]
            else:
                cells = [est.estimate, est.ci_low, est.ci_high]
            line.append(_num(cells[0], integral=whole))
            if bounds:
                line += [_num(c) for c in cells[1:]]
        table.append(line)
    return _values_sql(columns, table)


def _num(value, integral: bool = False) -> str | None:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    return str(round(float(value))) if integral else repr(float(value))


def _type_sql(pg_type) -> str:
    return f"{quote_ident(pg_type.schema)}.{quote_ident(pg_type.name)}"


def _values_sql(columns: list[tuple[str, str]], table: list[list[str | None]]) -> str:
    """``SELECT`` of literal rows with the given column names and types (no rows: WHERE false)."""

    def select(line: list[str | None]) -> str:
        cells = []
        for (name, type_name), value in zip(columns, line, strict=True):
            literal = "NULL" if value is None else quote_literal(value)
            cells.append(f"CAST({literal} AS {type_name}) AS {quote_ident(name)}")
        return "SELECT " + ", ".join(cells)

    if not table:
        return select([None] * len(columns)) + " WHERE false"
    return " UNION ALL ".join(select(line) for line in table)
