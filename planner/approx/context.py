"""What one approximate query's operator works with: its plan, its session, its I/O and its reporter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.approx.io import ApproxIO
from planner.approx.plan import ApproxPlan
from planner.approx.report import Reporter
from planner.approx.settings import SessionSettings
from planner.materialize import Materialized
from planner.outcome import PlanError, SessionPort
from planner.sqlstate import INVALID_PARAMETER


@dataclass
class ApproxRun:
    planner: object  # planner.planner.Planner (catalog, analyse, materialize_all, dbs)
    port: SessionPort
    plan: ApproxPlan
    settings: SessionSettings
    io: ApproxIO
    report: Reporter
    done: Materialized

    def rng(self) -> np.random.Generator:
        """A generator seeded by sieve.seed when the session sets one."""
        value = self.settings.seed
        if value in (None, ""):
            return np.random.default_rng()
        try:
            return np.random.default_rng(int(value))
        except ValueError:
            raise PlanError(INVALID_PARAMETER, f"sieve.seed must be an integer, got {value!r}") from None
