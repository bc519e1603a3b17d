"""Giving, changing and taking back one label: the writes behind ``sieve.label`` /
``sieve.unlabel`` and the labelling page (planner/labels/desk.py), on SieveDB's writer.

A label is the function's cached output for the input's digest. The first label of an input is
written into the current version's cache; the same value again changes nothing; a different
value (a relabel) makes a new version (planner/labels/versions.py). Each write is one
transaction under the function's label lock, with a history entry and a NOTIFY."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from planner.labels import store, versions
from planner.labels.definition import choice_text
from planner.labels.errors import BAD_REQUEST, CONFLICT, NOT_FOUND, LabelError
from planner.labels.waiting import poke
from planner.model_spec import ModelSpec
from planner.sqlstate import INVALID_PARAMETER, INVALID_TEXT_REPRESENTATION


@dataclass
class Given:
    request_id: int
    value: object
    previous: object | None
    version: int
    changed: bool


async def cast_value(db: asyncpg.Pool | asyncpg.Connection, spec: ModelSpec, text: str) -> Any:
    """``text`` as a value of the function's result type, and one of its choices."""
    sql_type = spec.bindings[0].sql_type.sql
    choices = [choice_text(c) for c in spec.options.get("choices", [])]
    try:
        value, allowed = await db.fetchrow(
            f"SELECT $1::text::{sql_type}, ARRAY(SELECT c::{sql_type} FROM unnest($2::text[]) AS c)",
            text,
            choices,
        )
    except (asyncpg.DataError, asyncpg.PostgresSyntaxError) as exc:
        raise LabelError(
            BAD_REQUEST,
            f"label {text!r} for function {spec.name} is not a {sql_type}: {exc}",
            sqlstate=INVALID_TEXT_REPRESENTATION,
        ) from None
    if value not in list(allowed):
        raise LabelError(
            BAD_REQUEST,
            f"label {text!r} is not one of the choices of function {spec.name}: " + ", ".join(choices),
            sqlstate=INVALID_PARAMETER,
        )
    return value


async def _locked_request(conn: asyncpg.Connection, model_id: int, request_id: int):
    """The function's current version and the request, with the function's labels locked for
    this transaction (labels, relabels and undos of one function go one at a time)."""
    await store.lock_function(conn, model_id)
    spec = await versions.current_spec(conn, model_id)
    request = await store.request_by_id(conn, request_id)
    if spec is None or request is None or request.model_id != model_id:
        raise LabelError(NOT_FOUND, f"label request {request_id} does not exist")
    return spec, request


async def give(
    writer: asyncpg.Pool, model_id: int, request_id: int, value_text: str, role: str, relabel: bool
) -> tuple[Given, ModelSpec | None]:
    """Label one request; (what happened, the new version when a relabel made one). A
    different value for an input already labelled is a relabel only when ``relabel`` says so
    (else 409, nothing written)."""
    async with writer.acquire() as conn, conn.transaction():
        spec, request = await _locked_request(conn, model_id, request_id)
        value = await cast_value(conn, spec, value_text)
        labelled, previous = await store.cached_label(conn, model_id, spec.version, request.digest)
        if labelled and previous == value:
            await store.mark_answered(conn, request_id, role)  # a label given behind the request's back
            return Given(request_id, value, previous, spec.version, False), None
        bumped = None
        if labelled:
            if not relabel:
                raise LabelError(
                    CONFLICT,
                    f"request {request_id} was already labelled {choice_text(previous)} by "
                    f"{request.answered_by or 'someone else'}",
                    hint="the first answer wins; its labeller may undo it, "
                    "or relabel with SELECT sieve.label(...)",
                )
            bumped = await versions.new_version(conn, spec)
            spec = bumped
        await store.write_label(
            conn, model_id, spec.version, request.digest, value_text, spec.bindings[0].sql_type.sql
        )
        await store.mark_answered(conn, request_id, role)
        action = "relabel" if labelled else "label"
        await store.add_history(
            conn, model_id, request_id, request.digest, action, value, previous, spec.version, role
        )
    poke(model_id)
    return Given(request_id, value, previous if labelled else None, spec.version, True), bumped


async def take_back(writer: asyncpg.Pool, model_id: int, request_id: int, role: str) -> ModelSpec | None:
    """Undo ``role``'s last label of a request: a first label goes (the request is pending
    again); a relabel goes back to the value before it (a new version). The new version, if any."""
    async with writer.acquire() as conn, conn.transaction():
        spec, request = await _locked_request(conn, model_id, request_id)
        last = await store.last_entry(conn, model_id, request.digest)
        if last is None or last["action"] == "undo" or request.state == "pending":
            raise LabelError(CONFLICT, f"request {request_id} has no label to take back")
        if last["labelled_by"] != role:
            raise LabelError(
                CONFLICT,
                f"the last label of request {request_id} was given by {last['labelled_by']}, not {role}",
            )
        _, current = await store.cached_label(conn, model_id, spec.version, request.digest)
        bumped = None
        if last["action"] == "label":
            await store.remove_label(conn, model_id, spec.version, request.digest)
            await store.mark_answered(conn, request_id, None)
        else:
            bumped = spec = await versions.new_version(conn, spec)
            await store.write_label(
                conn,
                model_id,
                spec.version,
                request.digest,
                choice_text(_json(last["previous"])),
                spec.bindings[0].sql_type.sql,
            )
        await store.add_history(
            conn, model_id, request_id, request.digest, "undo", None, current, spec.version, role
        )
    poke(model_id)
    return bumped


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
