"""Session settings (``SET sieve.*``) for clients that cannot append an approximate clause.

``sieve.recall_target``, ``sieve.precision_target``, ``sieve.error_target`` (a fraction such as
``0.9`` or a percentage such as ``'90%'``), ``sieve.confidence`` (likewise), ``sieve.budget`` (a
whole number of oracle calls) and ``sieve.proxy`` (an SQL expression) act like the clause items of
the same name: with no clause they form one (only when a target applies to the statement's
shape), and with a clause they fill in the items the clause does not write. ``sieve.strict = on``
turns "the budget is too small for the target" from a NOTICE into an error (SQLSTATE 22023,
:data:`BUDGET_TOO_SMALL`). ``sieve.seed`` and ``sieve.bounds`` are read in the same round trip.

``sieve.bound`` picks the confidence bound of the sampling operators: ``'empirical'`` (the
default: empirical Bernstein with the range read off the sample; it met every target of our
benchmarks at useful precision, but it is not a distribution-free finite-sample bound), ``'betting'``
(alias ``'finite'``; valid at every sample size whatever the data, at the price of returning far
more rows when positives are rare), ``'bernstein'``, ``'hoeffding'`` (finite-sample too) or
``'normal'`` (SUPG's CLT bound, asymptotic).

``SHOW`` of a setting the session has no value of answers :data:`SHOWN_DEFAULTS`; any other
``sieve.*`` name is refused (42704), see ``planner.setting_names``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from planner.approx.clause import DEFAULT_CONFIDENCE, ApproxClause
from planner.outcome import PlanError
from planner.sqlstate import INVALID_PARAMETER

BUDGET_TOO_SMALL = INVALID_PARAMETER  # under sieve.strict: the BUDGET value cannot meet the target
# What SHOW answers for a setting the session has no value of: how SieveDB behaves without one
# (no target, no budget, no proxy: exact queries).
SHOWN_DEFAULTS = {
    "recall_target": "",
    "precision_target": "",
    "error_target": "",
    "confidence": str(DEFAULT_CONFIDENCE),
    "budget": "",
    "proxy": "",
    "strict": "off",
    "seed": "",
    "bounds": "off",
    "bound": "empirical",
}
_NAMES = tuple(SHOWN_DEFAULTS)
READ_SQL = "SELECT " + ", ".join(f"current_setting('sieve.{n}', true)" for n in _NAMES)
DEFAULT_BOUND = SHOWN_DEFAULTS["bound"]
FINITE_ALIAS = {"finite": "betting"}
BOUND_NAMES = ("empirical", "betting", "bernstein", "hoeffding", "normal")
_TRUE = {"on", "true", "yes", "1", "t", "y"}
_FALSE = {"off", "false", "no", "0", "f", "n", ""}


@dataclass(frozen=True)
class SessionSettings:
    recall_target: float | None = None
    precision_target: float | None = None
    error_target: float | None = None
    confidence: float | None = None
    budget: int | None = None
    proxy: str | None = None
    strict: bool = False
    seed: str | None = None
    bounds: bool = False
    bound: str = DEFAULT_BOUND

    @property
    def has_target(self) -> bool:
        return any(t is not None for t in (self.recall_target, self.precision_target, self.error_target))

    def clause_for(self, aggregate: bool) -> ApproxClause | None:
        """The clause these settings give a statement without one (None: run it exactly).
        Aggregates take ``sieve.error_target``; row selections the recall/precision targets."""
        if aggregate:
            if self.error_target is None:
                return None
            targets = {"error_target": self.error_target}
        else:
            if self.recall_target is None and self.precision_target is None:
                return None
            targets = {"recall_target": self.recall_target, "precision_target": self.precision_target}
        clause = ApproxClause(**targets, text="(session settings sieve.*)")
        return self.fill(clause)

    def fill(self, clause: ApproxClause) -> ApproxClause:
        """The clause with confidence, budget and proxy taken from the session where it has none."""
        changes = {}
        if "confidence" not in clause.given and self.confidence is not None:
            changes["confidence"] = self.confidence
        if "budget" not in clause.given and self.budget is not None:
            changes["budget"] = self.budget
        if "proxy" not in clause.given and self.proxy is not None:
            changes["proxy"] = self.proxy
        return dataclasses.replace(clause, **changes) if changes else clause


def parse_settings(values: list[str | None]) -> SessionSettings:
    """Validated settings from the row of :data:`READ_SQL` (NULL or '' = not set)."""
    raw = dict(
        zip(_NAMES, [None if v is None or v.strip() == "" else v.strip() for v in values], strict=True)
    )
    out: dict = {}
    for name in ("recall_target", "precision_target", "error_target"):
        if raw[name] is not None:
            value = _fraction(name, raw[name])
            if not 0.0 < value < 1.0:
                raise PlanError(
                    INVALID_PARAMETER,
                    f"sieve.{name} must be between 0 and 1 (or 0% and 100%), exclusive, got {raw[name]!r}",
                )
            out[name] = value
    if raw["confidence"] is not None:
        value = _fraction("confidence", raw["confidence"])
        if not 0.5 < value < 1.0:
            raise PlanError(
                INVALID_PARAMETER,
                f"sieve.confidence must be above 0.5 (50%) and below 1 (100%), got {raw['confidence']!r}",
            )
        out["confidence"] = value
    if raw["budget"] is not None:
        try:
            budget = int(raw["budget"])
        except ValueError:
            raise PlanError(
                INVALID_PARAMETER,
                f"sieve.budget must be a whole number of oracle calls, got {raw['budget']!r}",
            ) from None
        if budget <= 0:
            raise PlanError(INVALID_PARAMETER, f"sieve.budget must be at least 1 oracle call, got {budget}")
        out["budget"] = budget
    out["proxy"] = raw["proxy"]
    out["strict"] = _flag("strict", raw["strict"])
    out["bounds"] = _flag("bounds", raw["bounds"])
    out["seed"] = raw["seed"]
    if raw["bound"] is not None:
        out["bound"] = _bound(raw["bound"])
    return SessionSettings(**out)


async def read_settings(port) -> SessionSettings:
    """One round trip to the client's own session for every ``sieve.*`` setting (none when the
    session never mentioned ``sieve.``; ALTER ROLE/DATABASE ... SET sieve.* is not seen)."""
    if not getattr(port, "uses_sieve_settings", True):
        return SessionSettings()
    result = await port.run_sql(READ_SQL)
    if result.error is not None or not result.rows:
        return SessionSettings()
    return parse_settings(list(result.rows[0]))


def _fraction(name: str, text: str) -> float:
    percent = text.endswith("%")
    try:
        value = float(text[:-1] if percent else text)
    except ValueError:
        raise PlanError(
            INVALID_PARAMETER, f"sieve.{name} must be a fraction such as 0.9 or a percentage such as '90%'"
        ) from None
    return value / 100.0 if percent else value


def _flag(name: str, text: str | None) -> bool:
    if text is None:
        return False
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise PlanError(INVALID_PARAMETER, f"sieve.{name} must be on or off, got {text!r}")


def _bound(text: str) -> str:
    name = FINITE_ALIAS.get(text.lower(), text.lower())
    if name not in BOUND_NAMES:
        raise PlanError(
            INVALID_PARAMETER,
            f"sieve.bound must be one of {', '.join(BOUND_NAMES)} (or finite), got {text!r}",
        )
    return name
