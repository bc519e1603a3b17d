"""Parsing and validating the trailing approximate clause (pure, no server)."""

from __future__ import annotations

import pytest

from planner.approx.clause import ApproxClause, split_clause
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
        "SELECT id FROM t WHERE x IN (SELECT y FROM u RECALL TARGET 90%)",  # not at depth 0
        "WITH recall AS (SELECT 1) SELECT * FROM recall",
        "SELECT target FROM t",
        "SELECT a FROM t JOIN u USING (id)",
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
        ("RECALL TARGET 90% ORACLE LIMIT 0", "22023", "BUDGET"),
        ("RECALL TARGET 90", "42601", "percentage"),
        ("RECALL TARGET 90% RECALL TARGET 80%", "42601", "twice"),
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
