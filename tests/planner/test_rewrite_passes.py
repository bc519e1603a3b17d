"""Each rewrite pass as SQL in, SQL out (no server): planner.rewrite, planner.calls, planner.limit."""

from __future__ import annotations

import pytest
from pglast import parse_sql

from planner.calls import find_call_sites
from planner.limit import plan_limit
from planner.outcome import PlanError
from planner.rewrite import RewriteContext, rewrite
from planner.rewrite.ast_util import render
from planner.rewrite.bind_params import bind_params
from planner.rewrite.implied import implied_condition
from planner.rewrite.inline_views import inline_views
from planner.rewrite.prune_columns import prune_columns
from planner.rewrite.push_down import PushContext, push_down

MODELS = {"m", "n", "detect", "color"}
VIEWS = {
    "preds": "SELECT d.id, m(d.pixels) AS digit, n(d.pixels) AS other FROM digits d",
    "objects": "SELECT f.frame, f.camera, d.box, d.label, d.x FROM frames f, LATERAL detect(f.pixels) d",
    "colors": "SELECT o.frame, o.box, o.label, color(ARRAY[o.x]) AS color FROM objects o",
}
CTX = RewriteContext(MODELS, VIEWS, {"detect"})


def stmt(sql: str):
    return parse_sql(sql)[0].stmt


def sql_of(node) -> str:
    return render(node)


def expr(sql: str):
    return stmt(f"SELECT 1 WHERE {sql}").whereClause


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "SELECT id FROM preds WHERE digit = 7",
            "SELECT id FROM (SELECT d.id, m(d.pixels) AS digit, n(d.pixels) AS other "
            "FROM digits AS d) AS preds WHERE digit = 7",
        ),
        # a CTE of the same name is the CTE, not the view
        (
            "WITH preds AS (SELECT 1 AS id) SELECT id FROM preds",
            "WITH preds AS (SELECT 1 AS id) SELECT id FROM preds",
        ),
        # other schemas are not the public view
        ("SELECT id FROM other.preds", "SELECT id FROM other.preds"),
        # the alias is kept
        (
            "SELECT p.id FROM preds p",
            "SELECT p.id FROM (SELECT d.id, m(d.pixels) AS digit, n(d.pixels) AS other "
            "FROM digits AS d) AS p",
        ),
    ],
)
def test_inline_views(given, expected):
    assert sql_of(inline_views(stmt(given), VIEWS)) == expected


def test_inline_views_is_recursive_through_chains():
    out = sql_of(inline_views(stmt("SELECT * FROM colors"), VIEWS))
    assert "LATERAL detect(f.pixels) AS d" in out and "color(ARRAY[o.x])" in out


@pytest.mark.parametrize(
    ("given", "kept", "dropped"),
    [
        ("SELECT id FROM preds WHERE digit = 7", "m(d.pixels)", "n(d.pixels)"),
        ("SELECT count(*) FROM preds", None, "m(d.pixels)"),
        ("SELECT p.other FROM preds p", "n(d.pixels)", "m(d.pixels)"),
    ],
)
def test_prune_drops_unread_model_columns(given, kept, dropped):
    out = sql_of(prune_columns(inline_views(stmt(given), VIEWS), MODELS, {"detect"}))
    assert dropped not in out
    if kept:
        assert kept in out


@pytest.mark.parametrize(
    "given",
    [
        "SELECT * FROM preds",  # every column read
        "SELECT p.* FROM preds p",
        "SELECT row_to_json(p) FROM preds p",  # the whole row
        "SELECT id FROM preds JOIN x USING (digit, other)",
    ],
)
def test_prune_keeps_columns_read_by_star_row_or_using(given):
    out = sql_of(prune_columns(inline_views(stmt(given), VIEWS), MODELS, {"detect"}))
    assert "m(d.pixels)" in out and "n(d.pixels)" in out


def test_prune_never_drops_a_model_function_in_from():
    """A table-returning model in FROM decides how many rows there are."""
    out = sql_of(prune_columns(inline_views(stmt("SELECT count(*) FROM objects"), VIEWS), MODELS, {"detect"}))
    assert "LATERAL detect(f.pixels)" in out


def _push(sql: str) -> str:
    return sql_of(push_down(inline_views(stmt(sql), VIEWS), PushContext(MODELS)))


def test_push_down_reaches_every_view_level():
    out = _push("SELECT * FROM colors WHERE frame = 270")
    assert "FROM frames AS f, LATERAL detect(f.pixels) AS d WHERE f.frame = 270" in out
    assert "WHERE o.frame = 270" in out


def test_push_down_moves_what_an_or_implies():
    out = _push("SELECT id FROM preds WHERE id < 3 OR (digit = 7 AND id > 100)")
    assert "FROM digits AS d WHERE d.id < 3 OR d.id > 100" in out


def test_push_down_leaves_model_conditions_where_they_are():
    out = _push("SELECT id FROM preds WHERE digit = 7")
    assert "FROM digits AS d)" in out


@pytest.mark.parametrize(
    "given",
    [
        "SELECT id FROM preds WHERE random() < 0.5",  # volatile
        "SELECT id FROM preds WHERE id IN (SELECT x FROM t)",  # not known to be uncorrelated
        "SELECT a.id FROM t a LEFT JOIN preds p ON p.id = a.id WHERE p.id = 3",  # nullable side
        "SELECT id FROM (SELECT * FROM preds LIMIT 5) s WHERE id = 3",  # above a LIMIT
    ],
)
def test_push_down_refuses_what_would_change_the_rows(given):
    out = _push(given)
    assert "FROM digits AS d)" in out, out


def test_push_down_moves_a_known_uncorrelated_subquery():
    ctx = PushContext(MODELS, frozenset({"SELECT x FROM t"}))
    out = sql_of(
        push_down(inline_views(stmt("SELECT id FROM preds WHERE id IN (SELECT x FROM t)"), VIEWS), ctx)
    )
    assert "FROM digits AS d WHERE d.id IN (SELECT x FROM t) OR FALSE)" in out  # never a semi-join


def test_push_down_transfers_a_condition_across_a_join_equality():
    out = _push("SELECT o.frame FROM objects o JOIN preds p ON p.id = o.frame WHERE o.frame BETWEEN 5 AND 9")
    assert "FROM digits AS d WHERE d.id BETWEEN 5 AND 9" in out


@pytest.mark.parametrize(
    ("given", "implied"),
    [
        ("a = 1 OR (m(x) = 2 AND b = 3)", "a = 1 OR b = 3"),
        ("a = 1 AND m(x) = 2", "a = 1"),
        ("a = 1 OR m(x) = 2", None),
        ("NOT (m(x) = 2 AND a = 1)", None),
        ("(a = 1 AND m(x) = 1) OR (a = 2 AND m(x) = 3)", "a = 1 OR a = 2"),
    ],
)
def test_implied_condition(given, implied):
    found = implied_condition(expr(given), MODELS)
    assert (sql_of(found) if found is not None else None) == implied


def _sites(sql: str):
    planned = rewrite(stmt(sql), CTX)
    return find_call_sites([planned], MODELS, CTX.push)


def test_a_point_query_through_a_chain_narrows_every_model():
    sites = _sites("SELECT * FROM colors WHERE frame = 270")
    assert [s.model for s in sites] == ["detect", "color"]
    assert sites[0].where_sql == "(f.frame = 270)"
    assert "WHERE f.frame = 270" in sites[1].from_sql


def test_a_model_over_a_lateral_models_rows_at_one_level():
    sites = _sites(
        "SELECT f.frame, color(ARRAY[d.x]) FROM frames f, LATERAL detect(f.pixels) d WHERE d.label = 'car'"
    )
    assert [s.model for s in sites] == ["detect", "color"]
    detect, color = sites
    assert detect.from_sql == "frames AS f" and detect.where_sql == ""
    assert color.from_sql == "frames AS f, LATERAL detect(f.pixels) AS d"
    assert color.where_sql == "(d.label = 'car')"


def test_a_cte_in_scope_reaches_the_input_query():
    (site,) = _sites("WITH few AS (SELECT * FROM digits WHERE id < 3) SELECT m(pixels) FROM few")
    assert site.with_sql == "WITH few AS (SELECT * FROM digits WHERE id < 3)"


def test_a_data_modifying_cte_is_refused():
    with pytest.raises(PlanError) as caught:
        _sites("WITH gone AS (DELETE FROM t RETURNING *) SELECT m(pixels) FROM digits")
    assert caught.value.sqlstate == "0A000"


def test_conditions_on_outer_rows_stay_out_of_a_correlated_levels_inputs():
    (site,) = _sites(
        "SELECT a.id FROM t a WHERE EXISTS (SELECT 1 FROM digits d WHERE d.id = a.id AND m(d.pixels) = 1)"
    )
    assert site.from_sql == "digits AS d" and site.where_sql == ""


def test_unread_view_model_has_no_call_site():
    assert [s.model for s in _sites("SELECT id FROM preds WHERE digit = 7 LIMIT 10")] == ["m"]
    assert _sites("SELECT count(*) FROM preds") == []


def test_limit_guard_sits_on_the_driving_table_under_the_views():
    plan = plan_limit([rewrite(stmt("SELECT * FROM colors WHERE label = 'car' LIMIT 5"), CTX)])
    assert plan is not None and plan.table == "frames" and plan.limit == 5
    plan.set_range(4, 8)
    assert "f.ctid >= CAST('(4,0)' AS tid) AND f.ctid < CAST('(8,0)' AS tid)" in plan.sql()


def test_an_ordered_limit_batches_by_the_drivers_first_rows_in_that_order():
    plan = plan_limit([rewrite(stmt("SELECT id FROM preds WHERE digit = 7 ORDER BY id DESC LIMIT 5"), CTX)])
    assert plan is not None and plan.order is not None
    assert (plan.order.column, plan.order.descending, plan.order.nulls_first) == ("id", True, True)
    assert 'ORDER BY "d"."id" DESC NULLS FIRST OFFSET 63 LIMIT 1' in plan.bound_sql(64)
    plan.set_bound("1700", "integer")
    assert "d.id >= CAST('1700' AS integer) OR d.id IS NULL" in plan.sql()


@pytest.mark.parametrize(
    "given",
    [
        "SELECT * FROM preds ORDER BY digit LIMIT 5",  # ordered by a model output
        "SELECT * FROM preds ORDER BY id + 1 LIMIT 5",  # not a column
        "SELECT count(*) FROM preds LIMIT 5",
        "SELECT DISTINCT digit FROM preds LIMIT 5",
        "SELECT * FROM preds LIMIT $1",
        "SELECT * FROM t FULL JOIN preds p ON p.id = t.id LIMIT 5",
    ],
)
def test_limit_plan_does_not_apply(given):
    assert plan_limit([rewrite(stmt(given), CTX)]) is None


def test_bind_params_puts_values_in_place():
    class Value:
        def __init__(self, text, type_name):
            self.text, self.type_name = text, type_name

    out = bind_params(
        stmt("SELECT m(pixels) FROM digits WHERE id = $1 AND label = $2"), [Value("3", "int4"), None]
    )
    assert sql_of(out) == "SELECT m(pixels) FROM digits WHERE id = CAST('3' AS int4) AND label = $2"


def test_push_down_follows_using_equalities():
    out = _push("SELECT o.frame FROM objects o JOIN preds p ON true JOIN preds q USING (id) WHERE p.id < 5")
    assert "FROM digits AS d WHERE d.id < 5" in out


def test_an_outer_joins_nullable_side_gets_its_on_conditions_and_carried_where_conditions():
    out = _push(
        "SELECT f.frame FROM frames f LEFT JOIN objects o ON o.frame = f.frame AND o.camera = 2 "
        "WHERE f.frame < 50"
    )
    assert "WHERE f.camera = 2 AND f.frame < 50" in out


def test_a_condition_on_the_nullable_side_in_where_is_never_moved_into_it():
    out = _push("SELECT f.frame FROM frames f LEFT JOIN objects o ON o.frame = f.frame WHERE o.frame IS NULL")
    assert "LATERAL detect(f.pixels) AS d)" in out  # objects got nothing


def test_a_correlated_subquery_gets_the_outer_condition_through_its_equality():
    out = _push(
        "SELECT f.frame FROM frames f WHERE f.frame < 50 AND "
        "EXISTS (SELECT 1 FROM objects o WHERE o.frame = f.frame)"
    )
    assert "LATERAL detect(f.pixels) AS d WHERE f.frame < 50" in out


def test_a_scalar_subquery_in_the_select_list_gets_the_outer_condition():
    out = _push(
        "SELECT f.frame, (SELECT count(*) FROM objects o WHERE o.frame = f.frame) "
        "FROM frames f WHERE f.frame < 30"
    )
    assert "LATERAL detect(f.pixels) AS d WHERE f.frame < 30" in out


def test_a_filtered_table_joined_to_a_model_view_narrows_it_by_its_keys():
    (site,) = _sites("SELECT t.a, p.digit FROM t JOIN preds p ON p.id = t.a WHERE t.b > 5")
    assert site.where_sql == "(d.id IN (SELECT t.a FROM t WHERE t.b > 5) OR FALSE)"


def test_a_cte_joined_to_a_model_view_narrows_it_and_its_own_models_run_first():
    sites = _sites(
        "WITH few AS (SELECT id FROM preds WHERE digit = 1) SELECT p.other FROM preds p JOIN few USING (id)"
    )
    assert [s.model for s in sites] == ["m", "n"]  # m (in the CTE) feeds n's inputs
    assert "(d.id IN (SELECT few.id FROM few) OR FALSE)" in sites[1].where_sql


def test_an_unfiltered_table_gives_no_semi_join():
    (site,) = _sites("SELECT t.a, p.digit FROM t JOIN preds p ON p.id = t.a")
    assert site.where_sql == ""


def test_an_in_subquery_moves_as_an_array_so_postgres_filters_before_the_model():
    ctx = RewriteContext(MODELS, VIEWS, {"detect"}, frozenset({"SELECT x FROM t"}))
    planned = rewrite(stmt("SELECT id, digit FROM preds WHERE id IN (SELECT x FROM t)"), ctx)
    (site,) = find_call_sites([planned], MODELS, ctx.push)
    assert site.where_sql == "(d.id IN (SELECT x FROM t) OR FALSE)"


def test_passes_are_idempotent():
    once = rewrite(stmt("SELECT * FROM colors WHERE frame = 270 OR (frame = 3 AND label = 'x')"), CTX)
    assert sql_of(rewrite(once, CTX)) == sql_of(once)


@pytest.mark.parametrize(
    ("given", "dropped"),
    [
        # a name read by a CTE is not a name read of the main query's view
        (
            "WITH few AS (SELECT id FROM preds WHERE digit = 1) SELECT p.id FROM preds p JOIN few USING (id)",
            3,
        ),
        # a name qualified by another alias is not this subquery's
        ("SELECT p.id FROM preds p JOIN preds q ON q.id = p.id WHERE q.digit = 1", 3),
    ],
)
def test_prune_counts_only_names_that_can_reach_the_subquery(given, dropped):
    out = sql_of(prune_columns(inline_views(stmt(given), VIEWS), MODELS, {"detect"}))
    calls = out.count("m(d.pixels)") + out.count("n(d.pixels)")
    assert 4 - calls == dropped, out


def test_a_subquery_taking_the_first_rows_in_order_reads_only_those():
    out = sql_of(
        rewrite(
            stmt("SELECT * FROM (SELECT id, digit FROM preds ORDER BY id LIMIT 10) t WHERE digit = 7"), CTX
        )
    )
    assert "d.id <= (SELECT d.id FROM digits AS d ORDER BY d.id ASC NULLS LAST LIMIT 1 OFFSET 9)" in out


@pytest.mark.parametrize(
    "given",
    [
        # a condition between the table and the LIMIT drops rows: the first ten are not the first ten frames
        "SELECT * FROM (SELECT id, digit FROM preds WHERE digit = 7 ORDER BY id LIMIT 10) t",
        # a model with several rows per input changes the count
        "SELECT * FROM (SELECT frame, box FROM objects ORDER BY frame LIMIT 10) t",
        # ordered by a model output
        "SELECT * FROM (SELECT id, digit FROM preds ORDER BY digit LIMIT 10) t",
    ],
)
def test_a_subquery_limit_that_does_not_keep_one_row_per_table_row_is_left_alone(given):
    out = sql_of(rewrite(stmt(given), CTX))
    assert "OFFSET 9 LIMIT 1" not in out, out
