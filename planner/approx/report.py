"""What an approximate query tells its client and the log: one NOTICE per answer, one
``sieve.query_log`` row, and (under ``sieve.strict``) an error for a target the budget missed.

Wording contract: "certified" is said only of a finite-sample bound (valid on any data, proxies
with blind spots included) that meets the target; every answer states both that certified level
and the estimate, and a target that could not be certified names the budget that likely would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import numpy as np

from planner.approx.clause import ApproxClause
from planner.approx.explain import bound_words
from planner.approx.plan import ApproxPlan
from planner.approx.settings import BUDGET_TOO_SMALL, SessionSettings
from planner.labels.statement import labels_pending
from planner.materialize import Materialized
from planner.outcome import PlanError


class Reporter:
    def __init__(self, plan: ApproxPlan, settings: SessionSettings, port, io, done: Materialized) -> None:
        self.plan = plan
        self.settings = settings
        self.port = port
        self.io = io
        self.done = done
        self.started = time.monotonic()
        self.actuals: dict = {}  # what the operator did, for EXPLAIN ANALYZE
        self.trace: dict | None = None  # how the run went, for sieve.query_log.trace (see run_trace)

    @property
    def model_calls(self) -> int:
        return sum(self.done.model_calls.get(m, 0) for m in self.plan.models)

    async def log(self, mode: str, **columns) -> None:
        if labels_pending():  # a run on provisional labels: the run once they are given logs
            return
        for model in self.plan.models:
            self.done.model_calls.setdefault(model, 0)
        row = {
            "query": self.plan.sql,
            "mode": mode,
            "model_calls": self.done.model_calls,
            "cache_hits": self.done.cache_hits,
            "elapsed_ms": 1000 * (time.monotonic() - self.started),
            "confidence": self.plan.clause.confidence,
            "role": self.port.user,
        }
        row.update({k: _finite(v) if isinstance(v, float) else v for k, v in columns.items()})
        if self.trace is not None:
            level = row.get("certified_level")
            self.trace.update(target=_finite(row.get("target")), certified_level=_finite(level))
            row["trace"] = self.trace
        await self.io.log(row)

    def strict(self, message: str, detail: str | None) -> None:
        """Under SET sieve.strict = on, a target the budget cannot meet is an error (the NOTICE
        already went out; the query_log row records what was spent)."""
        if self.settings.strict:
            raise PlanError(
                BUDGET_TOO_SMALL,
                f"{message} (sieve.strict is on)" + (f": {detail}" if detail else ""),
                hint="raise BUDGET (or sieve.budget), or SET sieve.strict = off for the answer and a NOTICE",
            )


# -- traces ----------------------------------------------------------------------------------------

TRACE_BINS = 20  # proxy-score histogram bins over [0, 1]
TRACE_SAMPLES = 2000  # sampled rows kept in a trace (evenly spaced over the sample beyond that)


def run_trace(
    kind: str,
    candidates: int,
    scores: np.ndarray | None,
    sampled: Mapping[int, bool],
    thresholds: Mapping[str, float] | None = None,
) -> dict:
    """A picture of one approximate run for ``sieve.query_log.trace``: the histogram of the proxy
    scores the operator ranked by (one count per scored row), the sampled rows' scores and
    labels (``sampled`` maps positions in ``scores`` to the oracle's answer), the thresholds it
    chose. ``Reporter.log`` adds the target and the certified level. Plain JSON: NaN and
    infinite thresholds (no threshold chosen) become null."""
    trace: dict = {"kind": kind, "candidates": candidates, "histogram": None}
    if scores is not None and len(scores):
        counts, edges = np.histogram(np.clip(scores, 0.0, 1.0), bins=TRACE_BINS, range=(0.0, 1.0))
        trace["histogram"] = {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}
    positions = sorted(sampled)
    if len(positions) > TRACE_SAMPLES:
        keep = np.linspace(0, len(positions) - 1, TRACE_SAMPLES).round().astype(int)
        positions = [positions[i] for i in keep]
    trace["sampled_rows"] = len(sampled)
    # [score, label] per labelled row: the points of the picture (none without proxy scores)
    trace["sampled"] = (
        [[_finite(scores[i]), bool(sampled[i])] for i in positions] if scores is not None else []
    )
    trace["thresholds"] = {k: _finite(v) for k, v in (thresholds or {}).items()}
    return trace


# -- selections ----------------------------------------------------------------------------------


def selection_mode(clause: ApproxClause) -> tuple[str, float]:
    if clause.recall_target is not None and clause.precision_target is not None:
        return "cascade", clause.recall_target
    if clause.recall_target is not None:
        return "recall", clause.recall_target
    return "precision", clause.precision_target


def certified_levels(result) -> dict[str, float]:
    """Finite-sample levels of the answer (valid on any data) by metric ("recall", "precision"),
    whatever bound was asked."""
    return dict(result.certified)


def is_certified(result) -> bool:
    """Every requested target holds at the finite-sample level (an exact answer counts)."""
    return bool(result.certified_target_met)


def selection_notice(
    clause: ApproxClause, result, candidates: int, budget: int, calls: int, returned: int, auto=None
) -> str:
    targets = []
    if clause.recall_target is not None:
        targets.append(f"recall target {pct(clause.recall_target)}")
    if clause.precision_target is not None:
        targets.append(f"precision target {pct(clause.precision_target)}")
    head = f"approximate selection: {' and '.join(targets)} at confidence {pct(clause.confidence)}"
    if result is None:
        rows = f"{candidates} candidate rows" if candidates else "no candidate rows"
        return f"{head}: {rows}, every one answered exactly (certified), 0 rows labelled"
    text = (
        f"{head}: {returned} of {candidates} rows returned; {result.oracle_calls} rows labelled "
        f"({calls} model calls) of budget {budget}"
    )
    estimates = ", ".join(f"{k} {v:.3g}" for k, v in result.estimates.items() if _is_number(v))
    claimed = ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in result.achieved_bound.items())
    levels = certified_levels(result)
    certified = ", ".join(f"{k} >= {v:.3g}" for k, v in levels.items())
    if is_certified(result):
        text += f"; certified (finite-sample, any data): {certified}"
        if estimates:
            text += f"; estimate {estimates}"
    else:
        text += f"; estimate {estimates or 'n/a'}"
        if claimed and result.target_met:
            text += f" ({bound_words(result.bound, result.finite_sample)}: {claimed})"
        text += f"; NOT certified: the finite-sample bound gives only {certified or 'nothing'}"
    if auto is not None:
        text += f"; {auto.describe()}"
    if not result.target_met:
        text += "; TARGET NOT MET"
    hint = result.budget_hint
    if hint:
        text += f" ({hint})"
    return text


# -- aggregates ----------------------------------------------------------------------------------


def aggregate_notice(
    name: str, kind: str, result, clause: ApproxClause, budget: int, candidates: int, calls: int
) -> str:
    target, confidence = pct(clause.error_target), pct(clause.confidence)
    head = f"approximate {kind.upper()} ({name}): error target {target} at confidence {confidence}"
    if result is None:
        return f"{head}: no candidate rows"
    if result.design == "census":
        return (
            f"{head}: exact (certified): every one of the {candidates} candidate rows labelled "
            f"({calls} model calls) of budget {budget}"
        )
    if len(result.groups) != 1 or None not in result.groups:
        spans = "; ".join(
            f"{g}: {e.estimate:.6g} [{e.ci_low:.6g}, {e.ci_high:.6g}]"
            for g, e in sorted(result.groups.items(), key=lambda item: repr(item[0]))
        )
        text = f"{head}: per group {spans}"
    else:
        text = f"{head}: estimate {result.estimate:.6g}, interval [{result.ci_low:.6g}, {result.ci_high:.6g}]"
    text += f"; {result.oracle_calls} rows labelled ({calls} model calls) of budget {budget}"
    if result.target_met and result.finite_sample:
        text += "; certified (finite-sample interval, any data)"
    elif result.target_met:
        text += (
            "; NOT certified: the interval is an estimate ("
            + result.details.get("uncertified", "the range of the values is not known in advance")
            + ")"
        )
    else:
        text += "; TARGET NOT MET"
        words = budget_words(result.budget_needed, candidates, max(result.oracle_calls, budget))
        if words:
            text += f" ({words})"
    return text


def budget_words(needed: int | None, candidates: int, spent: int) -> str | None:
    """What budget would meet a missed target (always more than ``spent``: the budget given or
    the labels spent, whichever is larger); labelling every candidate is exact."""
    if not needed:
        return None
    needed = max(int(needed), spent + 1)
    if needed >= candidates:
        return f"only labelling every one of the {candidates} candidates (an exact scan) would meet it"
    return f"a budget of about {needed} would meet it"


# -- LIMIT ---------------------------------------------------------------------------------------


def limit_notice(clause: ApproxClause, result, k: int, candidates: int, calls: int, budget: int) -> str:
    order = f"proxy {clause.proxy}" if clause.proxy is not None else "random order (no proxy)"
    head = f"proxy-ordered LIMIT {k} by {order}"
    if result is None:
        return f"{head}: 0 rows labelled ({candidates} candidate rows)"
    text = (
        f"{head}: {result.found} verified rows found; {result.oracle_calls} of {candidates} candidate rows "
        f"labelled ({calls} model calls) of budget {budget}"
    )
    if result.exhausted:
        text += f"; only {result.found} rows found"
        text += f" ({result.budget_hint})" if result.budget_hint else " (every candidate row was checked)"
    return text


def known_words(known: tuple[int, int], everything: bool) -> str:
    rows, positives = known
    text = f"{rows} candidate rows had cached oracle outputs ({positives} positive), used as free labels"
    return text + ("; every candidate was cached: the answer is exact" if everything else "")


def pct(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
