"""The trailing approximate clause of a SELECT (not in Postgres's grammar, so found by scanning).

Grammar (case-insensitive, at paren depth 0, after the SELECT, before an optional ``;``), items in
any order, each at most once::

    [ERROR TARGET e%] [RECALL TARGET r%] [PRECISION TARGET p%] [CONFIDENCE c%] [BUDGET n]
    [USING PROXY <expression>]

plus the AIDB spellings (``ERROR_TARGET``, ``RECALL_TARGET``, ``PRECISION_TARGET``,
``USING_PROXY``) and the SUPG spelling (``WITH RECALL 90% WITH SUCCESS PROBABILITY 95%
ORACLE LIMIT 1000 USING PROXY f(x)``). pglast's scanner tokenizes invalid SQL too and keeps
comments and string literals whole, so keywords inside them are never mistaken for the clause.

Bound parameters (extended protocol) may stand for any value but the proxy:
``RECALL TARGET $2 CONFIDENCE $3 BUDGET $1``. A target or confidence written ``$n`` is bound as a
*fraction* (0.9 means 90%), the form of ``SET sieve.recall_target = 0.9``; written ``$n%`` it is a
percentage (90 means 90%), as in the literal form. A bare 90 for ``$n`` is refused, never read as
90%: the number alone cannot say which was meant. A text value may also carry its own ``%``
(``'90%'``). Postgres is told the types (:func:`clause_param_types`): float8 for targets and
confidence, int8 for BUDGET, unless the client declared others. Bound values are checked by
:func:`bind_clause` with the errors the literals get (22023), naming the item as written.

A clause word that is misspelt (``RECAL TARGET 90%``, ``BUGDET 100``, ``USING PROXI p(x)``) is a
syntax error suggesting the right word, and a clause inside a subquery or WITH query is refused
(0A000): both only where Postgres's grammar could not read the statement anyway, so valid SQL
(a column named ``target``, an alias ``error``) is never taken for a clause.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pglast import parse_sql
from pglast.parser import scan

from planner.outcome import PlanError
from planner.sqlstate import FEATURE_NOT_SUPPORTED, INVALID_PARAMETER, PROTOCOL_VIOLATION, SYNTAX_ERROR

DEFAULT_CONFIDENCE = 0.95
INT8_OID = 20
FLOAT8_OID = 701

# Cheap test before scanning: any word the clause can start with, a number followed by % (no
# valid SQL ends in one: Postgres 14 dropped postfix operators), or USING then a p-word (a
# misspelt PROXY). Ordinary statements match none of these and are never scanned.
MAY_HAVE_CLAUSE = re.compile(
    r"target\b|\boracle\s+limit\b|\busing[\s_]+p|\bwith\s+(?:recall|precision)\b"
    r"|\bbudget\s+[+-]?[\d$]|(?:\d|\$\d+)\s*%\s*(?:[a-z_;]|--|/\*|$)",
    re.IGNORECASE,
)
# Substrings one of which every match of MAY_HAVE_CLAUSE contains: looked for first, in the
# lower-cased text, a few times faster than the pattern (which tries each alternative at each
# character), so a statement with none of them costs about a microsecond.
_CLAUSE_HINTS = ("target", "oracle", "using", "with", "budget", "%")
_COMMENTS = {"C_COMMENT", "SQL_COMMENT"}
_NUMBERS = {"ICONST", "FCONST"}
_CLOSE = 0.75  # difflib ratio above which a word is taken for a misspelt clause word
_LABELS = {
    "error": "ERROR TARGET",
    "recall": "RECALL TARGET",
    "precision": "PRECISION TARGET",
    "confidence": "CONFIDENCE",
    "budget": "BUDGET",
    "proxy": "USING PROXY",
}


@dataclass(frozen=True)
class ClauseParam:
    """A clause value given as a bound parameter ``$number``."""

    item: str  # "error", "recall", "precision", "confidence" or "budget"
    number: int
    percent: bool  # written ``$n%``: the bound value is a percentage, not a fraction
    label: str  # the item as written, e.g. "RECALL TARGET $2"


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
    # items whose value is a bound parameter, still to be read by bind_clause (their fields
    # hold nothing until then)
    params: tuple[ClauseParam, ...] = ()

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
    is_word: bool  # an identifier or keyword (not a number, operator or parameter)


def _tokens(sql: str) -> list[_Tok]:
    out = []
    try:
        tokens = scan(sql)  # character offsets, end inclusive
    except Exception as exc:  # pglast raises its own errors for text it cannot even tokenize
        raise PlanError(SYNTAX_ERROR, f"syntax error: {exc}") from None
    for t in tokens:
        if t.name not in _COMMENTS:
            text = sql[t.start : t.end + 1]
            is_word = t.name == "IDENT" or t.kind != "NO_KEYWORD"
            out.append(_Tok(text.upper(), text, t.start, t.end + 1, t.name, is_word))
    return out


# --- finding items ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Start:
    """Where an item (or what looks like one) begins."""

    index: int  # token index
    item: str | None  # the item key; None for a misspelt word
    head: int  # tokens of the item's keywords
    strong: bool  # only a clause can hold it; a weak one might be valid SQL (a column named budget)
    suggestion: str = ""  # for a misspelt word: the right spelling


def _value_at(toks: list[_Tok], i: int) -> bool:
    return i < len(toks) and (toks[i].name in _NUMBERS or toks[i].name == "PARAM")


def _signed_value_at(toks: list[_Tok], i: int) -> bool:
    return i < len(toks) and toks[i].text in ("-", "+") and _value_at(toks, i + 1)


def _item_at(toks: list[_Tok], i: int) -> _Start | None:
    """The item whose keywords begin at token i, if one does."""
    w = toks[i].word
    nxt = toks[i + 1].word if i + 1 < len(toks) else ""
    if w in ("ERROR", "RECALL", "PRECISION") and nxt == "TARGET":
        return _Start(i, w.lower(), 2, _value_at(toks, i + 2))
    if w in ("ERROR_TARGET", "RECALL_TARGET", "PRECISION_TARGET"):
        return _Start(i, w[: -len("_TARGET")].lower(), 1, _value_at(toks, i + 1))
    if w == "WITH" and nxt in ("RECALL", "PRECISION") and _value_at(toks, i + 2):
        return _Start(i, nxt.lower(), 2, True)
    if w == "WITH" and nxt == "SUCCESS":  # also a CTE named success: strong only when whole
        whole = i + 2 < len(toks) and toks[i + 2].word == "PROBABILITY"
        return _Start(i, "confidence", 3 if whole else 2, whole)
    if w in ("CONFIDENCE", "BUDGET") and (_value_at(toks, i + 1) or _signed_value_at(toks, i + 1)):
        return _Start(i, w.lower(), 1, _value_at(toks, i + 1))  # "budget -5" may be arithmetic
    if w == "ORACLE" and nxt == "LIMIT":  # "SELECT oracle LIMIT 5" is valid SQL
        return _Start(i, "budget", 2, False)
    if w == "USING" and nxt == "PROXY":
        return _Start(i, "proxy", 2, True)
    if w == "USING_PROXY":
        return _Start(i, "proxy", 1, False)
    return None


# Clause words by how they are followed: (spelling, suggestion, what must follow)
_PHRASES = (
    (("ERROR", "TARGET"), "value"),
    (("RECALL", "TARGET"), "value"),
    (("PRECISION", "TARGET"), "value"),
    (("ORACLE", "LIMIT"), "value"),
    (("USING", "PROXY"), "any"),
    (("ERROR_TARGET",), "value"),
    (("RECALL_TARGET",), "value"),
    (("PRECISION_TARGET",), "value"),
    (("CONFIDENCE",), "value"),
    (("BUDGET",), "value"),
    (("USING_PROXY",), "any"),
    # a target without its TARGET: "RECALL 90%"
    (("ERROR",), "percent"),
    (("RECALL",), "percent"),
    (("PRECISION",), "percent"),
)


@functools.lru_cache(maxsize=1024)
def _close(written: str, word: str) -> bool:
    return written == word or difflib.SequenceMatcher(None, written, word).ratio() >= _CLOSE


def _followed(toks: list[_Tok], after: int, follows: str) -> bool:
    if follows == "value":
        return _value_at(toks, after)
    if follows == "percent":
        return _value_at(toks, after) and after + 1 < len(toks) and toks[after + 1].text == "%"
    return after < len(toks)


def _misspelt_at(toks: list[_Tok], i: int) -> _Start | None:
    """A clause word misspelt at token i (``RECAL TARGET 90%``), given what follows it."""
    for words, follows in _PHRASES:
        after = i + len(words)
        window = toks[i:after]
        if len(window) < len(words) or not all(t.is_word for t in window):
            continue
        if not _followed(toks, after, follows):  # cheap: most words are followed by no value
            continue
        written = tuple(t.word for t in window)
        if written == words and follows != "percent":
            continue  # spelt right: _item_at has its own rules for it
        if not all(_close(a, b) for a, b in zip(written, words, strict=True)):
            continue
        suggestion = " ".join(words) if follows != "percent" else f"{words[0]} TARGET"
        return _Start(i, None, len(words), False, suggestion)
    return None


@dataclass
class _Scan:
    """Item starts of the last statement: at depth 0, and inside parentheses."""

    top: list[_Start] = field(default_factory=list)
    nested: list[tuple[_Start, int]] = field(default_factory=list)  # (start, its paren's token index)


def _scan(toks: list[_Tok]) -> _Scan:
    found = _Scan()
    parens: list[int] = []  # token indexes of the open parentheses
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.text in ("(", "["):
            parens.append(i)
        elif tok.text in (")", "]"):
            if parens:
                parens.pop()
        elif not parens and tok.text == ";":
            found = _Scan()  # only the last statement of a string can carry the clause
        else:
            start = _item_at(toks, i) or (_misspelt_at(toks, i) if not parens else None)
            if start is not None:
                if parens:
                    if start.strong:
                        found.nested.append((start, parens[-1]))
                else:
                    found.top.append(start)
                i += start.head
                continue
        i += 1
    return found


def _parses(sql: str) -> bool:
    """Postgres's grammar accepts the text (pglast runs Postgres's own parser)."""
    if not sql.strip():
        return False
    try:
        parse_sql(sql)
    except Exception:  # any parser complaint: not valid SQL
        return False
    return True


def _clause_starts(sql: str, toks: list[_Tok], top: list[_Start]) -> list[_Start]:
    """The starts that belong to the clause. A strong one begins it; a weak one or a misspelt
    word before it counts only where the grammar fails: the statement up to the first strong
    start does not parse, the text before the weak one does."""
    first_strong = next((k for k, s in enumerate(top) if s.strong), len(top))
    weak = top[:first_strong]
    if weak:
        end = toks[top[first_strong].index].start if first_strong < len(top) else len(sql)
        if not _parses(sql[:end]):
            for k, start in enumerate(weak):
                if _parses(sql[: toks[start.index].start]):
                    return top[k:]
    return top[first_strong:]


def may_have_clause(sql: str) -> bool:
    """The cheap test before any scan: False means the text carries no clause, not even a
    misspelt one."""
    lowered = sql.lower()
    return any(hint in lowered for hint in _CLAUSE_HINTS) and MAY_HAVE_CLAUSE.search(sql) is not None


def split_clause(sql: str) -> tuple[str, ApproxClause | None]:
    """(statement without the clause, the clause), or (sql, None) when there is none."""
    if not may_have_clause(sql):
        return sql, None
    toks = _tokens(sql)
    end = len(toks)
    while end and toks[end - 1].text == ";":
        end -= 1
    toks = toks[:end]
    found = _scan(toks)
    starts = _clause_starts(sql, toks, found.top)
    body_end = toks[starts[0].index].start if starts else len(sql)
    if found.nested and not _parses(sql[:body_end]):
        _refuse_nested(sql, toks, found.nested[0])
    if not starts:
        return sql, None
    first = starts[0].index
    if not any(t.word == "SELECT" for t in toks[:first]):
        return sql, None
    misspelt = next((s for s in starts if s.item is None), None)
    if misspelt is not None:
        _refuse_misspelt(toks, misspelt)
    clause = _parse_items(sql, toks, starts)
    clause_text = sql[toks[first].start : toks[-1].end]
    return sql[: toks[first].start].rstrip(), dataclasses.replace(clause, text=clause_text)


def _refuse_misspelt(toks: list[_Tok], start: _Start) -> None:
    written = " ".join(t.text for t in toks[start.index : start.index + start.head])
    raise PlanError(
        SYNTAX_ERROR,
        f'approximate clause: unknown word "{written}" (did you mean {start.suggestion}?)',
        hint=f"the clause items are {', '.join(_LABELS.values())}",
    )


def _refuse_nested(sql: str, toks: list[_Tok], nested: tuple[_Start, int]) -> None:
    start, paren = nested
    depth, stop = 0, len(toks)
    for k in range(start.index, len(toks)):  # the item runs to its parenthesis's close
        depth += toks[k].text in ("(", "[")
        depth -= toks[k].text in (")", "]")
        if depth < 0:
            stop = k
            break
    written = sql[toks[start.index].start : toks[stop - 1].end]
    raise PlanError(
        FEATURE_NOT_SUPPORTED,
        f'an approximate clause applies to the outermost SELECT only: "{written}" is inside '
        f"{_enclosing(toks, paren)}",
        hint=f"move it to the end of the whole statement: ... {written}",
    )


def _enclosing(toks: list[_Tok], paren: int) -> str:
    """How to name the parenthesised query at token ``paren``: a WITH query or a subquery."""
    k = paren - 1
    if k >= 0 and toks[k].word == "MATERIALIZED":
        k -= 2 if k >= 1 and toks[k - 1].word == "NOT" else 1
    if k >= 1 and toks[k].word == "AS" and toks[0].word in ("WITH", "EXPLAIN"):
        return f"the WITH query {toks[k - 1].text}"
    return "a subquery"


# --- reading items ---------------------------------------------------------------------------


def _parse_items(sql: str, toks: list[_Tok], starts: list[_Start]) -> ApproxClause:
    values: dict = {}
    written: dict[str, str] = {}
    params: list[ClauseParam] = []
    bounds = [s.index for s in starts[1:]] + [len(toks)]
    for start, stop in zip(starts, bounds, strict=True):
        key = start.item
        head = toks[start.index : start.index + start.head]
        label = " ".join(t.word for t in head)
        body = toks[start.index + start.head : stop]
        as_written = sql[head[0].start : toks[stop - 1].end]
        if key in values:
            raise PlanError(
                SYNTAX_ERROR,
                f'approximate clause gives the {_LABELS[key]} twice: "{written[key]}" and "{as_written}"',
            )
        written[key] = as_written
        if key == "confidence" and label == "WITH SUCCESS":
            raise PlanError(SYNTAX_ERROR, "expected WITH SUCCESS PROBABILITY <p>%")
        if key == "proxy":
            values[key] = _proxy(sql, body, label)
            continue
        value = _value(key, body, label)
        if isinstance(value, ClauseParam):
            params.append(value)
        values[key] = value
    return ApproxClause(
        error_target=_literal(values, "error"),
        recall_target=_literal(values, "recall"),
        precision_target=_literal(values, "precision"),
        confidence=_literal(values, "confidence", DEFAULT_CONFIDENCE),
        budget=_literal(values, "budget"),
        proxy=values.get("proxy"),
        given=frozenset(values),
        params=tuple(params),
    )


def _literal(values: dict, key: str, default=None):
    value = values.get(key, default)
    return default if isinstance(value, ClauseParam) else value


def _proxy(sql: str, body: list[_Tok], label: str) -> str:
    if not body:
        raise PlanError(SYNTAX_ERROR, f"{label} needs an expression")
    if any(t.name == "PARAM" for t in body):
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            f"{label} cannot take a bound parameter: the proxy is an expression SieveDB plans",
            hint="write the proxy expression in the statement; parameters may give the targets and BUDGET",
        )
    return sql[body[0].start : body[-1].end]


def _found(body: list[_Tok]) -> str:
    return f'found "{" ".join(t.text for t in body)}"' if body else "found nothing"


def _value(key: str, body: list[_Tok], label: str) -> float | int | ClauseParam:
    """The item's literal value, checked, or the parameter that will give it."""
    budget = key == "budget"
    example = "a whole number of oracle calls such as 1000" if budget else "a percentage such as 90%"
    needs = f"{label} needs {example} or a parameter such as $1, {_found(body)}"
    if body and body[0].name == "PARAM":
        percent = [t.text for t in body[1:]] == ["%"]
        if len(body) > 1 and not (percent and not budget):
            raise PlanError(SYNTAX_ERROR, needs)
        return ClauseParam(
            key, int(body[0].text[1:]), percent, f"{label} {body[0].text}{'%' if percent else ''}"
        )
    sign = -1.0 if body and body[0].text == "-" else 1.0
    digits = body[1:] if body and body[0].text in ("-", "+") else body
    if not digits or digits[0].name not in _NUMBERS:
        raise PlanError(SYNTAX_ERROR, needs)
    value = sign * float(digits[0].text)
    rest = [t.text for t in digits[1:]]
    if budget:
        if rest:
            raise PlanError(SYNTAX_ERROR, needs)
        return _check_budget(label, value)
    if rest != ["%"]:
        raise PlanError(SYNTAX_ERROR, needs)
    return _check_fraction(key, label, value / 100.0, f"{value:g}%")


def _check_fraction(key: str, label: str, value: float, shown: str, hint: str | None = None) -> float:
    if key == "confidence":
        if not 0.5 < value < 1.0:
            raise PlanError(
                INVALID_PARAMETER, f"{label} must be above 50% and below 100%, got {shown}", hint=hint
            )
    elif not 0.0 < value < 1.0:
        raise PlanError(
            INVALID_PARAMETER, f"{label} must be between 0% and 100% (exclusive), got {shown}", hint=hint
        )
    return value


def _check_budget(label: str, value: float) -> int:
    if not math.isfinite(value) or value != int(value):
        raise PlanError(INVALID_PARAMETER, f"{label} must be a whole number of oracle calls, got {value:g}")
    if value <= 0:
        raise PlanError(INVALID_PARAMETER, f"{label} must be at least 1 oracle call, got {int(value)}")
    return int(value)


# --- bound parameters ------------------------------------------------------------------------


class BoundValue(Protocol):
    text: str | None  # None is SQL NULL
    type_name: str | None


def clause_param_types(clause: ApproxClause, declared: Sequence[int]) -> list[int]:
    """The parameter type OIDs to prepare the statement's body with: the client's, and for a
    clause parameter it left open (0) float8 (targets, confidence) or int8 (BUDGET). Postgres
    then accepts parameters the body does not mention and describes them to the client."""
    oids = list(declared) + [0] * max((p.number - len(declared) for p in clause.params), default=0)
    chosen: dict[int, int] = {}
    for p in clause.params:
        oid = INT8_OID if p.item == "budget" else FLOAT8_OID
        # one parameter giving a target and BUDGET: float8 holds both (BUDGET checks wholeness)
        chosen[p.number] = FLOAT8_OID if chosen.get(p.number, oid) != oid else oid
    for number, oid in chosen.items():
        if oids[number - 1] == 0:
            oids[number - 1] = oid
    return oids


def bind_clause(clause: ApproxClause, values: Sequence[BoundValue | None] | None) -> ApproxClause:
    """The clause with its parameters' bound values in place, checked as literals are
    (``values``: the execution's bound values, in ``$n`` order; None where undecodable)."""
    if not clause.params:
        return clause
    changes: dict = {}
    for p in clause.params:
        if values is None or not 0 < p.number <= len(values):
            raise PlanError(PROTOCOL_VIOLATION, f"{p.label}: no value is bound to parameter ${p.number}")
        changes[_FIELDS[p.item]] = _bound_value(p, values[p.number - 1])
    return dataclasses.replace(clause, params=(), **changes)


_FIELDS = {
    "error": "error_target",
    "recall": "recall_target",
    "precision": "precision_target",
    "confidence": "confidence",
    "budget": "budget",
}


def _bound_value(p: ClauseParam, value: BoundValue | None) -> float | int:
    if value is None:
        raise PlanError(
            INVALID_PARAMETER,
            f"{p.label}: SieveDB cannot read this binary value",
            hint="bind it as float8, int8 or text",
        )
    if value.text is None:
        raise PlanError(INVALID_PARAMETER, f"{p.label} cannot be NULL")
    text = value.text.strip()
    percent = p.percent or text.endswith("%")
    try:
        number = float(text[:-1] if text.endswith("%") else text)
    except ValueError:
        raise PlanError(INVALID_PARAMETER, f"{p.label} must be a number, got {value.text!r}") from None
    if p.item == "budget":
        if text.endswith("%"):
            raise PlanError(INVALID_PARAMETER, f"{p.label} must be a number, got {value.text!r}")
        return _check_budget(p.label, number)
    if percent:
        return _check_fraction(p.item, p.label, number / 100.0, f"{number:g}%")
    hint = None
    if 1.0 <= number <= 100.0:  # 90 meant as 90%? say how to write either
        hint = f"${p.number} is a fraction here (0.9 for 90%); write {p.label}% to bind a percentage"
    return _check_fraction(p.item, p.label, number, f"{number:g}", hint)
