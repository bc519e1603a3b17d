"""The one error of the labelling API: an SQLSTATE for SQL clients and an HTTP status for the
web face (planner/labels/desk.py), so both say the same thing about the same mistake."""

from __future__ import annotations

from planner.outcome import PlanError

UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, GONE, BAD_REQUEST = 401, 403, 404, 409, 410, 400
_SQLSTATES = {
    UNAUTHORIZED: "28000",  # invalid_authorization_specification: unknown or expired token
    FORBIDDEN: "42501",  # insufficient_privilege
    NOT_FOUND: "42704",  # undefined_object
    CONFLICT: "55000",  # object_not_in_prerequisite_state: labelled by someone else
    GONE: "P0002",  # no_data_found: the row the request came from no longer exists
    BAD_REQUEST: "22023",  # invalid_parameter_value
}


class LabelError(Exception):
    """A refused labelling call; ``sqlstate`` for SQL, ``http_status`` for the web face."""

    def __init__(
        self, http_status: int, message: str, *, sqlstate: str | None = None, hint: str | None = None
    ):
        super().__init__(message)
        self.http_status = http_status
        self.sqlstate = sqlstate or _SQLSTATES.get(http_status, "XX000")
        self.hint = hint

    def plan_error(self) -> PlanError:
        return PlanError(self.sqlstate, str(self), hint=self.hint)
