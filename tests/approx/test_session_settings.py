"""``SET sieve.*`` session settings: approximate queries for clients that cannot append a clause."""

from __future__ import annotations

import pytest

from planner.approx.clause import ApproxClause, split_clause
from planner.approx.settings import SessionSettings, parse_settings
from planner.outcome import PlanError
from tests.approx.test_approx_sql import RT, _expect_error, _last_log, _truth

NAMES = ("recall_target", "precision_target", "error_target", "confidence", "budget", "proxy", "strict")


def _settings(**values) -> SessionSettings:
    row = [values.get(n) for n in (*NAMES, "seed", "bounds", "bound")]
    return parse_settings(row)


def test_settings_parse_fractions_percentages_and_flags():
    s = _settings(recall_target="0.9", confidence="99%", budget="500", proxy="p(x)", strict="on")
    assert (s.recall_target, s.confidence, s.budget, s.proxy, s.strict) == (0.9, 0.99, 500, "p(x)", True)
    assert _settings(error_target="", strict="off") == SessionSettings()
    assert s.clause_for(aggregate=True) is None  # no sieve.error_target: aggregates run exactly
    clause = s.clause_for(aggregate=False)
    assert (clause.recall_target, clause.confidence, clause.budget, clause.proxy) == (0.9, 0.99, 500, "p(x)")


def test_a_clause_keeps_what_it_writes_and_takes_the_rest_from_the_session():
    _, clause = split_clause("SELECT 1 FROM t WHERE f(x) RECALL TARGET 80% CONFIDENCE 90% USING PROXY s")
    filled = _settings(confidence="0.99", budget="700", proxy="other").fill(clause)
    assert filled == ApproxClause(recall_target=0.8, confidence=0.9, budget=700, proxy="s", text=clause.text)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("recall_target", "1.5", "sieve.recall_target must be between 0 and 1"),
        ("precision_target", "100%", "sieve.precision_target"),
        ("error_target", "abc", "sieve.error_target must be a fraction"),
        ("confidence", "0.5", "sieve.confidence must be above 0.5"),
        ("budget", "0", "sieve.budget must be at least 1"),
        ("budget", "2.5", "whole number"),
        ("strict", "maybe", "sieve.strict must be on or off"),
    ],
)
def test_bad_settings_are_errors_naming_the_setting(name, value, words):
    with pytest.raises(PlanError) as caught:
        _settings(**{name: value})
    assert caught.value.sqlstate == "22023"
    assert words in str(caught.value)


def test_session_recall_target_applies_to_a_plain_select(approx_world):
    truth = set(_truth(approx_world).tolist())
    sql = "SELECT id FROM digits WHERE digit_oracle(pixels) = 7"
    with approx_world.connect() as conn:
        for statement in (
            "set sieve.seed = 0",
            "set sieve.recall_target = 0.9",
            "set sieve.confidence = '95%'",
            "set sieve.budget = 1200",
            "set sieve.proxy = 'digit_proxy_p7(pixels)'",
        ):
            conn.execute(statement)
        rows = {r[0] for r in conn.execute(sql).fetchall()}
        mode, target, confidence, _, ci_low, _, calls = _last_log(conn)
        assert (mode, target, confidence) == ("recall", 0.9, 0.95)
        assert ci_low >= 0.9 and calls.get("digit_oracle", 0) <= 1200
        assert len(rows & truth) / len(truth) >= 0.8
        assert len(rows) < len(approx_world.digits.y) / 2
        # the same as the clause, row for row
        clause_rows = {r[0] for r in conn.execute(RT.format(budget=1200)).fetchall()}
        assert clause_rows == rows
        # statements that call no model, or aggregates without sieve.error_target, stay exact
        assert conn.execute("select count(*) from digits where label = 7").fetchone()[0] == int(
            (approx_world.digits.y == 7).sum()
        )
        exact = conn.execute(
            "select count(*) from digits where digit_oracle(pixels) = 7 and id < 50"
        ).fetchone()[0]
        assert _last_log(conn)[0] == "exact"
        assert exact == len([i for i in truth if i < 50])
        conn.execute("reset sieve.recall_target")
        conn.execute("reset sieve.budget")
        conn.execute("reset sieve.proxy")
        conn.execute("reset sieve.confidence")
        assert {r[0] for r in conn.execute(sql).fetchall()} == truth  # exact again
        assert _last_log(conn)[0] == "exact"


def test_session_error_target_and_precision_target(approx_world):
    truth = _truth(approx_world)
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 5")
        conn.execute("set sieve.error_target = '10%'")
        conn.execute("set sieve.precision_target = 0.9")
        conn.execute("set sieve.budget = 600")
        conn.execute("set sieve.proxy = 'digit_proxy_p7(pixels)'")
        conn.execute("set sieve.bounds = on")
        count, low, high = (
            float(v)
            for v in conn.execute("SELECT COUNT(*) FROM digits WHERE digit_oracle(pixels) = 7").fetchone()
        )
        mode, target, *_ = _last_log(conn)
        assert (mode, target) == ("approx_count", pytest.approx(0.1))
        assert low <= truth.size <= high
        rows = conn.execute("SELECT id FROM digits WHERE digit_oracle(pixels) = 7").fetchall()
        assert _last_log(conn)[:2] == ("precision", 0.9)
        assert rows and len({r[0] for r in rows} & set(truth.tolist())) / len(rows) >= 0.85
        for name in ("error_target", "precision_target", "budget", "proxy", "bounds"):
            conn.execute(f"reset sieve.{name}")


def test_strict_turns_a_too_small_budget_into_an_error(approx_world):
    notices: list[str] = []
    with approx_world.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("set sieve.seed = 9")
        conn.execute("set sieve.bound = 'finite'")  # 300 draws certify no threshold with it
        conn.execute("set sieve.strict = on")
        _expect_error(conn, RT.format(budget=300), "22023", "BUDGET 300 is too small for the recall target")
        assert _last_log(conn)[6].get("digit_oracle", 0) <= 300  # what was spent is still logged
        _expect_error(
            conn,
            "SELECT COUNT(*) FROM digits WHERE digit_oracle(pixels) = 7 ERROR TARGET 1% BUDGET 50 "
            "USING PROXY digit_proxy_p7(pixels)",
            "22023",
            "BUDGET 50 is too small for ERROR TARGET 1%",
        )
        conn.execute("set sieve.strict = off")
        assert conn.execute(RT.format(budget=300)).fetchall()  # a NOTICE, not an error
    assert any("a budget of roughly" in n for n in notices)


def test_a_bad_session_setting_fails_the_model_query_with_its_name(approx_world):
    with approx_world.connect() as conn:
        conn.execute("set sieve.recall_target = 'lots'")
        _expect_error(
            conn, "SELECT id FROM digits WHERE digit_oracle(pixels) = 7", "22023", "sieve.recall_target"
        )
        conn.execute("reset sieve.recall_target")
        conn.execute("set sieve.bound = 'sometimes'")
        _expect_error(conn, RT.format(budget=300), "22023", "sieve.bound must be one of")
        conn.execute("reset sieve.bound")
