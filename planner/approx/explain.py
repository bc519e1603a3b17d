"""EXPLAIN [ANALYZE] of an approximate query: the operator, its budget split and bound, and (with
ANALYZE, which runs the sampling but returns no rows) the thresholds, calls and certified levels."""

from __future__ import annotations

import json
import math

_BOUNDS = {
    "betting": "betting confidence sequence (finite-sample, any data)",
    "bernstein": "empirical Bernstein with the known range (finite-sample, any data)",
    "hoeffding": "Hoeffding (finite-sample, any data)",
    "empirical": "empirical Bernstein with the range read off the sample (not finite-sample)",
    "normal": "normal approximation, SUPG's CLT bound (asymptotic)",
}
_OPERATORS = {
    "recall": "SUPG importance-sampling recall target (sqrt-proxy weights, defensive mixing)",
    "precision": "SUPG importance-sampling precision target (two-stage search)",
    "cascade": "cascade: proxy accepts above tau+, rejects below tau-, oracle decides the band",
    "limit": "proxy-ordered LIMIT search (returns oracle-verified rows only)",
    "aggregate": (
        "sampled aggregation over units (cluster sampling for table-returning models): "
        "proxy-stratified with a betting allocation, uniform without a proxy"
    ),
}


def bound_words(bound: str, finite: bool) -> str:
    words = _BOUNDS.get(bound, bound)
    return f"bound: {bound}" + ("" if finite else " (asymptotic)") if words == bound else f"bound: {words}"


def plan_tree(plan, bound: str, mode: str, analyzed: dict | None) -> dict:
    """The plan as nested data (the JSON format); :func:`plan_lines` prints it."""
    clause = plan.clause
    budget = plan.budget if mode != "limit" else (clause.budget or _default_limit_budget())
    oracle = plan.predicate if mode != "aggregate" else ", ".join(a.name for a in plan.aggregates)
    node: dict = {
        "Node Type": "SieveDB Approximate " + ("Aggregate" if mode == "aggregate" else "Selection"),
        "Operator": _OPERATORS[mode],
        "Oracle": f"{oracle}  (models {', '.join(plan.models) or 'none'})",
        "Sampling Unit": f"a row of {plan.unit_from}",
        "Candidates": f"FROM {plan.unit_from} WHERE {plan.where()}",
        "Targets": _targets(clause),
        "Confidence": clause.confidence,
        "Budget": budget,
        "Bound": _BOUNDS.get(bound, bound),
    }
    if mode == "aggregate":
        node["Rows Per Unit"] = plan.max_rows if plan.max_rows is not None else "not bounded in advance"
    if clause.proxy is not None:
        node["Proxy"] = clause.proxy
    elif mode in ("recall", "precision", "cascade"):
        share = int(round(0.2 * budget))
        node["Proxy"] = "automatic: logistic regression on the tables' numeric, array and text columns"
        node["Budget Split"] = {"proxy training (uniform sample)": share, "operator": budget - share}
    else:
        node["Proxy"] = "none (uniform sampling)" if mode == "aggregate" else "none (random order)"
    if analyzed:
        node.update(analyzed)
    return node


def _targets(clause) -> dict[str, float]:
    targets = {
        "recall": clause.recall_target,
        "precision": clause.precision_target,
        "relative error": clause.error_target,
    }
    return {k: v for k, v in targets.items() if v is not None}


def selection_actuals(result, report: dict, auto) -> dict:
    out: dict = {
        "Candidate Rows": report.get("candidates", 0),
        "Model Calls": report.get("calls", 0),
    }
    if report.get("known"):
        rows, positives = report["known"]
        out["Cached Labels"] = f"{rows} candidate rows ({positives} positive) answered from the model cache"
    if result is None:
        return out
    out.update(
        {
            "Oracle Rows Labelled": result.oracle_calls,
            "Rows Returned": result.size,
            "Thresholds": {k: _clean(v) for k, v in result.thresholds.items()},
            "Delta Split": result.delta_split,
            "Bound Claims": result.achieved_bound,
            "Certified": _certified(result),
            "Estimates": {k: _clean(v) for k, v in result.estimates.items()},
            "Target Met": result.target_met,
        }
    )
    if auto is not None:
        out["Automatic Proxy"] = auto.describe()
    if result.budget_hint:
        out["Budget Hint"] = result.budget_hint
    return out


def _certified(result) -> dict:
    return {**result.certified, "targets certified": bool(result.certified_target_met)}


def aggregate_actuals(names: list[str], results: list, report: dict) -> dict:
    out: dict = {"Candidate Rows": report.get("candidates", 0), "Model Calls": report.get("calls", 0)}
    for name, result in zip(names, results, strict=True):
        if result is None:
            continue
        out[f"Aggregate {name}"] = {
            "Design": result.design,
            "Oracle Rows Labelled": result.oracle_calls,
            "Rounds": result.rounds,
            "Delta Split": result.delta_split,
            "Estimate": _clean(result.estimate),
            "Interval": [_clean(result.ci_low), _clean(result.ci_high)],
            "Groups": len(result.groups),
            "Target Met": result.target_met,
            "Certified": bool(result.target_met and result.finite_sample),
        }
    return out


def plan_lines(node: dict) -> list[str]:
    lines = [f"{node['Node Type']}  ({node['Operator']})"]
    for key, value in node.items():
        if key in ("Node Type", "Operator"):
            continue
        lines += _lines(key, value, "  ")
    return lines


def plan_json(node: dict) -> str:
    return json.dumps([{"Plan": node}], indent=2, default=str)


def _lines(key: str, value, indent: str) -> list[str]:
    if isinstance(value, dict):
        out = [f"{indent}{key}:"]
        for k, v in value.items():
            out += _lines(k, v, indent + "  ")
        return out
    if isinstance(value, float):
        value = f"{value:.6g}"
    return [f"{indent}{key}: {value}"]


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def limit_actuals(report: dict) -> dict:
    out: dict = {"Candidate Rows": report.get("candidates", 0), "Model Calls": report.get("calls", 0)}
    result = report.get("limit")
    if result is not None:
        out.update(
            {
                "Oracle Rows Labelled": result.oracle_calls,
                "Rows Found": result.found,
                "Every Candidate Checked": result.exhausted,
            }
        )
        if result.budget_hint:
            out["Budget Hint"] = result.budget_hint
    return out


def _default_limit_budget() -> int:
    from planner.approx.limit_op import DEFAULT_LIMIT_BUDGET  # limit_op imports this module

    return DEFAULT_LIMIT_BUDGET
