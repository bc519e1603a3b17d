"""The one hook every statement passes through on its way to Postgres.

A cheap pre-filter keeps plain traffic on the forward path: only statements that mention
``onnx`` (model DDL), DROP / ALTER / COMMENT ON a function named like a model, drops that may
cascade, or call a registered model by name are sent to the planner, which parses them and
may still decide to forward.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Route(enum.Enum):
    FORWARD = "forward"
    PLAN = "plan"


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str = ""
    executes_itself: bool = False  # the planner answers the statement (DDL) instead of Postgres
    lifecycle: bool = False  # may create, drop or rename a model: planner/lifecycle.py looks first


FORWARD = Decision(Route.FORWARD)
MODEL_DDL = Decision(Route.PLAN, "model DDL", executes_itself=True, lifecycle=True)
# DROP / ALTER of functions, drops that cascade: Postgres parses and runs them, SieveDB follows.
MODEL_LIFECYCLE = Decision(Route.PLAN, "model lifecycle", lifecycle=True)
MODEL_CALL = Decision(Route.PLAN, "model call")
APPROXIMATE = Decision(Route.PLAN, "approximate clause")
# planner/assertions: CREATE / DROP ASSERTION (Postgres cannot parse them: held whole), and
# sieve.check_assertion(...) / sieve.label_candidates(...) (Postgres prepares and describes them;
# each execution goes to the planner, over both protocols)
ASSERTION_DDL = Decision(Route.PLAN, "assertion", executes_itself=True)
ASSERTION_CALL = Decision(Route.PLAN, "assertion")
# planner/labels: sieve.label(...), sieve.unlabel(...), sieve.labelling_link(...), sieve.status_link()
LABEL_CALL = Decision(Route.PLAN, "labels")
# Forwarded; the session notes it may carry sieve.* settings the planner must then read.
SIEVE_SETTING = Decision(Route.FORWARD, "mentions sieve.* settings")

# Statement openings, without a leading \b in the pre-filter: there a Query's text follows its
# length, whose last byte may be a letter ('P' for 80 bytes), and no word boundary comes between.
_FUNCTION_DDL_RE = (
    rb"(?:drop|alter)\s+(?:function|routine)\b|comment\s+on\s+(?:function|routine)\b"
    rb"|create\s+(?:or\s+replace\s+)?(?:function|procedure)\b"
)
_FUNCTION_DDL = re.compile(rb"\b(?:" + _FUNCTION_DDL_RE + rb")", re.IGNORECASE)
_DROPS_DEPENDENTS_RE = rb"cascade\b|drop\s+owned\b"
_DROPS_DEPENDENTS = re.compile(rb"\b(?:" + _DROPS_DEPENDENTS_RE + rb")", re.IGNORECASE)
_ONNX = re.compile(rb"onnx|\blanguage\s+labels\b", re.IGNORECASE)  # model DDL (LANGUAGE labels too)
_VIEW_DDL = re.compile(rb"\b(?:create|alter|drop)\b[\s\w]*?\bview\b", re.IGNORECASE)
_LANGUAGE_ONNX = re.compile(rb"\blanguage\s+(?:onnx|labels)\b", re.IGNORECASE)
# --- approximate queries (planner/approx): words a trailing approximate clause can start with;
# a false positive only costs a parse (the planner forwards statements without a clause).
_APPROX = rb"target\b|\boracle\s+limit\b|\busing[\s_]+proxy\b|\bwith\s+(?:recall|precision)\b"
_APPROX_CLAUSE = re.compile(_APPROX, re.IGNORECASE)
_SIEVE_SETTING = rb"\bsieve\."
_ASSERTION_DDL = re.compile(rb"(?:create|drop)\s+assertion\b", re.IGNORECASE)
_ASSERTION_CALL = re.compile(rb"\bsieve\.(?:check_assertion|label_candidates)\s*\(", re.IGNORECASE)
_LABEL_CALL = re.compile(rb"\bsieve\.(?:label|unlabel|labelling_link|status_link)\s*\(", re.IGNORECASE)
_SIEVE_SETTING_RE = re.compile(_SIEVE_SETTING, re.IGNORECASE)
_ONNX_OR_APPROX = re.compile(
    rb"onnx|language\s+labels|assertion|" + _SIEVE_SETTING + b"|" + _APPROX, re.IGNORECASE
)
# --- end approximate queries


def _spellings(name: str) -> set[bytes]:
    """How a name appears in SQL text: as is, and inside double quotes with each " doubled."""
    return {name.encode(), name.replace('"', '""').encode()}


class Classifier:
    """Routes statements; keeps the forward path to one cheap call."""

    def __init__(self) -> None:
        self._calls: re.Pattern | None = None
        self._names: frozenset[bytes] = frozenset()
        self._prefilter = _ONNX_OR_APPROX

    def set_models(self, names: set[str], views: set[str] = frozenset()) -> None:
        self._names = frozenset(spelled for n in names for spelled in _spellings(n))
        if not names:
            self._calls = None
            self._prefilter = _ONNX_OR_APPROX
            return
        alternatives = b"|".join(re.escape(s) for s in sorted(self._names, key=len, reverse=True))
        calls = rb'(?<![\w$])"?(?:' + alternatives + rb')"?\s*\('
        if views:
            spelled_views = {s for v in views for s in _spellings(v)}
            names_of_views = b"|".join(re.escape(v) for v in sorted(spelled_views, key=len, reverse=True))
            calls += rb'|(?<![\w$])"?(?:' + names_of_views + rb')"?(?![\w$])'
        self._calls = re.compile(calls, re.IGNORECASE)
        # One pass over a chunk: DDL, a model call or view, or DDL that may change either.
        self._prefilter = re.compile(
            rb"onnx|language\s+labels|assertion|"
            + _FUNCTION_DDL_RE
            + b"|"
            + _DROPS_DEPENDENTS_RE
            + rb"|\bview\b|"
            + _SIEVE_SETTING
            + b"|"
            + _APPROX
            + b"|"
            + calls,
            re.IGNORECASE,
        )

    def may_plan(self, chunk: bytes | bytearray) -> bool:
        """False when nothing in ``chunk`` (any number of whole or partial messages) could be
        routed to the planner: lets the forward path skip per-statement checks."""
        return self._prefilter.search(chunk) is not None

    def has_clause(self, sql: str) -> bool:
        """True when the statement carries an approximate clause (Postgres cannot parse it)."""
        if not _APPROX_CLAUSE.search(sql.encode()):
            return False
        from planner.approx.clause import split_clause

        try:
            return split_clause(sql)[1] is not None
        except Exception:  # an invalid clause is still a clause: the planner reports it
            return True

    def classify(self, sql: bytes | str) -> Decision:
        """Decide the route of one statement (a simple Query string or a Parse), given as the
        UTF-8 bytes of the frame so that the forward path never decodes it."""
        if isinstance(sql, str):
            sql = sql.encode()
        if _ASSERTION_DDL.search(sql):
            return ASSERTION_DDL
        if _ASSERTION_CALL.search(sql):
            return ASSERTION_CALL
        if _LABEL_CALL.search(sql):
            return LABEL_CALL
        has_onnx = _ONNX.search(sql) is not None
        if self._calls is None and not has_onnx:
            if _APPROX_CLAUSE.search(sql):
                return APPROXIMATE
            return SIEVE_SETTING if _SIEVE_SETTING_RE.search(sql) else FORWARD
        if has_onnx and _LANGUAGE_ONNX.search(sql):
            return MODEL_DDL
        if self._names and self._may_change_models(sql):
            return MODEL_LIFECYCLE
        if self._calls is not None and self._calls.search(sql):
            return MODEL_CALL
        if self._names and _VIEW_DDL.search(sql):
            return MODEL_CALL  # the planner checks whether it really changes a view
        if _APPROX_CLAUSE.search(sql):
            return APPROXIMATE
        if _SIEVE_SETTING_RE.search(sql):
            return SIEVE_SETTING
        return FORWARD

    def _may_change_models(self, sql: bytes) -> bool:
        """DROP / ALTER / COMMENT ON a function that may be a model (a name of one appears, in any
        case: unquoted names fold), or a drop that may take model functions or views with it."""
        if _DROPS_DEPENDENTS.search(sql):
            return True
        if not _FUNCTION_DDL.search(sql):
            return False
        folded = sql.lower()
        return any(name.lower() in folded for name in self._names)
