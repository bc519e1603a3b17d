"""``planner.approx.analyse``: the approximate plan read off SQL text alone (no database).

The statements are written as ``flatten_views`` leaves them (views merged: base tables and LATERAL
model functions in FROM)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pglast import parse_sql

from planner.approx.analyse import analyse
from planner.approx.clause import split_clause
from planner.outcome import PlanError

MODELS = {
    "detect": SimpleNamespace(max_rows=None),
    "boxed": SimpleNamespace(max_rows=3),
    "color": SimpleNamespace(max_rows=1),
    "vehicle_count": SimpleNamespace(max_rows=1),
    "digit": SimpleNamespace(max_rows=1),
}


def plan_of(sql: str):
    body, clause = split_clause(sql)
    assert clause is not None
    return analyse(sql, parse_sql(body)[0].stmt, clause, MODELS)


def refused(sql: str) -> str:
    with pytest.raises(PlanError) as info:
        plan_of(sql)
    assert info.value.sqlstate == "0A000", info.value
    return str(info.value)


def test_a_count_over_a_scalar_model_samples_rows_of_its_table():
    plan = plan_of(
        "SELECT count(*) FROM frames f WHERE vehicle_count(f.pixels) > 0 AND f.camera = 1 ERROR TARGET 5%"
    )
    assert plan.kind == "aggregate"
    assert plan.unit_names == ["f"] and plan.unit_from == "frames AS f"
    assert plan.free == ["f.camera = 1"]
    assert plan.modelled == ["vehicle_count(f.pixels) > 0"]
    assert plan.max_rows == 1
    assert [(a.kind, a.value, a.reads_model) for a in plan.aggregates] == [("count", None, False)]


def test_a_detector_view_is_cluster_sampled_by_frame():
    plan = plan_of(
        "SELECT avg(d.x_min), count(*) FROM frames f, LATERAL detect(f.pixels) d "
        "WHERE d.x_min > 0.5 AND f.frame < 100 ERROR TARGET 10%"
    )
    assert plan.unit_names == ["f"] and plan.unit_from == "frames AS f"
    assert plan.free == ["f.frame < 100"]
    assert plan.modelled == ["d.x_min > 0.5"]  # a column of the model's rows needs the model
    assert plan.models == ["detect"]
    assert plan.max_rows is None  # detect declares no row bound: intervals are estimates
    assert [(a.kind, a.value, a.reads_model) for a in plan.aggregates] == [
        ("avg", "d.x_min", True),
        ("count", None, False),
    ]


def test_a_declared_row_bound_is_the_rows_per_unit():
    plan = plan_of("SELECT count(*) FROM frames f, LATERAL boxed(f.pixels) b ERROR TARGET 10%")
    assert plan.max_rows == 3


def test_group_by_a_model_output_and_several_aggregates():
    plan = plan_of(
        "SELECT d.label, count(*), sum(f.camera), count(d.score) FROM frames f, LATERAL detect(f.pixels) d "
        "GROUP BY d.label ERROR TARGET 10%"
    )
    assert plan.groups == ["d.label"] and plan.groups_read_models
    assert [o.group for o in plan.outputs] == [0, None, None, None]
    assert [(a.kind, a.reads_model) for a in plan.aggregates] == [
        ("count", False),
        ("sum", False),
        ("count", True),
    ]


def test_chained_models_are_all_read():
    plan = plan_of(
        "SELECT count(*) FROM frames f, LATERAL detect(f.pixels) d "
        "WHERE color(ARRAY[d.x_min, d.y_min]) = 'red' ERROR TARGET 10%"
    )
    assert plan.models == ["detect", "color"]


def test_joined_tables_are_one_unit_per_row_pair():
    plan = plan_of(
        "SELECT count(*) FROM frames f JOIN cameras c ON c.id = f.camera "
        "WHERE vehicle_count(f.pixels) > 2 ERROR TARGET 10%"
    )
    assert plan.unit_names == ["f", "c"]
    assert "concat_ws" in plan.key_sql
    assert plan.guard(["(0,1),(0,2)"]).endswith("::text[])")


def test_a_table_named_by_a_reserved_word_is_quoted():
    plan = plan_of('SELECT count(*) FROM "user" WHERE vehicle_count(pixels) > 0 ERROR TARGET 10%')
    assert plan.unit_names == ['"user"'] and plan.key_sql == '"user".ctid::text'


def test_the_unit_guard_of_one_table_is_a_tid_scan():
    plan = plan_of("SELECT count(*) FROM frames WHERE vehicle_count(pixels) > 0 ERROR TARGET 10%")
    assert plan.guard(["(0,1)", "(3,4)"]) == 'frames.ctid = ANY(\'{"(0,1)","(3,4)"}\'::tid[])'


def test_an_uncorrelated_subquery_stays_a_free_condition():
    plan = plan_of(
        "SELECT count(*) FROM frames f WHERE vehicle_count(f.pixels) > 0 "
        "AND f.frame IN (SELECT frame + 15 FROM frames WHERE frame < 3000) ERROR TARGET 10%"
    )
    assert plan.free == ["f.frame IN (SELECT frame + 15 FROM frames WHERE frame < 3000)"]


def test_a_proxy_over_the_model_rows_is_refused():
    words = refused(
        "SELECT count(*) FROM frames f, LATERAL detect(f.pixels) d ERROR TARGET 10% USING PROXY d.score"
    )
    assert "reads the rows of the model detect" in words
    plan = plan_of(
        "SELECT count(*) FROM frames f, LATERAL detect(f.pixels) d ERROR TARGET 10% USING PROXY f.busy"
    )
    assert plan.clause.proxy == "f.busy"


def test_a_query_without_models_is_answered_exactly():
    assert plan_of("SELECT count(*) FROM frames WHERE camera = 1 ERROR TARGET 10%").kind == "exact"


def test_a_selection_with_its_one_oracle():
    plan = plan_of("SELECT id FROM digits WHERE digit(pixels) = 7 RECALL TARGET 90% USING PROXY score")
    assert plan.kind == "selection" and plan.site.model == "digit" and plan.models == ["digit"]


def test_a_proxy_ordered_limit_reads_its_count():
    plan = plan_of("SELECT id FROM digits WHERE digit(pixels) = 7 LIMIT 5 OFFSET 2 USING PROXY score")
    assert (plan.kind, plan.limit) == ("limit", 7)


@pytest.mark.parametrize(
    "sql, words",
    [
        (
            "SELECT id FROM frames f, LATERAL detect(f.pixels) d WHERE d.label = 'car' RECALL TARGET 90%",
            "table-returning",
        ),
        (
            "SELECT count(*) FROM frames WHERE vehicle_count(pixels) > 0 ORDER BY 1 ERROR TARGET 10%",
            "ORDER BY",
        ),
        (
            "SELECT count(DISTINCT camera) FROM frames WHERE vehicle_count(pixels) > 0 ERROR TARGET 10%",
            "DISTINCT",
        ),
        (
            "SELECT camera, count(*) FROM frames WHERE vehicle_count(pixels) > 0 GROUP BY camera "
            "HAVING count(*) > 1 ERROR TARGET 10%",
            "HAVING",
        ),
        ("SELECT max(camera) FROM frames WHERE vehicle_count(pixels) > 0 ERROR TARGET 10%", "max(camera)"),
        (
            "SELECT count(*) FROM (SELECT * FROM frames) s WHERE vehicle_count(s.pixels) > 0 "
            "ERROR TARGET 10%",
            "subquery in FROM",
        ),
        (
            "SELECT count(*) FROM frames f LEFT JOIN cameras c ON true WHERE vehicle_count(f.pixels) > 0 "
            "ERROR TARGET 10%",
            "outer join",
        ),
        ("SELECT id FROM digits WHERE id < 5 RECALL TARGET 90%", "model predicate"),
        ("SELECT id FROM digits WHERE digit(pixels) = 7 ERROR TARGET 5%", "COUNT/SUM/AVG"),
        ("SELECT count(*) FROM digits WHERE digit(pixels) = 7 RECALL TARGET 90%", "use ERROR TARGET"),
        (
            "SELECT id FROM digits WHERE digit(pixels) = 7 AND vehicle_count(pixels) > 1 RECALL TARGET 90%",
            "exactly one model",
        ),
        ("SELECT id FROM digits WHERE digit(pixels) = 7 ORDER BY id LIMIT 3 USING PROXY score", "ORDER BY"),
        (
            "SELECT id FROM digits WHERE digit(pixels) = 7 UNION SELECT 1 FROM t RECALL TARGET 90%",
            "set operations",
        ),
    ],
)
def test_unsupported_shapes_are_refused_with_the_reason(sql, words):
    assert words in refused(sql)
