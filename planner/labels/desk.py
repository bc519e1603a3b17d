"""The labelling API the web face serves ``/label`` from (one desk per database: ``planner.labels``).

Access is by token (planner/labels/tokens.py), tied to a Postgres role. Every call re-checks,
on SieveDB's own connections, that the role may still EXECUTE the function
(``has_function_privilege``: a REVOKE bites at once) and that a 'label' token is used only on
its own function's requests (403 otherwise). A request whose source row no longer exists is
skipped by ``next_item`` and refused by ``give`` (410, nothing written). The first answer to a
request wins: the same value again changes nothing, a different one from another role is 409,
from the same role a relabel (a new version). Each label is NOTIFYed and wakes statements
waiting for it here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from planner.labels import giving, store, versions
from planner.labels.errors import FORBIDDEN, GONE, NOT_FOUND, UNAUTHORIZED, LabelError
from planner.labels.giving import Given
from planner.labels.tokens import database_of, new_token, token_digest
from planner.labels.versions import current_spec
from planner.model_spec import ModelSpec

if TYPE_CHECKING:
    from planner.planner import Planner

__all__ = [
    "Given",
    "Grant",
    "LabelDesk",
    "LabelError",
    "LabelInput",
    "LabelItem",
    "LabelTask",
    "Progress",
    "database_of",
]

log = logging.getLogger("sievedb.planner.labels.desk")

SCOPES = ("label", "status")
_LOOK_AHEAD = 32  # pending requests looked at per round when skipping rows that are gone


@dataclass
class Grant:
    role: str
    database: str
    function: str | None
    scope: str
    expires_at: datetime
    model_id: int | None = field(default=None, repr=False)


@dataclass
class LabelInput:
    name: str
    sql_type: str
    value: bytes | str | None


@dataclass
class LabelItem:
    request_id: int
    function: str
    table: str | None
    key: str | None
    inputs: list[LabelInput]
    requested_by: str
    requested_at: datetime


@dataclass
class LabelTask:
    function: str
    instructions: str
    choices: list
    result_type: str


@dataclass
class Progress:
    pending: int
    answered: int
    answered_by_role: int


class _QuietPort:
    """The session the assertion monitor is given after a relabel from the page: none to tell."""

    def __init__(self, role: str, database: str) -> None:
        self.user, self.database, self.in_transaction = role, database, False

    def notice(self, message: str) -> None:
        log.info("%s", message)

    def progress(self, *args) -> None:
        pass

    async def arm_statement_timeout(self) -> None:
        pass


class LabelDesk:
    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self._database: str | None = None

    async def database(self) -> str:
        if self._database is None:
            self._database = await self.planner.dbs.read.fetchval("SELECT current_database()::text")
        return self._database

    # -- tokens -------------------------------------------------------------------------------

    async def resolve(self, token: str) -> Grant:
        """The grant a token carries; 401 when it is unknown, expired or of another database."""
        if database_of(token) != await self.database():
            raise LabelError(UNAUTHORIZED, "unknown or expired token")
        row = await store.find_token(self.planner.dbs.read, token_digest(token))
        if row is None or (row["scope"] == "label" and row["model_id"] is None):
            raise LabelError(UNAUTHORIZED, "unknown or expired token")
        return Grant(
            row["role"], row["database"], row["function"], row["scope"], row["expires_at"], row["model_id"]
        )

    async def issue(self, role: str, function: str | None, scope: str, ttl_s: int) -> str:
        """A new token for ``role``: scope 'label' names a function the role may EXECUTE,
        scope 'status' none."""
        if scope not in SCOPES:
            raise LabelError(400, f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if ttl_s <= 0:
            raise LabelError(400, f"a link must last a positive time, not {ttl_s} s")
        model_id = None
        if scope == "label":
            spec = self._labels_spec(function)
            model_id = int(spec.id)
            await self._require_execute(role, model_id, spec.name)
        elif function is not None:
            raise LabelError(400, "a status link names no function")
        database = await self.database()
        token = new_token(database)
        await store.add_token(
            self.planner.dbs.write, token_digest(token), role, database, model_id, scope, ttl_s
        )
        log.info("link issued role=%s scope=%s function=%s", role, scope, function)
        return token

    # -- reading ------------------------------------------------------------------------------

    async def task(self, grant: Grant) -> LabelTask:
        spec = await self._check(grant)
        return LabelTask(
            spec.name,
            spec.options["instructions"],
            list(spec.options["choices"]),
            spec.bindings[0].sql_type.sql,
        )

    async def next_item(self, grant: Grant, skip: Sequence[int] = ()) -> LabelItem | None:
        """The oldest pending request of the grant's function not in ``skip`` whose source row
        still exists; None when there is none."""
        spec = await self._check(grant)
        db = self.planner.dbs.read
        skipped = list(skip)
        while True:
            batch = await store.pending_requests(db, int(spec.id), skipped, _LOOK_AHEAD)
            for request in batch:
                if await store.source_exists(db, request):
                    return _item(spec.name, request)
                skipped.append(request.request_id)
            if len(batch) < _LOOK_AHEAD:
                return None

    async def progress(self, grant: Grant) -> Progress:
        spec = await self._check(grant)
        pending, answered, mine = await store.progress(self.planner.dbs.read, int(spec.id), grant.role)
        return Progress(pending, answered, mine)

    # -- writing ------------------------------------------------------------------------------

    async def give(self, grant: Grant, request_id: int, value: str) -> Given:
        """Label a request with ``value`` (text, cast to the result type and checked against
        the choices: 400)."""
        spec = await self._check(grant)
        request = await self._request(spec, request_id)
        if not await store.source_exists(self.planner.dbs.read, request):
            raise LabelError(
                GONE,
                f"the row request {request_id} came from ({request.table_name} {request.key}) "
                "no longer exists: no label written",
            )
        relabel = request.answered_by == grant.role  # a labeller may change their own answer
        given, bumped = await giving.give(
            self.planner.dbs.write, int(spec.id), request_id, value, grant.role, relabel=relabel
        )
        await versions.follow(self.planner, bumped, _QuietPort(grant.role, grant.database))
        return given

    async def undo(self, grant: Grant, request_id: int) -> None:
        """Take back the role's own last label of a request."""
        spec = await self._check(grant)
        await self._request(spec, request_id)
        bumped = await giving.take_back(self.planner.dbs.write, int(spec.id), request_id, grant.role)
        await versions.follow(self.planner, bumped, _QuietPort(grant.role, grant.database))

    # -- checks -------------------------------------------------------------------------------

    async def _check(self, grant: Grant) -> ModelSpec:
        """The grant's function, once the role is seen to still hold EXECUTE on it."""
        if grant.scope != "label" or grant.model_id is None:
            raise LabelError(FORBIDDEN, "this link does not give labels")
        spec = await self._spec_by_id(grant.model_id)
        await self._require_execute(grant.role, grant.model_id, spec.name)
        return spec

    async def _require_execute(self, role: str, model_id: int, name: str) -> None:
        allowed = await store.may_execute(self.planner.dbs.read, role, model_id)
        if allowed is None:
            raise LabelError(NOT_FOUND, f"function {name} no longer exists")
        if not allowed:
            raise LabelError(FORBIDDEN, f"permission denied for function {name}")

    async def _request(self, spec: ModelSpec, request_id: int) -> store.Request:
        request = await store.request_by_id(self.planner.dbs.read, request_id)
        if request is None:
            raise LabelError(NOT_FOUND, f"label request {request_id} does not exist")
        if request.model_id != int(spec.id):
            raise LabelError(FORBIDDEN, f"label request {request_id} is not one of function {spec.name}")
        return request

    async def _spec_by_id(self, model_id: int) -> ModelSpec:
        spec = await current_spec(self.planner.dbs.read, model_id)
        if spec is None or not spec.is_labels:
            raise LabelError(NOT_FOUND, "the function of this link no longer exists")
        return spec

    def _labels_spec(self, function: str | None) -> ModelSpec:
        spec = self.planner.catalog.get(function) if function else None
        if spec is None or not spec.is_labels:
            raise LabelError(NOT_FOUND, f"labels function {function} does not exist")
        return spec


def _item(function: str, request: store.Request) -> LabelItem:
    inputs = [
        LabelInput(name, sql_type, blob if sql_type == "bytea" else text)
        for name, sql_type, text, blob in zip(
            request.input_names, request.input_types, request.input_text, request.input_bytes, strict=True
        )
    ]
    return LabelItem(
        request.request_id,
        function,
        request.table_name,
        request.key,
        inputs,
        request.requested_by,
        request.requested_at,
    )
