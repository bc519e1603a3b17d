"""``... WHERE <model predicate> LIMIT k USING PROXY expr``: label candidates in descending proxy
order until k rows satisfy the predicate; only verified rows return.

A proxy that ranks the wrong rows first would otherwise label the whole table (measured: 9,328
model calls for LIMIT 10, against 64 for the plain lazy LIMIT). Without a BUDGET the search is
capped at :data:`DEFAULT_LIMIT_BUDGET` labelled rows; past the cap the query runs as the exact
planner runs a LIMIT (scan order, stopping early), and the NOTICE says so. A BUDGET the user
writes is a hard cap instead: fewer rows come back, with a NOTICE.
"""

from __future__ import annotations

import numpy as np

from planner.approx.bridge import LoopBridge
from planner.approx.context import ApproxRun
from planner.approx.io import UnitLabels
from planner.approx.proxy_sanity import verdict_words
from planner.approx.report import limit_notice, run_trace
from planner.approx.selection import forward_rows
from planner.outcome import Outcome

DEFAULT_LIMIT_BUDGET = 1000


class ScanOrderInstead(Exception):
    """The proxy search hit the default cost cap: run the statement exactly (scan order)."""


async def run_limit(run: ApproxRun) -> Outcome:
    from sampling import limit_search  # deferred: scipy costs about 1 s of server start-up

    plan, clause = run.plan, run.plan.clause
    k = plan.limit
    budget = clause.budget if clause.budget is not None else DEFAULT_LIMIT_BUDGET
    found = await run.io.candidates(clause.proxy, [])
    keys, scores = found.keys, found.scores
    bridge = LoopBridge()
    label = UnitLabels(run.io, keys)

    result = None
    selected: list[str] = []
    if keys and k > 0:
        order = scores if scores is not None else np.zeros(len(keys))  # no proxy: a random order
        batch = max(16, min(256, k))
        result = await bridge.run(
            limit_search, order, bridge.oracle(label), k=k, rng=run.rng(), budget=budget, batch_size=batch
        )
        selected = [keys[int(i)] for i in result.indices]
        if clause.proxy is not None and (words := await verdict_words(clause.proxy, scores, label.known)):
            run.port.notice(words)
    run.report.trace = run_trace("limit", len(keys), scores, label.known)
    calls = run.report.model_calls
    capped = (
        result is not None and result.found < k and clause.budget is None and len(label.known) < len(keys)
    )
    notice = limit_notice(clause, result, k, len(keys), calls, budget)
    if capped:
        notice += (
            f"; the proxy found {result.found} of {k} rows within the default cap of {budget} labelled "
            "rows, so the query runs in scan order instead (BUDGET n sets another cap)"
        )
    run.port.notice(notice)
    run.report.actuals = {"candidates": len(keys), "calls": calls, "limit": result, "capped": capped}
    await run.report.log(
        "limit",
        estimate=float(len(selected)),
        confidence=None,
        rows_labelled=len(label.known),
        target_met=len(selected) >= k,
        certified=None,
    )
    if capped:
        raise ScanOrderInstead()
    if result is not None and result.budget_hint:
        run.report.strict(f"BUDGET {budget} ran out before LIMIT {k} rows were found", result.budget_hint)
    return forward_rows(run, selected)
