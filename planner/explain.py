"""EXPLAIN [ANALYZE] for statements that call models: the ML operators above Postgres's plan."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from pglast import ast
from pglast.stream import RawStream

from planner.calls import CallSite
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


@dataclass
class ExplainRequest:
    inner_sql: str
    analyze: bool
    json: bool
    statement: ast.Node
    sites: list[SitePlan] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


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
        spec, site = plan.spec, plan.site
        head = f"  ->  Model Call {spec.name} v{spec.version} on {plan.device}"
        if plan.to_run is not None:
            head += (
                f"  (inputs to run: {plan.to_run}, cached inputs: {plan.cached}, batch size: {BATCH_ROWS})"
            )
        lines.append(head)
        where = f" WHERE {site.where_sql}" if site.where_sql else ""
        source = f" FROM {site.from_sql}" if site.from_sql else ""
        lines.append(f"        Inputs: {', '.join(site.args)}{source}{where}")
        if plan.actual_calls is not None:
            lines.append(
                f"        Actual: model calls={plan.actual_calls} cache hits={plan.actual_hits} "
                f"inference={plan.inference_ms:.3f} ms"
            )
    lines.append("  ->  Postgres")
    lines += [f"        {line}" for line in postgres_lines]
    return lines


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
        if plan.actual_calls is not None:
            node.update(
                {
                    "Actual Model Calls": plan.actual_calls,
                    "Actual Cache Hits": plan.actual_hits,
                    "Inference Time": round(plan.inference_ms, 3),
                }
            )
        operators.append(node)
    wrapped = {"Node Type": "SieveDB ML Materialize", "Plans": [*operators, top.get("Plan", {})]}
    return json.dumps([{**top, "Plan": wrapped}], indent=2)
