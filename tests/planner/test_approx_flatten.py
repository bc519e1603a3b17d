"""flatten_views as SQL in, SQL out (no server): the views are written as pg_get_viewdef prints
them under an empty search_path, which is what the catalog hands the planner. Each rewrite was
also checked once against Postgres (same rows before and after, stub SQL functions as models)."""

from __future__ import annotations

import pytest
from pglast import parse_sql

from planner.approx.flatten import flatten_views
from planner.outcome import PlanError
from planner.rewrite.ast_util import render

DETECT = "LATERAL public.detect(f.pixels) AS d (box, label, x_min, y_min, x_max, y_max, score)"
VIEWS = {
    "objects": "SELECT f.frame, f.camera, d.box, d.label, d.x_min, d.y_min, d.x_max, d.y_max, d.score "
    "FROM public.frames f, LATERAL public.detect(f.pixels) d(box, label, x_min, y_min, x_max, y_max, score)",
    "colors": "SELECT frame, camera, box, label, public.color(ARRAY[x_min, y_min, x_max, y_max]) AS color "
    "FROM public.objects o",
    "frame_stats": "SELECT frame, camera, public.vehicle_count(pixels) AS vehicles, "
    "public.traffic_light(pixels) AS light FROM public.frames f",
    "counts": "SELECT frame, public.vehicle_count(pixels) AS n FROM public.frames f",
    "bare": "SELECT frame, public.vehicle_count(pixels) AS n FROM public.frames WHERE (frame > 3)",
    "busy": "SELECT frame, n FROM public.counts c WHERE (n > 1)",
    "Odd View": 'SELECT frame AS "Frame No", public.vehicle_count(pixels) AS "N" FROM public.frames f',
    "dist": "SELECT DISTINCT camera FROM public.frames f WHERE (public.vehicle_count(pixels) > 0)",
    "per_camera": "SELECT camera, count(*) AS n FROM public.frames f "
    "WHERE (public.vehicle_count(pixels) > 0) GROUP BY camera",
    "firsts": "SELECT frame, public.vehicle_count(pixels) AS n FROM public.frames f LIMIT 10",
    "ranked": "SELECT frame, rank() OVER (ORDER BY public.vehicle_count(pixels)) AS r FROM public.frames f",
    "unioned": "SELECT frame FROM public.frames f WHERE (public.vehicle_count(pixels) > 1) "
    "UNION SELECT k FROM public.other",
}


def flat(sql: str) -> tuple[str, object]:
    stmt = parse_sql(sql)[0].stmt
    result = flatten_views(stmt, VIEWS)
    return render(stmt), result


def refused(sql: str) -> PlanError:
    with pytest.raises(PlanError) as caught:
        flat(sql)
    return caught.value


CASES = [
    pytest.param(
        "SELECT COUNT(*) FROM counts WHERE n > 0 AND frame IN "
        "(SELECT frame + 15 FROM frames WHERE frame < 3000)",
        "SELECT count(*) FROM public.frames AS f WHERE public.vehicle_count(f.pixels) > 0 "
        "AND f.frame IN (SELECT frame + 15 FROM frames WHERE frame < 3000)",
        id="issue-11: an IN subquery's own columns are not rebound",
    ),
    pytest.param(
        "SELECT count(*) FROM counts WHERE frame > (SELECT avg(frame) FROM frames)",
        "SELECT count(*) FROM public.frames AS f WHERE f.frame > (SELECT avg(frame) FROM frames)",
        id="a scalar subquery survives intact",
    ),
    pytest.param(
        "SELECT AVG(x_min), COUNT(*) FROM objects WHERE x_min > 1000",
        f"SELECT avg(d.x_min), count(*) FROM public.frames AS f, {DETECT} WHERE d.x_min > 1000",
        id="a view over a table-returning model keeps its LATERAL call",
    ),
    pytest.param(
        "SELECT c.camera, count(*) FROM colors c WHERE c.color = 'red' GROUP BY c.camera",
        "SELECT f.camera AS camera, count(*) FROM public.frames AS f, "
        f"{DETECT} WHERE public.color(ARRAY[d.x_min, d.y_min, d.x_max, d.y_max]) = 'red' GROUP BY f.camera",
        id="colors over objects over frames flattens fully",
    ),
    pytest.param(
        "SELECT frame, n FROM busy WHERE frame < 50",
        "SELECT f.frame AS frame, public.vehicle_count(f.pixels) AS n FROM public.frames AS f "
        "WHERE public.vehicle_count(f.pixels) > 1 AND f.frame < 50",
        id="the WHERE of each view in a chain joins the query's",
    ),
    pytest.param(
        "SELECT * FROM frame_stats",
        "SELECT f.frame AS frame, f.camera AS camera, public.vehicle_count(f.pixels) AS vehicles, "
        "public.traffic_light(f.pixels) AS light FROM public.frames AS f",
        id="SELECT * lists the view's columns",
    ),
    pytest.param(
        "SELECT * FROM counts c LEFT JOIN t ON c.frame = t.id WHERE n > 1",
        "SELECT f.frame AS frame, public.vehicle_count(f.pixels) AS n, t.* FROM public.frames AS f "
        "LEFT JOIN t ON f.frame = t.id WHERE public.vehicle_count(f.pixels) > 1",
        id="SELECT * over a view and a table; the preserved side of a LEFT JOIN merges",
    ),
    pytest.param(
        "SELECT v.*, t.k FROM counts v JOIN t ON t.id = v.frame",
        "SELECT f.frame AS frame, public.vehicle_count(f.pixels) AS n, t.k FROM public.frames AS f "
        "INNER JOIN t ON t.id = f.frame",
        id="view.* lists the view's columns",
    ),
    pytest.param(
        "SELECT label FROM t JOIN objects o ON o.frame = t.id",
        f"SELECT d.label AS label FROM t INNER JOIN (public.frames AS f CROSS JOIN {DETECT}) "
        "ON f.frame = t.id",
        id="a view of several FROM items in a JOIN becomes a CROSS JOIN LATERAL",
    ),
    pytest.param(
        "SELECT count(*) FROM counts c WHERE EXISTS "
        "(SELECT 1 FROM frames f WHERE f.frame = c.frame + 1 AND c.n > 2)",
        "SELECT count(*) FROM public.frames AS f_1 WHERE EXISTS (SELECT 1 FROM frames AS f "
        "WHERE f.frame = f_1.frame + 1 AND public.vehicle_count(f_1.pixels) > 2)",
        id="a correlated reference moves in under a fresh alias where the subquery uses f",
    ),
    pytest.param(
        "SELECT n FROM counts c WHERE frame IN (SELECT c.frame FROM other c)",
        "SELECT public.vehicle_count(f.pixels) AS n FROM public.frames AS f "
        "WHERE f.frame IN (SELECT c.frame FROM other AS c)",
        id="the view's alias shadowed inside a subquery is the subquery's",
    ),
    pytest.param(
        "SELECT count(*) FROM objects o WHERE o.frame IN "
        "(SELECT k FROM (SELECT k FROM other) s WHERE s.k = o.box)",
        f"SELECT count(*) FROM public.frames AS f, {DETECT} "
        "WHERE f.frame IN (SELECT k FROM (SELECT k FROM other) AS s WHERE s.k = d.box)",
        id="a correlated qualified reference is rewritten",
    ),
    pytest.param(
        "SELECT count(*) FROM counts WHERE frame IN "
        "(SELECT x FROM (SELECT k AS x FROM other) s WHERE x = frame)",
        "SELECT count(*) FROM public.frames AS f WHERE f.frame IN "
        "(SELECT x FROM (SELECT k AS x FROM other) AS s WHERE x = f.frame)",
        id="an unqualified name a subquery provably lacks reaches the view",
    ),
    pytest.param(
        "WITH w AS (SELECT frame FROM frames) SELECT n FROM counts c WHERE frame IN (SELECT frame FROM w)",
        "WITH w AS (SELECT frame FROM frames) SELECT public.vehicle_count(f.pixels) AS n "
        "FROM public.frames AS f WHERE f.frame IN (SELECT frame FROM w)",
        id="a CTE's columns are known",
    ),
    pytest.param(
        "SELECT n AS k FROM counts ORDER BY k, frame",
        "SELECT public.vehicle_count(f.pixels) AS k FROM public.frames AS f ORDER BY k, f.frame",
        id="ORDER BY an output name stays; an input column is rewritten",
    ),
    pytest.param(
        "SELECT n AS frame FROM counts ORDER BY frame",
        "SELECT public.vehicle_count(f.pixels) AS frame FROM public.frames AS f ORDER BY frame",
        id="ORDER BY a name that is an output column and a view column means the output",
    ),
    pytest.param(
        "SELECT o.label, count(*) FROM objects o, other d WHERE d.k = o.frame "
        "GROUP BY o.label HAVING avg(o.score) > 0.5",
        "SELECT d_1.label AS label, count(*) FROM public.frames AS f, "
        "LATERAL public.detect(f.pixels) AS d_1 (box, label, x_min, y_min, x_max, y_max, score), other AS d "
        "WHERE d.k = f.frame GROUP BY d_1.label HAVING avg(d_1.score) > 0.5",
        id="an alias clash is renamed; GROUP BY and HAVING are rewritten",
    ),
    pytest.param(
        "SELECT a.n, b.n FROM counts a JOIN counts b ON b.frame = a.frame + 1",
        "SELECT public.vehicle_count(f_1.pixels) AS n, public.vehicle_count(f.pixels) AS n "
        "FROM public.frames AS f_1 INNER JOIN public.frames AS f ON f.frame = f_1.frame + 1",
        id="one view twice gets two aliases",
    ),
    pytest.param(
        "SELECT n FROM bare, frames WHERE frames.camera = 1 AND frames.frame = bare.frame",
        "SELECT public.vehicle_count(frames_1.pixels) AS n FROM public.frames AS frames_1, frames "
        "WHERE frames_1.frame > 3 AND frames.camera = 1 AND frames.frame = frames_1.frame",
        id="an unaliased table in a view gets a fresh alias when the query reads it too",
    ),
    pytest.param(
        "SELECT cnt FROM counts c(fr, cnt) WHERE fr < 30 GROUP BY cnt ORDER BY cnt",
        "SELECT public.vehicle_count(f.pixels) AS cnt FROM public.frames AS f WHERE f.frame < 30 "
        "GROUP BY public.vehicle_count(f.pixels) ORDER BY cnt",
        id="column aliases on the view rename its columns",
    ),
    pytest.param(
        'SELECT * FROM "Odd View" v WHERE v."N" > 1 AND "Frame No" < 9',
        'SELECT f.frame AS "Frame No", public.vehicle_count(f.pixels) AS "N" FROM public.frames AS f '
        "WHERE public.vehicle_count(f.pixels) > 1 AND f.frame < 9",
        id="quoted names keep their quotes",
    ),
    pytest.param(
        "SELECT c.n FROM counts c, LATERAL (SELECT c.n * 2 AS m) s WHERE s.m > 1",
        "SELECT public.vehicle_count(f.pixels) AS n FROM public.frames AS f, "
        "LATERAL (SELECT public.vehicle_count(f.pixels) * 2 AS m) AS s WHERE s.m > 1",
        id="a LATERAL subquery sees the view",
    ),
    pytest.param(
        "SELECT s.frame FROM (SELECT o.frame, o.score FROM objects o WHERE o.label = 'bus') s "
        "WHERE s.score > 0.2",
        f"SELECT f.frame AS frame FROM public.frames AS f, {DETECT} WHERE d.label = 'bus' AND d.score > 0.2",
        id="a subquery of the query's own merges like a view",
    ),
    pytest.param(
        "SELECT DISTINCT ON (camera) camera, frame FROM objects ORDER BY camera, frame DESC",
        "SELECT DISTINCT ON (f.camera) f.camera AS camera, f.frame AS frame "
        f"FROM public.frames AS f, {DETECT} "
        "ORDER BY camera, frame DESC",
        id="DISTINCT ON in the query is rewritten",
    ),
    pytest.param(
        "SELECT count(*) FROM frame_stats s WHERE s.vehicles > 1 AND light = 'red'",
        "SELECT count(*) FROM public.frames AS f "
        "WHERE public.vehicle_count(f.pixels) > 1 AND public.traffic_light(f.pixels) = 'red'",
        id="two models of one frame",
    ),
]


@pytest.mark.parametrize(("given", "expected"), CASES)
def test_views_flatten_into_the_query(given, expected):
    out, result = flat(given)
    assert out == expected
    assert result and not result.unflattened


def test_the_proxy_rides_along_as_an_output_column():
    out, _ = flat("SELECT count(*), o.score FROM objects o WHERE o.label = 'car'")
    assert out.startswith("SELECT count(*), d.score AS score FROM")


@pytest.mark.parametrize(
    ("given", "column"),
    [
        ("SELECT count(*) FROM counts WHERE frame IN (SELECT frame FROM other)", "frame"),
        ("SELECT count(*) FROM counts c WHERE EXISTS (SELECT 1 FROM t WHERE t.k = n)", "n"),
        (
            "SELECT count(*) FROM objects WHERE label IN (SELECT s.label FROM (SELECT label FROM t) s)",
            "label",
        ),
    ],
)
def test_an_unqualified_name_that_may_be_either_is_refused(given, column):
    error = refused(given)
    assert error.sqlstate == "0A000"
    assert f'"{column}"' in str(error) and "qualify" in (error.hint or "")


def test_qualifying_the_name_resolves_it():
    out, _ = flat("SELECT count(*) FROM counts c WHERE EXISTS (SELECT 1 FROM t WHERE t.k = c.n)")
    assert "t.k = public.vehicle_count(f.pixels)" in out


@pytest.mark.parametrize(
    ("given", "sqlstate"),
    [
        ("SELECT c FROM counts c", "0A000"),  # a whole row of the view
        ("SELECT row_to_json(c.*) FROM counts c", "0A000"),
        ("SELECT c.nope FROM counts c", "42703"),
        ("SELECT frame FROM counts, (SELECT 1 AS frame) s", "42702"),
    ],
)
def test_references_the_view_cannot_answer_are_errors(given, sqlstate):
    assert refused(given).sqlstate == sqlstate


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("SELECT * FROM dist", "DISTINCT"),
        ("SELECT camera FROM per_camera WHERE n > 1", "groups rows"),
        ("SELECT frame FROM firsts WHERE n > 1", "LIMIT"),
        ("SELECT frame FROM ranked WHERE r < 3", "window"),
        ("SELECT frame FROM unioned", "set operation"),
        ("SELECT count(*) FROM t LEFT JOIN counts c ON c.frame = t.id", "nullable side"),
        ("SELECT count(*) FROM counts c FULL JOIN t ON t.frame = c.frame", "nullable side"),
        ("SELECT count(*) FROM counts JOIN t USING (frame)", "USING"),
    ],
)
def test_views_that_cannot_merge_stay_and_say_why(given, reason):
    out, result = flat(given)
    assert not result.merged and len(result.unflattened) == 1
    assert reason in result.unflattened[0].reason
    assert "(SELECT" in out  # still a subquery: the query means what it meant
    with pytest.raises(PlanError) as caught:
        result.refuse()
    assert caught.value.sqlstate == "0A000" and result.unflattened[0].view in str(caught.value)


def test_a_view_read_inside_a_subquery_is_reported_as_nested():
    out, result = flat("SELECT count(*) FROM counts WHERE n > (SELECT avg(c.n) FROM counts c)")
    assert result.merged == ("counts",) and not result.unflattened
    assert [u.view for u in result.nested] == ["counts (as c)"]
    assert "(SELECT avg(c.n) FROM (SELECT frame, public.vehicle_count(pixels) AS n" in out
    result.refuse()  # nested views do not make the query unanswerable


def test_a_view_over_an_unmergeable_view_merges_down_to_it():
    views = {**VIEWS, "dist_big": "SELECT camera FROM public.dist x WHERE (camera > 1)"}
    stmt = parse_sql("SELECT count(*) FROM dist_big")[0].stmt
    result = flatten_views(stmt, views)
    assert result.merged == ("dist_big",)
    assert [u.view for u in result.unflattened] == ["x"] and "DISTINCT" in result.unflattened[0].reason
    assert render(stmt).endswith("AS x WHERE x.camera > 1")


def test_no_views_no_change():
    stmt = parse_sql("SELECT 1 FROM counts")[0].stmt
    assert not flatten_views(stmt, {})
    assert render(stmt) == "SELECT 1 FROM counts"
    out, result = flat("SELECT id FROM digits WHERE f(x)")
    assert out == "SELECT id FROM digits WHERE f(x)" and not result and not result.unflattened
