"""EXPLAIN [ANALYZE] for statements that call models: the ML operators above Postgres's plan."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from pglast import ast
from pglast.stream import RawStream

from planner.calls import CallSite
from planner.limit import LimitRun
from planner.materialize import BATCH_ROWS
from planner.model_spec import ModelSpec


@dataclass
class SitePlan:
    site: CallSite
    spec: ModelSpec
    to_run: int | None = None  # planned: uncached inputs
    cached: int | None = None
    actual_calls: int | None = None  # ANALYZE
    actual_hits: int | None = None
    inference_ms: float | None = None
    device: str = "cpu"
    depends: list[str] = field(default_factory=list)  # models whose outputs its inputs read


@dataclass
class ExplainRequest:
    inner_sql: str
    analyze: bool
    json: bool
    statement: ast.Node
    sites: list[SitePlan] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    limit_run: LimitRun | None = None  # ANALYZE of a LIMIT that ran block range by block range
    cache_hits: int | None = None  # ANALYZE: inputs found cached, all sites together
    total_ms: float | None = None  # SieveDB's whole time: inference, materialization, Postgres


def read_explain(stmt: ast.ExplainStmt) -> ExplainRequest:
    options = {o.defname.lower(): o.arg for o in stmt.options or ()}
    fmt = options.get("format")
    is_json = fmt is not None and getattr(fmt, "sval", "").lower() == "json"
    analyze = "analyze" in options and _truthy(options["analyze"])
    return ExplainRequest(RawStream()(stmt.query), analyze, is_json, stmt.query)


def _truthy(arg) -> bool:
    if arg is None:
        return True
    value = getattr(arg, "sval", None) or getattr(arg, "boolval", None) or getattr(arg, "ival", None)
    return str(value).lower() not in ("false", "off", "0")


def text_plan(request: ExplainRequest, postgres_lines: list[str]) -> list[str]:
    lines = [f"SieveDB ML Materialize  (call sites: {len(request.sites)})"]
    for plan in request.sites:
        lines += _site_lines(plan)
    if request.limit_run is not None:
        lines.append(f"  ->  LIMIT Early Stop: {_limit_text(request.limit_run)}")
    lines.append("  ->  Postgres")
    lines += [f"        {line}" for line in postgres_lines]
    if request.analyze and request.total_ms is not None:
        hits = f" (cache hits: {request.cache_hits})" if request.cache_hits is not None else ""
        lines.append(f"SieveDB Total Time: {request.total_ms:.3f} ms{hits}")
    return lines


def _site_lines(plan: SitePlan) -> list[str]:
    spec, site = plan.spec, plan.site
    head = f"  ->  Model Call {spec.name} v{spec.version} on {plan.device}"
    if plan.to_run is not None:
        head += f"  (inputs to run: {plan.to_run}, cached inputs: {plan.cached}, batch size: {BATCH_ROWS})"
    lines = [head]
    where = f" WHERE {site.where_sql}" if site.where_sql else ""
    source = f" FROM {site.from_sql}" if site.from_sql else ""
    lines.append(f"        Inputs: {', '.join(site.args)}{source}{where}")
    if plan.depends:
        lines.append(f"        Depends on: {', '.join(plan.depends)} (inputs counted once those have run)")
    if plan.actual_calls is not None:
        hits = f" cache hits={plan.actual_hits}" if plan.actual_hits is not None else ""
        inference = f" inference={plan.inference_ms:.3f} ms" if plan.inference_ms is not None else ""
        lines.append(f"        Actual: model calls={plan.actual_calls}{hits}{inference}")
    return lines


def _limit_text(run: LimitRun) -> str:
    return run.describe()


def json_plan(request: ExplainRequest, postgres_json: str) -> str:
    document = json.loads(postgres_json)
    top = document[0] if isinstance(document, list) and document else {}
    operators = []
    for plan in request.sites:
        node = {
            "Node Type": "Model Call",
            "Model": plan.spec.name,
            "Model Version": plan.spec.version,
            "Device": plan.device,
            "Inputs": list(plan.site.args),
            "Batch Size": BATCH_ROWS,
        }
        if plan.to_run is not None:
            node.update({"Inputs To Run": plan.to_run, "Cached Inputs": plan.cached})
        if plan.depends:
            node["Depends On"] = plan.depends
        if plan.actual_calls is not None:
            node["Actual Model Calls"] = plan.actual_calls
            if plan.actual_hits is not None:
                node["Actual Cache Hits"] = plan.actual_hits
            node["Inference Time"] = round(plan.inference_ms or 0.0, 3)
        operators.append(node)
    wrapped = {"Node Type": "SieveDB ML Materialize", "Plans": [*operators, top.get("Plan", {})]}
    if request.limit_run is not None:
        wrapped["LIMIT Early Stop"] = _limit_text(request.limit_run)
    out = {**top, "Plan": wrapped}
    if request.analyze and request.total_ms is not None:
        out["SieveDB Total Time"] = round(request.total_ms, 3)
        out["Cache Hits"] = request.cache_hits
    return json.dumps([out], indent=2)
