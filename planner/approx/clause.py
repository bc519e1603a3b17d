"""The trailing approximate clause of a SELECT (not in Postgres's grammar, so found by scanning).

Grammar (case-insensitive, at paren depth 0, after the SELECT, before an optional ``;``), items in
any order, each at most once::

    [ERROR TARGET e%] [RECALL TARGET r%] [PRECISION TARGET p%] [CONFIDENCE c%] [BUDGET n]
    [USING PROXY <expression>]

plus the AIDB spellings (``ERROR_TARGET``, ``RECALL_TARGET``, ``PRECISION_TARGET``,
``USING_PROXY``) and the SUPG spelling (``WITH RECALL 90% WITH SUCCESS PROBABILITY 95%
ORACLE LIMIT 1000 USING PROXY f(x)``). pglast's scanner tokenizes invalid SQL too and keeps
comments and string literals whole, so keywords inside them are never mistaken for the clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pglast.parser import scan

from planner.outcome import PlanError

INVALID_PARAMETER = "22023"
SYNTAX_ERROR = "42601"
DEFAULT_CONFIDENCE = 0.95

# Cheap test before scanning: any word the clause can start with.
MAY_HAVE_CLAUSE = re.compile(
    r"target\b|\boracle\s+limit\b|\busing[\s_]+proxy\b|\bwith\s+(?:recall|precision)\b|\bbudget\s+[+-]?\d",
    re.IGNORECASE,
)
_COMMENTS = {"C_COMMENT", "SQL_COMMENT"}


@dataclass(frozen=True)
class ApproxClause:
    error_target: float | None = None  # fractions in (0, 1)
    recall_target: float | None = None
    precision_target: float | None = None
    confidence: float = DEFAULT_CONFIDENCE
    budget: int | None = None
    proxy: str | None = None  # SQL expression text
    text: str = ""  # the clause as written
    # which items were written (not defaulted): "error", "recall", "precision", "confidence",
    # "budget", "proxy"; session settings (sieve.*) fill in the others
    given: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def selection(self) -> bool:
        return self.recall_target is not None or self.precision_target is not None


@dataclass
class _Tok:
    word: str  # upper-cased text
    text: str
    start: int  # character offsets into the statement, end exclusive
    end: int
    name: str


def _tokens(sql: str) -> list[_Tok]:
    out = []
    try:
        tokens = scan(sql)  # character offsets, end inclusive
    except Exception as exc:  # pglast raises its own errors for text it cannot even tokenize
        raise PlanError(SYNTAX_ERROR, f"syntax error: {exc}") from None
    for t in tokens:
        if t.name not in _COMMENTS:
            text = sql[t.start : t.end + 1]
            out.append(_Tok(text.upper(), text, t.start, t.end + 1, t.name))
    return out


def _item_start(toks: list[_Tok], i: int) -> str | None:
    """Which clause item begins at token i (None when none does)."""
    w = toks[i].word
    nxt = toks[i + 1].word if i + 1 < len(toks) else ""
    if w in ("ERROR", "RECALL", "PRECISION") and nxt == "TARGET":
        return w.lower()
    if w in ("ERROR_TARGET", "RECALL_TARGET", "PRECISION_TARGET"):
        return w[: -len("_TARGET")].lower()
    if w == "WITH" and nxt in ("RECALL", "PRECISION") and i + 2 < len(toks) and _is_number(toks[i + 2]):
        return "supg_" + nxt.lower()
    if w == "WITH" and nxt == "SUCCESS":
        return "confidence"
    if w == "CONFIDENCE" and i + 1 < len(toks) and _is_number_start(toks[i + 1]):
        return "confidence"
    if w == "BUDGET" and i + 1 < len(toks) and _is_number_start(toks[i + 1]):
        return "budget"
    if w == "ORACLE" and nxt == "LIMIT":
        return "budget"
    if (w == "USING" and nxt == "PROXY") or w == "USING_PROXY":
        return "proxy"
    return None


def _is_number(tok: _Tok) -> bool:
    return tok.name in ("ICONST", "FCONST")


def _is_number_start(tok: _Tok) -> bool:
    return _is_number(tok) or tok.text in ("-", "+")


def split_clause(sql: str) -> tuple[str, ApproxClause | None]:
    """(statement without the clause, the clause), or (sql, None) when there is none."""
    if not MAY_HAVE_CLAUSE.search(sql):
        return sql, None
    toks = _tokens(sql)
    end = len(toks)
    while end and toks[end - 1].text == ";":
        end -= 1
    toks = toks[:end]
    depth = 0
    starts = []  # (token index, item) at depth 0
    for i, tok in enumerate(toks):
        if tok.text in ("(", "["):
            depth += 1
        elif tok.text in (")", "]"):
            depth -= 1
        elif depth == 0 and tok.text == ";":
            starts = []  # only the last statement of a string can carry the clause
        elif depth == 0:
            item = _item_start(toks, i)
            if item is not None:
                starts.append((i, item))
    if not starts:
        return sql, None
    first = starts[0][0]
    if not any(t.word == "SELECT" for t in toks[:first]):
        return sql, None
    clause = _parse_items(sql, toks, starts)
    clause_text = sql[toks[first].start : toks[-1].end]
    return sql[: toks[first].start].rstrip(), _with_text(clause, clause_text)


def _with_text(clause: ApproxClause, text: str) -> ApproxClause:
    return ApproxClause(**{**clause.__dict__, "text": text})


def _parse_items(sql: str, toks: list[_Tok], starts: list[tuple[int, str]]) -> ApproxClause:
    values: dict = {}
    bounds = [s[0] for s in starts[1:]] + [len(toks)]
    for (i, item), stop in zip(starts, bounds, strict=True):
        body = toks[i:stop]
        key = {"supg_recall": "recall", "supg_precision": "precision"}.get(item, item)
        if key in values:
            raise PlanError(SYNTAX_ERROR, f"approximate clause names {_label(key)} twice")
        if item == "proxy":
            skip = 1 if body[0].word == "USING_PROXY" else 2
            if len(body) <= skip:
                raise PlanError(SYNTAX_ERROR, "USING PROXY needs an expression")
            values[key] = sql[body[skip].start : body[-1].end]
        elif item == "budget":
            skip = 2 if body[0].word == "ORACLE" else 1
            values[key] = _budget(body[skip:])
        else:
            skip = {"error": 2, "recall": 2, "precision": 2, "confidence": 1}.get(item, 0)
            if body[0].word.endswith("_TARGET"):
                skip = 1
            if item.startswith("supg_"):
                skip = 2
            if body[0].word == "WITH" and item == "confidence":  # WITH SUCCESS PROBABILITY
                if len(body) < 3 or body[2].word != "PROBABILITY":
                    raise PlanError(SYNTAX_ERROR, "expected WITH SUCCESS PROBABILITY <p>%")
                skip = 3
            values[key] = _percent(body[skip:], _label(key))
    for name in ("error", "recall", "precision"):
        if name in values and not 0.0 < values[name] < 1.0:
            raise PlanError(
                INVALID_PARAMETER,
                f"{_label(name)} must be between 0% and 100% (exclusive), got {100 * values[name]:g}%",
            )
    confidence = values.get("confidence", DEFAULT_CONFIDENCE)
    if not 0.5 < confidence < 1.0:
        raise PlanError(
            INVALID_PARAMETER,
            f"CONFIDENCE must be above 50% and below 100%, got {100 * confidence:g}%",
        )
    return ApproxClause(
        error_target=values.get("error"),
        recall_target=values.get("recall"),
        precision_target=values.get("precision"),
        confidence=confidence,
        budget=values.get("budget"),
        proxy=values.get("proxy"),
        given=frozenset(values),
    )


def _label(key: str) -> str:
    return {
        "error": "ERROR TARGET",
        "recall": "RECALL TARGET",
        "precision": "PRECISION TARGET",
        "confidence": "CONFIDENCE",
        "budget": "BUDGET",
        "proxy": "USING PROXY",
    }[key]


def _number(toks: list[_Tok], what: str) -> tuple[float, list[_Tok]]:
    sign = 1.0
    if toks and toks[0].text in ("-", "+"):
        sign = -1.0 if toks[0].text == "-" else 1.0
        toks = toks[1:]
    if not toks or not _is_number(toks[0]):
        raise PlanError(SYNTAX_ERROR, f"{what} needs a number")
    return sign * float(toks[0].text), toks[1:]


def _percent(toks: list[_Tok], what: str) -> float:
    value, rest = _number(toks, what)
    if [t.text for t in rest] != ["%"]:
        raise PlanError(SYNTAX_ERROR, f"{what} needs a percentage such as 90%")
    return value / 100.0


def _budget(toks: list[_Tok]) -> int:
    value, rest = _number(toks, "BUDGET")
    if rest:
        raise PlanError(SYNTAX_ERROR, "BUDGET needs a whole number of oracle calls")
    if value != int(value):
        raise PlanError(INVALID_PARAMETER, f"BUDGET must be a whole number of oracle calls, got {value:g}")
    if value <= 0:
        raise PlanError(INVALID_PARAMETER, f"BUDGET must be at least 1 oracle call, got {int(value)}")
    return int(value)
