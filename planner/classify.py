"""The one hook every statement passes through on its way to Postgres.

Today no model or approximate clause is known, so every statement is forwarded untouched.
Later the hook recognises statements that reference model functions (directly or through views)
or carry an approximate clause, and routes them to the planner instead.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Route(enum.Enum):
    FORWARD = "forward"
    PLAN = "plan"


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str = ""
    executes_itself: bool = False  # the planner answers the statement (DDL) instead of Postgres


FORWARD = Decision(Route.FORWARD)


class Classifier:
    """Routes statements; keeps the forward path to one cheap call."""

    def classify(self, sql: str) -> Decision:
        """Decide the route of one statement text (a simple Query string or a Parse)."""
        del sql  # nothing to plan until models exist
        return FORWARD
