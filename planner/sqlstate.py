"""SQLSTATE codes the planner raises (the server's own protocol-level codes are in server/sqlstate.py)."""

FEATURE_NOT_SUPPORTED = "0A000"
INVALID_PARAMETER = "22023"
SYNTAX_ERROR = "42601"
INTERNAL_ERROR = "XX000"
