"""What an assertion reads and which of its rows flag (pure: rows in, flagged keys out).

A checked row comes back as one JSON object (``to_jsonb`` of the query's row), so keys keep their
column names and values are JSON-ready."""

from __future__ import annotations

import json

import numpy as np

from planner.assertions.grammar import Consistency, Learned

# A learned assertion flags rows less likely than this share of their group's rows.
LEARNED_THRESHOLD = 0.99


def query_of(parsed: Consistency | Learned) -> str:
    if isinstance(parsed, Consistency):
        return parsed.query
    group = f"({parsed.per})::text" if parsed.per else "NULL::text"
    features = ", ".join(f"(({expr}))::float8 AS sieve_f{i}" for i, (_, expr) in enumerate(parsed.features))
    keys = ", ".join(parsed.key)
    return f"SELECT {keys}, {group} AS sieve_group, {features} FROM {parsed.relation}"


def as_json(query: str) -> str:
    """Each row of ``query`` as one jsonb object (column names kept, values JSON-ready)."""
    return f"SELECT pg_catalog.to_jsonb(sieve_q)::text FROM ({query}) AS sieve_q"


def consistency_flags(objects: list[dict]) -> list[tuple[dict, float]]:
    """(key, severity) of the rows that flag: severity > 0 (no severity column: 1.0)."""
    out = {}
    for obj in objects:
        severity = obj.pop("severity", 1.0)
        if severity is None or float(severity) <= 0:
            continue  # abstains
        key = json.dumps(obj, sort_keys=True)
        out[key] = max(out.get(key, 0.0), float(severity))
    return [(json.loads(k), s) for k, s in out.items()]


def learned_flags(parsed: Learned, objects: list[dict]) -> list[tuple[dict, float]]:
    """(key, severity) of the rows less likely than LEARNED_THRESHOLD of their group's rows."""
    from sampling import fit_observations, observation_severity  # deferred: scipy start-up

    if not objects:
        return []
    width = len(parsed.features)
    features = np.array(
        [
            [np.nan if o.get(f"sieve_f{i}") is None else o[f"sieve_f{i}"] for i in range(width)]
            for o in objects
        ],
        dtype=np.float64,
    )
    groups = np.array([o.get("sieve_group") or "" for o in objects], dtype=object) if parsed.per else None
    complete = ~np.isnan(features).any(axis=1)
    if complete.sum() < 2:
        return []
    model = fit_observations(features[complete], groups[complete] if groups is not None else None)
    severity = observation_severity(model, features, groups)
    out = []
    for obj, s in zip(objects, severity, strict=True):
        if np.isfinite(s) and s >= LEARNED_THRESHOLD:
            key = {k: v for k, v in obj.items() if k != "sieve_group" and not k.startswith("sieve_f")}
            out.append((key, float(s)))
    return out
