"""ERROR TARGET aggregates over the video schema, end to end, against the plain-table truth.

Each shape is a query an AIDB-style user writes over the model views (``objects``: frames x the
detector, ``colors``: two chained models, ``frame_stats``: per-frame models). It runs in 100
seeded trials at a budget below the 1,000 frames, with ``sieve.bounds`` on, and is checked
against the same SQL over the ``plain_*`` tables:

* coverage: every interval of an answer (each aggregate, each group, at once) holds the truth in
  at least the Binomial(100, 0.95) 0.1% quantile of the trials (one-sided);
* budget: no trial labels more frames than BUDGET, and on average fewer frames than the exact
  query runs each model on (cold cache);
* accuracy: answers that say their target was met are within it, at the same binomial floor;
* honesty: only finite-sample answers are called certified; a budget covering every candidate
  answers exactly and is certified.

Trials keep the model caches warm: cached outputs only save inference (model_calls), they are
never free labels (rows_labelled counts every sampled frame).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from statistics import mean

import psycopg
import pytest

from tests.support.approx_trials import (
    Answer,
    binomial_floor,
    covers,
    exact_equals,
    last_log_id,
    log_row,
    read_answer,
    read_truth,
    run_trials,
    within,
)
from tests.support.video import DETECTOR_FILE, cached_inputs, clear_caches, last_query_id, logged_calls
from tests.video.conftest import N_FRAMES

log = logging.getLogger(__name__)

TRIALS = 100
# Shapes whose target should be met this often at their budget, or the test demands too little.
MIN_MET_SHARE = 0.6


@dataclass(frozen=True)
class Shape:
    name: str
    select: str  # over SieveDB's model views
    plain: str  # the same statement over the plain_* tables
    groups: int = 0  # leading GROUP BY columns
    error_target: float = 0.20
    budget: int = 500
    detector: bool = True  # reads the detector (several rows per frame) rather than per-frame models
    # A finite-sample interval is possible: rows per frame are bounded (detect declares max_rows 3)
    # and every aggregated value's range is known before sampling (a COUNT; not a model's output).
    certifiable: bool = True

    def sql(self, budget: int | None = None) -> str:
        return f"{self.select} ERROR TARGET {100 * self.error_target:g}% BUDGET {budget or self.budget}"


NULL_COUNTS = "COUNT(NULLIF(vehicles, 0)) AS moving, COUNT(*) AS frames"
SHAPES = (
    Shape(
        "count_cars",
        "SELECT COUNT(*) FROM objects WHERE label = 'car'",
        "SELECT COUNT(*) FROM plain_objects WHERE label = 'car'",
    ),
    Shape(
        "avg_and_count_with_x_min_predicate",
        "SELECT AVG(x_min), COUNT(*) FROM objects WHERE x_min > 0.5",
        "SELECT AVG(x_min), COUNT(*) FROM plain_objects WHERE x_min > 0.5",
        certifiable=False,
    ),
    Shape(
        "count_and_avg_score_by_label",
        "SELECT label, COUNT(*), AVG(score) FROM objects GROUP BY label",
        "SELECT label, COUNT(*), AVG(score) FROM plain_objects GROUP BY label",
        groups=1,
        error_target=0.25,
        certifiable=False,
    ),
    Shape(
        "count_red_objects_two_chained_models",
        "SELECT COUNT(*) FROM colors WHERE color = 'red'",
        "SELECT COUNT(*) FROM plain_colors WHERE color = 'red'",
    ),
    Shape(
        "sum_and_avg_vehicles_at_red_lights",
        "SELECT SUM(vehicles), AVG(vehicles) FROM frame_stats WHERE light = 'red'",
        "SELECT SUM(vehicles), AVG(vehicles) FROM plain_frame_stats WHERE light = 'red'",
        detector=False,
        certifiable=False,
    ),
    Shape(
        # The schema has no column with NULLs: NULLIF makes one (frames with no vehicle).
        "count_of_a_column_with_nulls",
        f"SELECT {NULL_COUNTS} FROM frame_stats WHERE light = 'green'",
        f"SELECT {NULL_COUNTS} FROM plain_frame_stats WHERE light = 'green'",
        detector=False,
    ),
)
IDS = [s.name for s in SHAPES]


@dataclass
class ShapeRun:
    truth: dict
    exact_calls: dict[str, int]  # model -> inference calls of the exact query on a cold cache
    answers: list[Answer]

    @property
    def met(self) -> list[Answer]:
        return [a for a in self.answers if a.target_met]


def _connect(video) -> psycopg.Connection:
    return video.connect()


def _exact_calls_cold(conn: psycopg.Connection, shape: Shape) -> dict[str, int]:
    """The exact query (no clause) on a cold cache: the inference it costs, and its answer is
    the plain-table truth (or the comparison below means nothing)."""
    clear_caches(conn)
    after = last_query_id(conn)
    exact = read_truth(conn, shape.select, shape.groups)
    assert exact == pytest.approx(read_truth(conn, shape.plain, shape.groups), rel=1e-9)
    return logged_calls(conn, after)


@pytest.fixture(scope="module")
def shape_runs(video):
    """Each shape's truth, cold exact cost and 100 seeded trials, computed once on first use."""
    done: dict[str, ShapeRun] = {}

    def get(shape: Shape) -> ShapeRun:
        if shape.name not in done:
            with _connect(video) as conn:
                truth = read_truth(conn, shape.plain, shape.groups)
                calls = _exact_calls_cold(conn, shape)
                conn.execute("SET sieve.bounds = on")
                answers = run_trials(conn, shape.sql(), shape.groups, range(TRIALS))
            done[shape.name] = ShapeRun(truth, calls, answers)
            _log_summary(shape, done[shape.name])
        return done[shape.name]

    return get


def _log_summary(shape: Shape, run: ShapeRun) -> None:
    covered = sum(covers(a, run.truth) for a in run.answers)
    accurate = sum(within(a, run.truth, shape.error_target) for a in run.met)
    log.info(
        "%s %s: covered %d/%d, target met %d/%d (within target %d of those), mean rows_labelled %.1f "
        "(max %d), certified %d, exact cold-cache model calls %s",
        shape.name,
        shape.sql(),
        covered,
        len(run.answers),
        len(run.met),
        len(run.answers),
        accurate,
        mean(a.log["rows_labelled"] for a in run.answers),
        max(a.log["rows_labelled"] for a in run.answers),
        sum(bool(a.log["certified"]) for a in run.answers),
        run.exact_calls,
    )


# -- 100 seeded trials per shape ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_intervals_hold_the_truth_in_100_seeded_trials(shape_runs, shape):
    run = shape_runs(shape)
    floor = binomial_floor(TRIALS)
    covered = [a for a in run.answers if covers(a, run.truth)]
    missed = [(a.seed, a.cells) for a in run.answers if not covers(a, run.truth)]
    assert len(covered) >= floor, f"{len(covered)} of {TRIALS} covered {run.truth}; misses {missed[:3]}"
    # Seeds must change the sample, or 100 trials are one trial.
    assert len({tuple(sorted(a.cells.items())) for a in run.answers}) > TRIALS // 2


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_no_trial_labels_more_frames_than_its_budget(shape_runs, shape):
    labelled = [a.log["rows_labelled"] for a in shape_runs(shape).answers]
    assert all(0 < n <= shape.budget for n in labelled), labelled


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_sampling_labels_fewer_frames_than_the_exact_query_runs_each_model_on(shape_runs, shape):
    run = shape_runs(shape)
    per_frame = "detect" if shape.detector else "vehicle_count"
    assert run.exact_calls[per_frame] == N_FRAMES
    assert mean(a.log["rows_labelled"] for a in run.answers) < min(run.exact_calls.values())


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_answers_that_meet_their_target_are_within_it(shape_runs, shape):
    run = shape_runs(shape)
    met = run.met
    assert len(met) >= MIN_MET_SHARE * TRIALS, f"target met in only {len(met)} of {TRIALS} trials"
    accurate = sum(within(a, run.truth, shape.error_target) for a in met)
    assert accurate >= binomial_floor(len(met)), f"{accurate} of {len(met)} met answers within target"


@pytest.mark.slow
@pytest.mark.parametrize("shape", [s for s in SHAPES if s.groups], ids=[s.name for s in SHAPES if s.groups])
def test_the_log_records_per_group_targets_as_the_notices_do(shape_runs, shape):
    run = shape_runs(shape)
    for answer in run.answers:
        assert answer.groups_met == answer.target_met, (answer.seed, answer.log["groups"], answer.notices)
        groups = {(g["aggregate"], str(g["group"])) for g in answer.log["groups"]}
        assert len(groups) == len(run.truth), answer.log["groups"]


# -- honesty -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_only_finite_sample_answers_are_called_certified(shape_runs, shape):
    for answer in shape_runs(shape).answers:
        certified = answer.log["certified"]
        assert certified == answer.says_certified, (answer.seed, certified, answer.notices)
        if not shape.certifiable:
            # A model output's range is not known before the model runs.
            assert certified is False, (answer.seed, answer.notices)
        elif certified:
            assert answer.target_met, (answer.seed, answer.notices)


def test_a_detector_with_no_bound_on_its_rows_is_never_certified(video):
    """The same detector without max_rows: rows per frame are not bounded in advance, so no
    interval over its rows can be finite-sample, however well a COUNT is estimated."""
    with _connect(video) as conn:
        conn.execute(
            "CREATE FUNCTION detect_unbounded(pixels real[]) RETURNS TABLE (box int, label text, "
            "x_min real, y_min real, x_max real, y_max real, score real) LANGUAGE onnx AS "
            f"'{DETECTOR_FILE}', '{{\"rows\": \"row_index\"}}'"
        )
        conn.execute(
            "CREATE VIEW objects_unbounded AS SELECT f.frame, d.label FROM frames f, "
            "LATERAL detect_unbounded(f.pixels) d"
        )
        conn.execute("SET sieve.bounds = on")
        answers = run_trials(
            conn,
            "SELECT COUNT(*) FROM objects_unbounded WHERE label = 'car' ERROR TARGET 20% BUDGET 500",
            0,
            range(5),
        )
    assert [a.log["certified"] for a in answers] == [False] * 5
    assert not any(a.says_certified for a in answers)
    assert all(a.target_met for a in answers)  # an estimate is still given, and meets its target


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_a_budget_covering_every_candidate_answers_exactly_and_is_certified(video, shape):
    with _connect(video) as conn:
        conn.execute("SET sieve.bounds = on")
        truth = read_truth(conn, shape.plain, shape.groups)
        answer = read_answer(conn, shape.sql(budget=N_FRAMES), shape.groups)
        approx_types = _value_types(conn, shape.sql(budget=N_FRAMES), shape.groups, bounds=True)
        plain_types = _value_types(conn, shape.plain, shape.groups, bounds=False)
    assert exact_equals(answer, truth), (answer.cells, truth)
    assert answer.log["certified"] is True and answer.says_certified
    assert answer.log["rows_labelled"] == N_FRAMES  # every frame is a candidate: predicates read models
    assert approx_types == plain_types  # typed as the exact query


def _value_types(conn: psycopg.Connection, sql: str, groups: int, bounds: bool) -> list[int]:
    """Type OIDs of the group and value columns (bounds columns left out)."""
    cur = conn.execute(sql)
    cur.fetchall()
    oids = [d.type_code for d in cur.description]
    step = 3 if bounds else 1
    return oids[:groups] + oids[groups::step]


def test_bounds_columns_are_named_after_each_aggregate(video):
    shape = SHAPES[-1]
    with _connect(video) as conn:
        conn.execute("SET sieve.bounds = on")
        conn.execute("SET sieve.seed = 1")
        cur = conn.execute(shape.sql())
    names = [d.name for d in cur.description]
    assert names == ["moving", "moving_ci_low", "moving_ci_high", "frames", "frames_ci_low", "frames_ci_high"]


# -- scope: subqueries in WHERE keep their own names --------------------------------------------


def _census(video, select: str, plain: str, error_target: str) -> tuple[Answer, dict]:
    with _connect(video) as conn:
        conn.execute("SET sieve.bounds = on")
        truth = read_truth(conn, plain, 0)
        answer = read_answer(conn, f"{select} ERROR TARGET {error_target}", 0)
    return answer, truth


def test_an_in_subquery_reads_its_own_frame_column(video):
    where = "vehicles > 0 AND frame IN (SELECT frame + 15 FROM frames WHERE frame < 300)"
    answer, truth = _census(
        video,
        f"SELECT COUNT(*) FROM frame_stats WHERE {where}",
        f"SELECT COUNT(*) FROM plain_frame_stats WHERE {where}",
        "10%",
    )
    assert truth[((), 0)] > 0
    # 300 candidate frames (15..314) fit the default budget: labelled every one, exactly.
    assert exact_equals(answer, truth), (answer.cells, truth)
    assert answer.log["rows_labelled"] == 300 and answer.log["certified"] is True


def test_a_scalar_subquery_in_where_is_an_uncorrelated_constant(video):
    where = "label = 'car' AND frame > (SELECT avg(frame) FROM frames)"
    answer, truth = _census(
        video,
        f"SELECT COUNT(*), AVG(score) FROM objects WHERE {where}",
        f"SELECT COUNT(*), AVG(score) FROM plain_objects WHERE {where}",
        "10%",
    )
    assert exact_equals(answer, truth), (answer.cells, truth)
    assert answer.log["rows_labelled"] == N_FRAMES // 2  # frames 500..999


# -- refusals, before any model runs --------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT label, COUNT(*) FROM objects GROUP BY label ORDER BY label ERROR TARGET 20% BUDGET 500",
        "SELECT COUNT(*) FROM objects WHERE label = 'car' LIMIT 1 ERROR TARGET 20% BUDGET 500",
        "SELECT COUNT(DISTINCT label) FROM objects ERROR TARGET 20% BUDGET 500",
        "SELECT label, COUNT(*) FROM objects GROUP BY label HAVING COUNT(*) > 10 ERROR TARGET 20% BUDGET 500",
        "SELECT frame, box FROM objects WHERE label = 'car' RECALL TARGET 90% BUDGET 500",
    ],
    ids=["order_by", "limit", "count_distinct", "having", "recall_target_over_detector_rows"],
)
def test_unsupported_approximate_queries_are_refused_before_any_model_runs(video, sql):
    with _connect(video) as conn:
        clear_caches(conn)
        after = last_query_id(conn)
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(sql)
        assert caught.value.sqlstate == "0A000", caught.value
        assert logged_calls(conn, after) == {}
        assert cached_inputs(conn) == {}


# -- rare rows: what a sample that saw (almost) none of them may say ----------------------------


def test_a_group_by_answer_has_no_group_the_data_lacks(video):
    sql = "SELECT label, COUNT(*), AVG(x_min) FROM objects WHERE x_min > 0.7995 GROUP BY label"
    with _connect(video) as conn:
        truth = read_truth(conn, sql.replace("objects", "plain_objects"), 1)
        conn.execute("SET sieve.bounds = on")
        answers = run_trials(conn, f"{sql} ERROR TARGET 20% BUDGET 100", 1, range(20))
    extra = [(a.seed, sorted({k for k, _ in a.cells} - {k for k, _ in truth}, key=repr)) for a in answers]
    assert [e for e in extra if e[1]] == []


def test_sum_and_avg_over_a_sample_without_matching_rows_claim_no_zero_width_interval(video):
    select = "SELECT COUNT(*), SUM(vehicles), AVG(vehicles) FROM {} WHERE vehicles > 2 AND light = 'yellow'"
    with _connect(video) as conn:
        truth = read_truth(conn, select.format("plain_frame_stats"), 0)
        conn.execute("SET sieve.bounds = on")
        answers = run_trials(
            conn, select.format("frame_stats") + " ERROR TARGET 20% BUDGET 100", 0, range(10)
        )
    empty = [a for a in answers if a.cells[((), 0)].estimate == 0]
    assert truth[((), 0)] > 0 and empty, "no trial's sample missed every matching frame"
    for answer in empty:
        total, avg = answer.cells[((), 1)], answer.cells[((), 2)]
        assert total.high is None or total.high >= truth[((), 1)], (answer.seed, total)
        assert avg.estimate is None or avg.contains(truth[((), 2)]), (answer.seed, avg)


def test_session_error_target_samples_a_detector_view(video):
    """``SET sieve.error_target`` (for clients that cannot append a clause) applies to an aggregate
    over a detector view: it samples within sieve.budget instead of running exactly."""
    with _connect(video) as conn:
        conn.execute("SET sieve.error_target = 0.2")
        conn.execute("SET sieve.budget = 300")
        conn.execute("SET sieve.seed = 11")
        before = last_log_id(conn)
        (count,) = conn.execute("SELECT count(*) FROM objects WHERE label = 'car'").fetchone()
        row = log_row(conn)
        (truth,) = conn.execute("SELECT count(*) FROM plain_objects WHERE label = 'car'").fetchone()
    assert row["query_id"] > before
    assert row["mode"] == "approx_count" and row["target"] == pytest.approx(0.2)
    assert 0 < row["rows_labelled"] <= 300
    assert count > 0 and abs(count - truth) <= truth  # an estimate, not a wrong-shaped answer


def test_a_model_view_the_role_may_not_read_is_refused_before_any_model_runs(video):
    """Approximate queries merge views into the statement: the view's own privilege must still
    hold (Postgres checks it when a query starts, so the statement is started first)."""
    with _connect(video) as admin:
        admin.execute("DROP ROLE IF EXISTS viewless")
        admin.execute("CREATE ROLE viewless LOGIN")
        admin.execute("GRANT SELECT ON frames TO viewless")  # the table, not the view frame_stats
        clear_caches(admin)
        before = last_query_id(admin)
    with psycopg.connect(video.server.dsn(user="viewless"), autocommit=True) as conn:
        for sql in (
            "SELECT avg(vehicles) FROM frame_stats ERROR TARGET 10%",
            "SELECT frame FROM frame_stats WHERE vehicles > 2 RECALL TARGET 90% USING PROXY 0.5",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        conn.execute("SET sieve.error_target = 0.1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT avg(vehicles) FROM frame_stats")
    with _connect(video) as admin:
        assert logged_calls(admin, before) == {}
        admin.execute("DROP OWNED BY viewless")
        admin.execute("DROP ROLE viewless")
