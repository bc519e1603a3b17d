"""Model lifecycle without a database: which statements reach planner/lifecycle.py, what they name,
whether a transaction block is left undecided, and what reconciling decides."""

from __future__ import annotations

import pytest
from pglast import parse_sql

from planner.classify import MODEL_CALL, MODEL_DDL, MODEL_LIFECYCLE, Classifier, Route
from planner.function_ddl import (
    DROP,
    RENAME,
    SET_SCHEMA,
    drops_dependents,
    leaves_block_open,
    read_function_change,
)
from planner.model_ddl import read_create
from planner.reconcile import FOLLOW, FORGET, LEAVE, decide


def _stmt(sql: str):
    return parse_sql(sql)[0].stmt


def _statements(sql: str) -> list:
    return [raw.stmt for raw in parse_sql(sql)]


@pytest.fixture
def classifier() -> Classifier:
    routes = Classifier()
    routes.set_models({"lin", "Mixed"}, {"lin_view"})
    return routes


@pytest.mark.parametrize(
    "sql",
    [
        "drop function lin(real[]) cascade",
        "DROP FUNCTION LIN",
        "alter function lin(real[]) rename to lin2",
        "ALTER ROUTINE public.lin OWNER TO bob",
        "alter function lin(real[]) set schema s",
        "comment on function \"Mixed\"(real[]) is 'x'",
        "drop table frames cascade",
        "drop owned by bob",
        "select 1; drop function lin(real[])",
    ],
)
def test_function_ddl_naming_a_model_and_cascading_drops_go_to_the_lifecycle(classifier, sql):
    assert classifier.classify(sql) is MODEL_LIFECYCLE


@pytest.mark.parametrize(
    "sql",
    [
        "drop function lin(real[])",
        "alter function lin(real[]) rename to lin2",
        "comment on function lin(real[]) is 'x'",
        "create function lin(x int) returns int language sql as 'select x'",
        "drop owned by bob",
    ],
)
def test_the_pre_filter_sees_ddl_right_after_a_length_that_ends_in_a_letter(classifier, sql):
    # a Query frame: b"Q", a 4-byte length (here 80, whose last byte is b"P"), the text
    assert classifier.may_plan(b"Q\x00\x00\x00P" + sql.encode() + b"\x00")


def test_other_statements_keep_their_routes(classifier):
    assert (
        classifier.classify("create function f(x real[]) returns int language onnx as 'm.onnx'") is MODEL_DDL
    )
    assert classifier.classify("select lin(x) from t") is MODEL_CALL
    assert classifier.classify("drop function other(int)").route is Route.FORWARD
    assert classifier.classify("drop table t").route is Route.FORWARD
    assert classifier.may_plan(b"alter function lin(real[]) owner to bob")
    assert classifier.may_plan(b"drop schema s cascade")
    assert MODEL_DDL.lifecycle and MODEL_LIFECYCLE.lifecycle and not MODEL_CALL.lifecycle
    assert not MODEL_LIFECYCLE.executes_itself  # Postgres parses it: prepared statements work


def test_a_drop_names_each_function_as_postgres_will_look_it_up():
    change = read_function_change(
        _stmt("drop function if exists lin(pixels real[]), public.f(int, double precision), g cascade")
    )
    assert change.action == DROP and change.cascade
    assert [(r.name, r.lookup, r.with_args) for r in change.targets] == [
        ("lin", '"lin"(real[])', True),
        ("f", '"public"."f"(integer, double precision)', True),
        ("g", '"g"', False),
    ]


def test_renames_and_moves_of_functions_are_read_and_others_are_not():
    rename = read_function_change(_stmt('alter routine "We""ird"() rename to plain'))
    assert rename.action == RENAME and rename.new_name == "plain"
    assert rename.targets[0].lookup == '"We""ird"()'
    moved = read_function_change(_stmt("alter function lin(real[]) set schema elsewhere"))
    assert moved.action == SET_SCHEMA and moved.new_schema == "elsewhere"
    for sql in (
        "alter function lin(real[]) owner to bob",
        "comment on function lin(real[]) is 'x'",
        "alter table t rename to u",
        "drop table t",
        "alter function lin(real[]) cost 5",
    ):
        assert read_function_change(_stmt(sql)) is None, sql


def test_drops_that_may_take_functions_with_them():
    assert drops_dependents(_stmt("drop view v cascade"))
    assert drops_dependents(_stmt("drop owned by bob"))
    assert not drops_dependents(_stmt("drop view v"))
    assert not drops_dependents(_stmt("select 1"))


@pytest.mark.parametrize(
    ("sql", "in_block", "undecided"),
    [
        ("drop function lin(real[])", False, False),
        ("drop function lin(real[])", True, True),
        ("drop function lin(real[]); commit", True, False),
        ("begin; drop function lin(real[]); commit", False, False),
        ("begin; drop function lin(real[]); rollback", False, False),
        ("begin; drop function lin(real[])", False, True),
        ("begin; drop function lin(real[]); commit and chain", False, True),
        ("begin; drop function lin(real[]); savepoint s; rollback to s", False, True),
        ("drop function lin(real[]); prepare transaction 'x'", False, True),
        ("rollback; drop function lin(real[])", True, False),
        ("start transaction; drop function lin(real[]); end", False, False),
    ],
)
def test_whether_the_statements_leave_their_fate_to_a_later_commit(sql, in_block, undecided):
    assert leaves_block_open(_statements(sql), in_block) is undecided


def _spec():
    spec = read_create(_stmt("create function lin(x real[]) returns int language onnx as 'm.onnx'")).spec
    spec.id = 7
    return spec


def test_reconcile_leaves_a_present_function_alone():
    assert decide(_spec(), True, [], [], {"lin"}) is None


def test_reconcile_forgets_a_model_whose_function_is_gone():
    fix = decide(_spec(), False, [], [], {"lin"})
    assert fix.action == FORGET


def test_reconcile_follows_a_rename_in_public():
    fix = decide(_spec(), False, ["public"], ["lin2"], {"lin"})
    assert fix.action == FOLLOW and fix.new_name == "lin2"


@pytest.mark.parametrize(
    ("schemas", "names", "taken"),
    [
        (["elsewhere"], ["lin"], {"lin"}),  # moved out of public: not followed
        (["public", "public"], ["a", "b"], {"lin"}),  # two candidates: cannot tell
        (["public"], ["other"], {"lin", "other"}),  # the new name is another model's
    ],
)
def test_reconcile_only_logs_what_it_cannot_follow(schemas, names, taken):
    fix = decide(_spec(), False, schemas, names, taken)
    assert fix.action == LEAVE and "lin" in fix.why
