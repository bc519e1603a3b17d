"""status_for: what a role may see (its own statements and log rows, the models it may execute),
read as that role; and the traces approximate runs leave in sieve.query_log."""

from __future__ import annotations

import json

import pytest

from server.status_data import StatusRefused, status_for
from tests.observe.test_activity import Background, wait_listed

RECALL = (
    "select id from digits where id < 1000 and digit_oracle(pixels) = 7 recall target 90% confidence 95% "
    "budget 300 using proxy digit_proxy_p7(pixels)"
)


def status(observed, role: str) -> dict:
    return observed.live.call(status_for(observed.live.server, role, "postgres"))


def test_a_role_sees_its_own_statements_log_rows_and_the_models_it_may_execute(observed):
    name = observed.slow_function("slow_status")
    with observed.connect() as conn:
        conn.execute(
            "create function secret_digit(pixels real[]) returns int language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        conn.execute("revoke execute on function secret_digit(real[]) from public")
        conn.execute("select secret_digit(pixels) from digits where id < 20").fetchall()
    with observed.connect("alice") as conn:
        conn.execute("select id, digit_oracle(pixels) from digits where id < 40").fetchall()
    job = Background(observed, f"select count(*) from wide_in where {name}(x) >= 0")
    wait_listed(observed, name, job)
    try:
        mine, everything = status(observed, "alice"), status(observed, "postgres")
    finally:
        job.join()
    json.dumps(mine), json.dumps(everything)  # plain data
    assert mine["superuser"] is False and everything["superuser"] is True
    assert not [r for r in mine["running"] if name in r["text"]]
    assert [r["role"] for r in everything["running"] if name in r["text"]] == ["postgres"]
    assert mine["recent"] and {r["role"] for r in mine["recent"]} == {"alice"}
    assert any("digit_oracle" in r["query"] for r in mine["recent"])
    assert {"alice", "postgres"} <= {r["role"] for r in everything["recent"]}
    names = {m["name"] for m in mine["models"]}
    assert "digit_oracle" in names and "secret_digit" not in names
    secret = next(m for m in everything["models"] if m["name"] == "secret_digit")
    assert secret["cache_bytes"] > 0 and secret["file"].endswith("digits_mlp.onnx")


def trace_of(conn, sql_part: str) -> tuple:
    return conn.execute(
        "select query_id, trace, rows_labelled, certified_level, target from sieve.query_log "
        "where query like %s and trace is not null order by query_id desc limit 1",
        (f"%{sql_part}%",),
    ).fetchone()


def find_key(node, key: str):
    if isinstance(node, dict):
        if key in node:
            return node[key]
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            found = find_key(item, key)
            if found is not None:
                return found
    return None


def test_an_approximate_run_leaves_a_trace_of_its_scores_samples_and_thresholds(observed):
    with observed.connect() as conn:
        conn.execute("set sieve.seed = 11")
        conn.execute(RECALL).fetchall()
        query_id, trace, labelled, certified_level, target = trace_of(conn, "id < 1000 and digit_oracle")
        (plan,) = conn.execute("explain (analyze, format json) " + RECALL).fetchone()
        explained_id, explained, *_ = trace_of(conn, "explain (analyze, format json)")
    assert trace["kind"] == "recall" and trace["candidates"] == 1000
    assert sum(trace["histogram"]["counts"]) == 1000 and len(trace["histogram"]["counts"]) == 20
    assert trace["histogram"]["edges"][0] == 0.0 and trace["histogram"]["edges"][-1] == 1.0
    assert trace["sampled_rows"] == labelled == len(trace["sampled"]) and 0 < labelled <= 300
    assert all(0.0 <= score <= 1.0 and isinstance(label, bool) for score, label in trace["sampled"])
    assert any(label for _, label in trace["sampled"])
    assert set(trace["thresholds"]) == {"tau"}
    assert trace["target"] == target == 0.9 and trace["certified_level"] == certified_level
    # EXPLAIN ANALYZE runs the same seeded sampling and logs its trace, with the thresholds it shows
    plan = json.loads(plan) if isinstance(plan, str) else plan
    assert explained_id > query_id and explained["thresholds"] == trace["thresholds"]
    assert find_key(plan, "Thresholds") == trace["thresholds"]
    assert explained["sampled"] == trace["sampled"]
    shown = {t["query_id"]: t for t in status(observed, "postgres")["traces"]}
    assert shown[query_id]["trace"] == trace and shown[query_id]["mode"] == "recall"


def test_an_aggregate_trace_counts_the_units_it_labelled(observed):
    with observed.connect() as conn:
        conn.execute("set sieve.seed = 4")
        conn.execute(
            "select count(*) from digits where digit_oracle(pixels) = 2 error target 25% budget 250 "
            "using proxy digit_proxy_p7(pixels)"
        ).fetchall()
        _, trace, labelled, _, target = trace_of(conn, "digit_oracle(pixels) = 2 error target")
    assert trace["kind"] == "aggregate" and trace["candidates"] == 1797
    assert sum(trace["histogram"]["counts"]) == 1797
    assert trace["sampled_rows"] == labelled == len(trace["sampled"]) and 0 < labelled <= 250
    assert trace["target"] == target == 0.25


def test_the_status_of_a_role_that_does_not_exist_is_refused_with_its_sqlstate(observed):
    with pytest.raises(StatusRefused, match="no_such_role") as refused:
        status(observed, "no_such_role")
    assert refused.value.sqlstate == "22023"
    assert status(observed, "alice")["role"] == "alice"  # the pool's connection is fine after it
