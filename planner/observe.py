"""What the planner tells whoever watches it (the server's metrics), without knowing who that is.

The planner must not import the server (dependencies point one way), so the server hands the
planner an observer: each ``sieve.query_log`` row the planner writes is reported to it at the
very place the row is written, so counters kept from these reports equal sums over the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class QueryObserver(Protocol):
    def query_logged(self, mode: str, model_calls: Mapping[str, int], cache_hits: int) -> None:
        """A ``sieve.query_log`` row was written (after its INSERT succeeded)."""
        ...


class NullObserver:
    """The observer of a planner nobody watches (tools, tests that build a planner alone)."""

    def query_logged(self, mode: str, model_calls: Mapping[str, int], cache_hits: int) -> None:
        return None


NULL_OBSERVER = NullObserver()
