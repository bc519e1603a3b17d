"""The assertion DDL and flags, read off text and rows alone (no database)."""

from __future__ import annotations

import pytest

from planner.assertions.flags import consistency_flags, query_of
from planner.assertions.grammar import Consistency, Drop, Learned, is_assertion_ddl, parse_assertion_ddl
from planner.outcome import PlanError


def test_a_consistency_assertion_keeps_its_query():
    parsed = parse_assertion_ddl(
        "create assertion Flicker as select frame, 1.0 as severity from t where n = 0;"
    )
    assert parsed == Consistency("flicker", "select frame, 1.0 as severity from t where n = 0")


def test_a_learned_assertion_reads_features_group_and_key():
    parsed = parse_assertion_ddl(
        "CREATE ASSERTION odd_boxes ON detections LEARNED FROM ((x_max - x_min) * (y_max - y_min) AS area, "
        "(x_max - x_min) / (y_max - y_min) AS aspect) PER object_name KEY (frame, box_id)"
    )
    assert isinstance(parsed, Learned)
    assert parsed.relation == "detections" and parsed.per == "object_name"
    assert [name for name, _ in parsed.features] == ["area", "aspect"]
    assert parsed.key == ("frame", "box_id")
    sql = query_of(parsed)
    assert sql.startswith("SELECT frame, box_id, (object_name)::text AS sieve_group,")
    assert "AS sieve_f1 FROM detections" in sql


def test_drop_and_quoted_names():
    assert parse_assertion_ddl('DROP ASSERTION IF EXISTS "Odd Name"') == Drop("Odd Name", True)
    assert parse_assertion_ddl("-- a comment\ndrop assertion x") == Drop("x", False)
    assert is_assertion_ddl("/* c */ CREATE ASSERTION a AS SELECT 1")
    assert not is_assertion_ddl("SELECT 'create assertion'")


@pytest.mark.parametrize(
    "sql, words",
    [
        ("CREATE ASSERTION", "needs a name"),
        ("CREATE ASSERTION a", "expected AS"),
        ("CREATE ASSERTION a AS SELEC 1", "syntax error"),
        ("CREATE ASSERTION a AS INSERT INTO t VALUES (1)", "one SELECT"),
        ("CREATE ASSERTION a ON t LEARNED FROM (x AS f)", "needs KEY"),
        ("CREATE ASSERTION a ON t LEARNED FROM (x) KEY (id)", "needs a name"),
        ("CREATE ASSERTION a ON t LEARNED FROM (x AS f KEY (id)", "unbalanced"),
        ("CREATE ASSERTION a ON t KEY (id)", "LEARNED FROM"),
        ("DROP ASSERTION a b", "unexpected"),
    ],
)
def test_malformed_ddl_names_the_problem(sql, words):
    with pytest.raises(PlanError) as info:
        parse_assertion_ddl(sql)
    assert words in str(info.value), str(info.value)
    assert info.value.sqlstate in ("42601", "0A000")


def test_consistency_flags_take_the_largest_severity_per_key_and_abstain_on_zero():
    rows = [
        {"frame": 1, "severity": 0.5},
        {"frame": 1, "severity": 2.0},
        {"frame": 2, "severity": 0},
        {"frame": 3, "severity": None},
        {"frame": 4},
    ]
    assert sorted(consistency_flags(rows), key=lambda f: f[0]["frame"]) == [
        ({"frame": 1}, 2.0),
        ({"frame": 4}, 1.0),
    ]
