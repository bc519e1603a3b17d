"""Parsing and validating the trailing approximate clause (pure, no server)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from planner.approx.clause import ApproxClause, bind_clause, clause_param_types, split_clause
from planner.classify import Classifier, Route
from planner.outcome import PlanError

BASE = "SELECT id FROM t WHERE oracle(x) > 0.5"


@pytest.mark.parametrize(
    ("clause", "expected"),
    [
        (
            "RECALL TARGET 90% CONFIDENCE 95% BUDGET 1000 USING PROXY score",
            ApproxClause(recall_target=0.9, budget=1000, proxy="score"),
        ),
        (
            "precision target 95% budget 10 using proxy p(x)",
            ApproxClause(precision_target=0.95, budget=10, proxy="p(x)"),
        ),
        (
            "RECALL TARGET 90% PRECISION TARGET 90% CONFIDENCE 99.5% USING PROXY p(x, 'a%;(')",
            ApproxClause(recall_target=0.9, precision_target=0.9, confidence=0.995, proxy="p(x, 'a%;(')"),
        ),
        ("ERROR TARGET 2.5%", ApproxClause(error_target=0.025)),
        ("ERROR_TARGET 5% CONFIDENCE 90%", ApproxClause(error_target=0.05, confidence=0.9)),
        ("RECALL_TARGET 80% USING_PROXY s", ApproxClause(recall_target=0.8, proxy="s")),
        ("PRECISION_TARGET 70%", ApproxClause(precision_target=0.7)),
        (
            "WITH RECALL 90% WITH SUCCESS PROBABILITY 95% ORACLE LIMIT 1000 USING PROXY f(x)",
            ApproxClause(recall_target=0.9, budget=1000, proxy="f(x)"),
        ),
        ("with precision 95% oracle limit 50", ApproxClause(precision_target=0.95, budget=50)),
        ("USING PROXY (a + b) / 2 RECALL TARGET 90%", ApproxClause(recall_target=0.9, proxy="(a + b) / 2")),
    ],
)
def test_every_spelling_parses(clause, expected):
    for end in ("", ";", " ;  ", " -- trailing comment"):
        body, parsed = split_clause(f"{BASE} /* RECALL TARGET 1% */ {clause}{end}")
        assert body == f"{BASE} /* RECALL TARGET 1% */"
        assert parsed is not None
        assert {**parsed.__dict__, "text": "", "given": None} == {
            **expected.__dict__,
            "text": "",
            "given": None,
        }


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM t WHERE oracle(x) > 0.5",
        "SELECT 'RECALL TARGET 90%' FROM t",
        "WITH recall AS (SELECT 1) SELECT * FROM recall",
        "SELECT target FROM t",
        "SELECT a FROM t JOIN u USING (id)",
        # valid SQL whose words look like clause words: never a clause, never "did you mean"
        "SELECT recall target FROM t",
        "SELECT error_target, using_proxy FROM t",
        "SELECT e.target FROM t AS error WHERE error.budget > 5",
        "SELECT x FROM t error WHERE error.target = 5",
        "SELECT oracle FROM t ORDER BY oracle LIMIT 5",
        "SELECT id FROM t WHERE spent < budget -5 AND target > 1",
        "SELECT id FROM t WHERE spent < budgets +5 AND target > 1",
        "WITH success AS (SELECT 1 AS target) SELECT * FROM success",
        "SELECT * FROM (SELECT recal target FROM t) s WHERE s.target > 0",
        "SELECT 100 % x FROM t",
        "DELETE FROM t USING products WHERE t.id = products.id",
        "SELECT id FROM t WHERE f(x) RECALL TARGET 90%; SELECT 1",  # the clause ends the string only
    ],
)
def test_statements_without_a_clause_are_left_alone(sql):
    assert split_clause(sql) == (sql, None)


@pytest.mark.parametrize(
    ("clause", "sqlstate", "words"),
    [
        ("RECALL TARGET 100%", "22023", "RECALL TARGET must be between 0% and 100%"),
        ("RECALL TARGET 0%", "22023", "RECALL TARGET"),
        ("PRECISION TARGET 150%", "22023", "PRECISION TARGET"),
        ("ERROR TARGET -5%", "22023", "ERROR TARGET"),
        ("RECALL TARGET 90% CONFIDENCE 50%", "22023", "CONFIDENCE must be above 50%"),
        ("RECALL TARGET 90% CONFIDENCE 100%", "22023", "CONFIDENCE"),
        ("RECALL TARGET 90% BUDGET 0", "22023", "BUDGET must be at least 1"),
        ("RECALL TARGET 90% BUDGET -3", "22023", "BUDGET must be at least 1"),
        ("RECALL TARGET 90% BUDGET 2.5", "22023", "whole number"),
        ("RECALL TARGET 90% ORACLE LIMIT 0", "22023", "ORACLE LIMIT must be at least 1"),
        ("RECALL TARGET 90", "42601", "percentage"),
        ("RECALL TARGET 90% RECALL TARGET 80%", "42601", "twice"),
        # every message names the item as the user wrote it
        ("WITH RECALL 150%", "22023", "WITH RECALL must be between 0% and 100%"),
        ("RECALL_TARGET 0%", "22023", "RECALL_TARGET must be"),
        (
            "RECALL TARGET 90% WITH SUCCESS PROBABILITY 40%",
            "22023",
            "WITH SUCCESS PROBABILITY must be above 50%",
        ),
        ("recall target 90% oracle limit 0", "22023", "ORACLE LIMIT must be at least 1"),
        ("RECALL TARGET 90% WITH RECALL 80%", "42601", '"RECALL TARGET 90%" and "WITH RECALL 80%"'),
        (
            "RECALL TARGET ninety%",
            "42601",
            'RECALL TARGET needs a percentage such as 90% or a parameter such as $1, found "ninety %"',
        ),
        ("ERROR_TARGET 5 percent", "42601", "ERROR_TARGET needs a percentage"),
        ("RECALL TARGET 90% BUDGET 100 calls", "42601", "BUDGET needs a whole number"),
        ("RECALL TARGET 90% BUDGET $1%", "42601", "BUDGET needs a whole number"),
        ("RECALL TARGET 90% USING PROXY", "42601", "USING PROXY needs an expression"),
    ],
)
def test_bad_clauses_are_errors_naming_the_problem(clause, sqlstate, words):
    with pytest.raises(PlanError) as caught:
        split_clause(f"{BASE} {clause}")
    assert caught.value.sqlstate == sqlstate
    assert words in str(caught.value)


def test_classifier_routes_approximate_clauses_to_the_planner():
    classifier = Classifier()
    sql = b"select id from t where f(x) RECALL TARGET 90% USING PROXY s"
    assert classifier.may_plan(sql)
    assert classifier.classify(sql).route is Route.PLAN
    assert classifier.classify(b"select count(*) from t ERROR_TARGET 5%").route is Route.PLAN
    assert classifier.classify(b"select 1 from t oracle limit 5").route is Route.PLAN
    assert classifier.classify(b"select id from t where x = 1").route is Route.FORWARD
    classifier.set_models({"f"}, {"v"})
    assert classifier.may_plan(b"select 1 from t WITH RECALL 90%")
    assert classifier.classify(b"select 1 from t WITH RECALL 90%").route is Route.PLAN
    assert not classifier.may_plan(b"select id from t where x = 1")


@pytest.mark.parametrize(
    ("clause", "written", "suggestion"),
    [
        ("RECAL TARGET 90%", "RECAL TARGET", "RECALL TARGET"),
        ("ERORR TARGET 5%", "ERORR TARGET", "ERROR TARGET"),
        ("PRECISSION TARGET 90%", "PRECISSION TARGET", "PRECISION TARGET"),
        ("recall targte 90% BUDGET 100", "recall targte", "RECALL TARGET"),
        ("RECALL TARGET 90% CONFIDENSE 95%", "CONFIDENSE", "CONFIDENCE"),
        ("RECALL TARGET 90% BUGDET 100", "BUGDET", "BUDGET"),
        ("RECALL TARGET 90% BUGDET $1", "BUGDET", "BUDGET"),
        ("LIMIT 5 USING PROXI p(x)", "USING PROXI", "USING PROXY"),
        ("RECALL TARGET 90% USING PROXY p(x) BUGDET 100", "BUGDET", "BUDGET"),
        ("RECALL 90%", "RECALL", "RECALL TARGET"),
        ("ERROR_TAGRET 5%", "ERROR_TAGRET", "ERROR_TARGET"),
    ],
)
def test_a_misspelt_clause_word_is_a_syntax_error_suggesting_the_right_one(clause, written, suggestion):
    with pytest.raises(PlanError) as caught:
        split_clause(f"{BASE} {clause}")
    assert caught.value.sqlstate == "42601"
    assert f'"{written}" (did you mean {suggestion}?)' in str(caught.value)


def test_valid_sql_before_a_clause_keeps_words_that_look_like_clause_words():
    sql = "SELECT budget, target FROM t error WHERE f(x) AND error.confidence > 5 RECALL TARGET 90%"
    body, clause = split_clause(sql)
    assert body == sql.removesuffix(" RECALL TARGET 90%")
    assert clause is not None and clause.recall_target == 0.9


@pytest.mark.parametrize(
    ("sql", "inside", "written"),
    [
        (
            "WITH t AS (SELECT id FROM u WHERE f(x) ERROR TARGET 5%) SELECT count(*) FROM t",
            "the WITH query t",
            "ERROR TARGET 5%",
        ),
        (
            "WITH t AS MATERIALIZED (SELECT id FROM u WHERE f(x) RECALL TARGET 90% BUDGET 10) TABLE t",
            "the WITH query t",
            "RECALL TARGET 90% BUDGET 10",
        ),
        (
            "SELECT * FROM (SELECT id FROM u WHERE f(x) RECALL TARGET 90%) s",
            "a subquery",
            "RECALL TARGET 90%",
        ),
        (
            "SELECT * FROM (SELECT id FROM u WHERE f(x) RECALL TARGET 90%) s RECALL TARGET 80%",
            "a subquery",
            "RECALL TARGET 90%",
        ),
        ("SELECT id FROM t WHERE x IN (SELECT y FROM u WHERE f(y) BUDGET $1)", "a subquery", "BUDGET $1"),
    ],
)
def test_a_clause_inside_a_subquery_is_refused_naming_where_it_is(sql, inside, written):
    with pytest.raises(PlanError) as caught:
        split_clause(sql)
    assert caught.value.sqlstate == "0A000"
    assert "applies to the outermost SELECT only" in str(caught.value)
    assert f'"{written}" is inside {inside}' in str(caught.value)
    assert caught.value.hint is not None and written in caught.value.hint


def test_ordinary_statements_are_never_scanned(monkeypatch):
    import planner.approx.clause as clause_module

    def no_scan(sql):
        raise AssertionError(f"scanned: {sql}")

    monkeypatch.setattr(clause_module, "scan", no_scan)
    for sql in (
        "SELECT id, budget FROM t WHERE x % 2 = 0 AND name LIKE '50%' ORDER BY id LIMIT 10",
        "SELECT a FROM t JOIN u USING (id) WHERE confidence > 0.5",
        "UPDATE t SET budget = budget - 5 WHERE id = $1",
    ):
        assert split_clause(sql) == (sql, None)


# --- bound parameters -----------------------------------------------------------------------


@dataclass
class Bound:
    text: str | None
    type_name: str | None = None


def _params(sql_clause: str) -> ApproxClause:
    clause = split_clause(f"{BASE} {sql_clause}")[1]
    assert clause is not None
    return clause


def test_parameters_are_found_in_every_value_position():
    clause = _params("RECALL TARGET $2 PRECISION TARGET $4% CONFIDENCE $3 BUDGET $1 USING PROXY p(x)")
    assert [(p.item, p.number, p.percent, p.label) for p in clause.params] == [
        ("recall", 2, False, "RECALL TARGET $2"),
        ("precision", 4, True, "PRECISION TARGET $4%"),
        ("confidence", 3, False, "CONFIDENCE $3"),
        ("budget", 1, False, "BUDGET $1"),
    ]
    assert clause.given == {"recall", "precision", "confidence", "budget", "proxy"}
    assert (clause.recall_target, clause.budget, clause.proxy) == (None, None, "p(x)")
    bound = bind_clause(clause, [Bound("300"), Bound("0.9"), Bound("0.99"), Bound("80")])
    assert (bound.recall_target, bound.precision_target, bound.confidence, bound.budget) == (
        0.9,
        0.8,
        0.99,
        300,
    )
    assert bound.params == () and bound.given == clause.given and bound.proxy == "p(x)"


@pytest.mark.parametrize(
    ("clause", "values", "expected"),
    [
        ("ERROR TARGET $1", ["0.05"], 0.05),
        ("ERROR TARGET $1", ["5%"], 0.05),  # text carrying its own percent sign
        ("ERROR TARGET $1%", ["5"], 0.05),
        ("ERROR TARGET $1%", [" 2.5 "], 0.025),
        ("WITH RECALL $1", ["0.9"], None),
    ],
)
def test_a_bound_target_is_a_fraction_unless_written_with_percent(clause, values, expected):
    bound = bind_clause(_params(clause), [Bound(v) for v in values])
    assert (bound.error_target if expected is not None else bound.recall_target) == pytest.approx(
        expected if expected is not None else 0.9
    )


@pytest.mark.parametrize(
    ("clause", "value", "sqlstate", "words"),
    [
        (
            "RECALL TARGET $1",
            "90",
            "22023",
            "RECALL TARGET $1 must be between 0% and 100% (exclusive), got 90",
        ),
        (
            "RECALL TARGET $1%",
            "150",
            "22023",
            "RECALL TARGET $1% must be between 0% and 100% (exclusive), got 150%",
        ),
        ("RECALL TARGET $1", "0", "22023", "RECALL TARGET $1 must be between"),
        ("RECALL TARGET 90% CONFIDENCE $1", "0.4", "22023", "CONFIDENCE $1 must be above 50% and below 100%"),
        ("RECALL TARGET 90% CONFIDENCE $1", "1", "22023", "CONFIDENCE $1 must be above 50%"),
        ("RECALL TARGET 90% BUDGET $1", "0", "22023", "BUDGET $1 must be at least 1 oracle call"),
        ("RECALL TARGET 90% BUDGET $1", "2.5", "22023", "BUDGET $1 must be a whole number"),
        ("RECALL TARGET 90% BUDGET $1", "inf", "22023", "BUDGET $1 must be a whole number"),
        ("RECALL TARGET 90% BUDGET $1", "10%", "22023", "BUDGET $1 must be a number, got '10%'"),
        ("RECALL TARGET $1", "ninety", "22023", "RECALL TARGET $1 must be a number, got 'ninety'"),
        ("RECALL TARGET $1", "nan", "22023", "RECALL TARGET $1 must be between"),
        ("RECALL TARGET $1", None, "22023", "RECALL TARGET $1 cannot be NULL"),
        ("RECALL TARGET 90% BUDGET $2", "1", "08P01", "BUDGET $2: no value is bound to parameter $2"),
    ],
)
def test_bad_bound_values_get_the_errors_literals_get(clause, value, sqlstate, words):
    with pytest.raises(PlanError) as caught:
        bind_clause(_params(clause), [Bound(value)])
    assert caught.value.sqlstate == sqlstate
    assert words in str(caught.value)


def test_a_whole_number_bound_as_a_fraction_gets_a_hint_naming_both_forms():
    with pytest.raises(PlanError) as caught:
        bind_clause(_params("RECALL TARGET $3"), [None, None, Bound("90")])
    assert (
        caught.value.hint
        == "$3 is a fraction here (0.9 for 90%); write RECALL TARGET $3% to bind a percentage"
    )


def test_an_undecodable_bound_value_is_refused_not_guessed():
    with pytest.raises(PlanError) as caught:
        bind_clause(_params("RECALL TARGET $1"), [None])
    assert caught.value.sqlstate == "22023" and "RECALL TARGET $1" in str(caught.value)


def test_a_clause_without_parameters_binds_to_itself():
    clause = _params("RECALL TARGET 90% BUDGET 10")
    assert bind_clause(clause, None) is clause
    assert bind_clause(clause, [Bound("5")]) is clause


def test_a_parameter_in_the_proxy_is_refused():
    with pytest.raises(PlanError) as caught:
        split_clause(f"{BASE} RECALL TARGET 90% USING PROXY p(x) > $1")
    assert caught.value.sqlstate == "0A000" and "USING PROXY" in str(caught.value)


@pytest.mark.parametrize(
    ("clause", "declared", "expected"),
    [
        ("RECALL TARGET $2 BUDGET $1", [], [20, 701]),
        ("RECALL TARGET $2 BUDGET $1", [23], [23, 701]),  # the client's declaration stands
        ("RECALL TARGET $3% CONFIDENCE $2", [25, 0], [25, 701, 701]),
        ("RECALL TARGET $1 BUDGET $1", [], [701]),  # float8 holds both
        ("RECALL TARGET 90% BUDGET 10", [0, 23], [0, 23]),  # the body's parameters: Postgres infers
    ],
)
def test_clause_parameters_are_declared_to_postgres(clause, declared, expected):
    assert clause_param_types(_params(clause), declared) == expected
