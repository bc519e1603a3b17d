"""RECALL TARGET / PRECISION TARGET / both (a cascade): which candidate rows to return.

Candidates whose oracle output is already cached are a stratum known exactly: its positives are
returned and the operator samples only the other rows, with the whole budget. A target met on the
sampled rows holds for the union (exactly known positives can only raise recall, and verified rows
cannot lower precision below the target), and which rows are cached is fixed before this query
draws anything. A seeded run ignores the cache's free labels so that it reproduces exactly.
"""

from __future__ import annotations

from pglast import parse_sql

from planner.approx import auto_proxy
from planner.approx.bridge import LoopBridge
from planner.approx.context import ApproxRun
from planner.approx.io import UnitLabels
from planner.approx.proxy_sanity import flip_on_cached, verdict_words
from planner.approx.report import (
    certified_levels,
    is_certified,
    known_words,
    run_trace,
    selection_mode,
    selection_notice,
)
from planner.outcome import Forward, Outcome
from planner.rewrite.ast_util import render


async def run_selection(run: ApproxRun) -> Outcome:
    keys, selected, result, auto, known = await _select(run)
    plan, clause = run.plan, run.plan.clause
    mode, target = selection_mode(clause)
    calls = run.report.model_calls
    notice = selection_notice(clause, result, len(keys), plan.budget, calls, len(selected), auto)
    if known:
        notice += f"; {known_words(known, result is None)}"
    run.port.notice(notice)
    certified = result is None or is_certified(result)
    metric = "recall" if mode != "precision" else "precision"
    level = None
    if result is not None:
        level = result.achieved_bound.get(f"{metric}_lower_bound")
        certified_level = _certified_level(result, metric)
    else:
        certified_level = 1.0 if keys else None
    await run.report.log(
        mode,
        target=target,
        estimate=result.estimates.get(metric) if result is not None else None,
        ci_low=level if result is not None else (1.0 if keys else None),
        target_met=result.target_met if result is not None else True,
        certified=certified,
        certified_level=certified_level,
        rows_labelled=result.oracle_calls if result is not None else 0,
    )
    run.report.actuals = {
        "result": result,
        "candidates": len(keys),
        "calls": calls,
        "known": known,
        "auto": auto,
    }
    if result is not None and (not result.target_met or result.budget_hint):
        run.report.strict(f"BUDGET {plan.budget} is too small for the {mode} target", result.budget_hint)
    return forward_rows(run, selected)


def _certified_level(result, metric: str) -> float | None:
    return certified_levels(result).get(metric, 0.0)


def forward_rows(run: ApproxRun, keys: list[str]) -> Forward:
    """The client's statement with its model predicate replaced by "one of these rows"; the
    selected rows' model outputs are read leniently (unlabelled ones read as NULL)."""
    plan = run.plan
    stmt = plan.stmt
    stmt.whereClause = parse_sql(f"SELECT 1 WHERE {plan.where(plan.guard(keys))}")[0].stmt.whereClause
    return Forward(sql=render(stmt), settings={"sieve.lenient": "on"})


def _asks_people(run: ApproxRun) -> bool:
    spec = run.planner.catalog.get(run.plan.model)
    return spec is not None and spec.is_labels


async def _select(run: ApproxRun):
    """(candidate keys, selected keys, SelectionResult or None when no row needed sampling,
    the automatic proxy or None, (cached rows, positives) or None)."""
    from sampling import (
        select_cascade,
        select_precision_target,
        select_recall_target,
    )  # deferred: scipy costs about 1 s of server start-up

    plan, clause, io = run.plan, run.plan.clause, run.io
    features = None
    if clause.proxy is None:
        features = await auto_proxy.feature_columns(run.port, plan.unit_names, plan.unit_from)
    found = await io.candidates(clause.proxy, features.sql if features else [])
    keys, scores = found.keys, found.scores
    known = await io.cached_labels() if run.settings.seed in (None, "") else {}
    if known and scores is not None:
        position = {k: i for i, k in enumerate(keys)}
        scores, flipped = await flip_on_cached(
            scores, {position[k]: v for k, v in known.items() if k in position}
        )
        if flipped:
            run.port.notice(flipped)
    rest = [i for i, k in enumerate(keys) if k not in known] if known else list(range(len(keys)))
    selected = [k for k, positive in known.items() if positive]
    summary = (len(known), sum(known.values())) if known else None
    mode = selection_mode(clause)[0]
    if not rest:
        run.report.trace = run_trace(mode, len(keys), scores, {})
        return keys, selected, None, None, summary
    sample_keys = [keys[i] for i in rest]
    if known and scores is not None:
        scores = scores[rest]
    rng = run.rng()
    bridge = LoopBridge()
    label = UnitLabels(io, sample_keys)
    oracle = bridge.oracle(label)
    auto = None
    if features is not None:
        rows = [(keys[i], None, *(col[i] for col in found.extra)) for i in rest]
        auto, oracle = await bridge.run(auto_proxy.train, features, rows, oracle, budget=plan.budget, rng=rng)
        scores = auto.proxy.scores
    common = {"budget": plan.budget, "rng": rng, "confidence": clause.confidence, "bound": run.settings.bound}
    if clause.recall_target is not None and clause.precision_target is not None:
        fn = select_cascade
        kw = {"recall_target": clause.recall_target, "precision_target": clause.precision_target}
    elif clause.recall_target is not None:
        fn, kw = select_recall_target, {"target": clause.recall_target}
        if _asks_people(run):  # the sample is asked for in one round: no label-dependent extras
            kw["spare"] = False
    else:
        fn, kw = select_precision_target, {"target": clause.precision_target}
    result = await bridge.run(fn, scores, oracle, **kw, **common)
    # the scores ranked (the automatic proxy's too) and the rows labelled; cached rows are not in it
    run.report.trace = run_trace(mode, len(keys), scores, label.known, result.thresholds)
    if clause.proxy is not None and (words := await verdict_words(clause.proxy, scores, label.known)):
        run.port.notice(words)
    selected += [sample_keys[int(i)] for i in result.indices]
    return keys, selected, result, auto, summary
