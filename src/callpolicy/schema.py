"""The keys a policy file may hold and how each value is read, with every problem located.

A table is read into `Located` leaves (value plus file, line and key path), so a value keeps
its origin through `[defaults]` and `extends` merges and later errors still point at it.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from callpolicy.conditions import (
    parse_statuses,
    resolve_exception,
    resolve_predicate,
)
from callpolicy.errors import Problem
from callpolicy.hints import FORMATS as HINT_FORMATS
from callpolicy.hints import hint_format
from callpolicy.keymap import KeyPath, line_of
from callpolicy.model import HINT_ACTIONS, WAIT_STRATEGIES, GiveUp, ResultCondition
from callpolicy.units import UnitError, parse_duration, shown_value

Table = dict[str, Any]
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}", re.ASCII)


@attrs.frozen
class Located:
    """A parsed value and where it was written."""

    value: Any
    path: str
    line: int | None
    key: str


@attrs.frozen
class QuotaRef:
    """A `quotas` entry: a quota's name, or an inline quota table/rate (`spec`)."""

    name: str | None
    spec: Table | None
    service: str  # the file the entry was written in: names resolve there


@attrs.define
class Context:
    """Where a table is: file, key lines, its TOML path and the key path users see."""

    path: str
    lines: dict[KeyPath, int]
    toml_path: KeyPath
    display: str
    service: str
    problems: list[Problem]

    def child(self, key: str) -> Context:
        # "steps[0]" is a line of its own in [[...steps]], else found through "steps".
        return attrs.evolve(self, toml_path=(*self.toml_path, key), display=f"{self.display}.{key}")

    def line(self, key: str | None = None) -> int | None:
        path = self.toml_path if key is None else (*self.toml_path, key)
        return line_of(self.lines, path)

    def report(self, key: str | None, message: str) -> None:
        shown = self.display if key is None else f"{self.display}.{key}"
        self.problems.append(Problem(self.path, self.line(key), shown, message))

    def located(self, key: str, value: Any) -> Located:
        return Located(value, self.path, self.line(key), f"{self.display}.{key}")


Parser = Callable[[Any, Context, str], Any]


def duration(value: Any, ctx: Context, key: str) -> float:
    return parse_duration(value)


def _positive_duration(value: Any, ctx: Context, key: str) -> float:
    return parse_duration(value, allow_zero=False)


def _text(value: Any, ctx: Context, key: str) -> str:
    if not isinstance(value, str):
        raise UnitError(f"must be a string (got {shown_value(value)})")
    return value


def choice(options: tuple[str, ...]) -> Parser:
    def parse(value: Any, ctx: Context, key: str) -> str:
        if value not in options or not isinstance(value, str):
            raise UnitError(
                f"must be one of {', '.join(map(repr, options))} (got {shown_value(value)})"
            )
        return value

    return parse


def _attempts(value: Any, ctx: Context, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UnitError(f"must be an integer (got {shown_value(value)})")
    if value < 1:
        raise UnitError(f"must be >= 1 (got {shown_value(value)})")
    return value


def _multiplier(value: Any, ctx: Context, key: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UnitError(f"must be a number (got {shown_value(value)})")
    if value < 1:
        raise UnitError(f"must be >= 1 (got {shown_value(value)})")
    return float(value)


def _list_of(item: Parser) -> Parser:
    def parse(value: Any, ctx: Context, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise UnitError(f"must be a list (got {shown_value(value)})")
        parsed = []
        for index, entry in enumerate(value):
            try:
                parsed.append(item(entry, ctx, key))
            except (UnitError, LookupError) as exc:
                ctx.report(f"{key}[{index}]", _message(exc))
        return parsed

    return parse


def _exception(value: Any, ctx: Context, key: str) -> type[Exception] | None:
    return resolve_exception(_text(value, ctx, key))


def _predicate(value: Any, ctx: Context, key: str) -> Any:
    return resolve_predicate(_text(value, ctx, key))


def _status(value: Any, ctx: Context, key: str) -> frozenset[int]:
    return parse_statuses(value)


def _condition(value: Any, ctx: Context, key: str) -> ResultCondition | None:
    if not isinstance(value, dict):
        raise UnitError(
            f'must be a table like {{ field = "status", in = ["DONE"] }} (got {shown_value(value)})'
        )
    sub = ctx.child(key)
    known = ("field", "in", "not_in", "equals")
    report_unknown(value, known, sub)
    field = value.get("field")
    if not isinstance(field, str) or not field:
        sub.report("field", f"must be a field or attribute name (got {shown_value(field)})")
    ops = [op for op in known[1:] if op in value]
    if len(ops) != 1:
        sub.report(None, f"must have exactly one of 'in', 'not_in', 'equals' (got {ops or 'none'})")
        return None
    op = ops[0]
    operand = value[op]
    if op != "equals" and not isinstance(operand, list):
        sub.report(op, f"must be a list of values (got {shown_value(operand)})")
        return None
    if not isinstance(field, str) or not field:
        return None
    values = (operand,) if op == "equals" else tuple(operand)
    return ResultCondition(field, op, values)  # type: ignore[arg-type]


def _quota_entry(value: Any, ctx: Context, key: str) -> QuotaRef:
    if isinstance(value, dict):
        return QuotaRef(None, value, ctx.service)
    if isinstance(value, str) and "/" in value:
        return QuotaRef(None, {"limit": value}, ctx.service)
    if isinstance(value, str) and value:
        return QuotaRef(value, None, ctx.service)
    raise UnitError(
        f'must be a quota name, a rate like "20/1s" or a quota table (got {shown_value(value)})'
    )


def _steps(value: Any, ctx: Context, key: str) -> list[dict[str, Located]]:
    if not isinstance(value, list) or not value:
        raise UnitError(f"must be a non-empty list of wait tables (got {shown_value(value)})")
    steps = []
    for index, entry in enumerate(value):
        sub = ctx.child(f"{key}[{index}]")
        if not isinstance(entry, dict):
            sub.report(
                None,
                'must be a wait table like { strategy = "fixed", seconds = "1s" }'
                f" (got {shown_value(entry)})",
            )
            continue
        if entry.get("strategy") == "chain" or "steps" in entry:
            sub.report(None, "a chain step cannot be a chain itself")
            continue
        steps.append(read_section(entry, sub, WAIT_KEYS))
    return steps


def _flag(value: Any, ctx: Context, key: str) -> bool:
    if not isinstance(value, bool):
        raise UnitError(f"must be true or false (got {shown_value(value)})")
    return value


def _give_up(value: Any, ctx: Context, key: str) -> list[GiveUp]:
    if not isinstance(value, list):
        raise UnitError(f"must be a list of tables (got {shown_value(value)})")
    rules = []
    for index, entry in enumerate(value):
        sub = ctx.child(f"{key}[{index}]")
        if not isinstance(entry, dict) or not entry:
            sub.report(
                None,
                'must be a table like { status = 429, json = { type = "..." } }'
                f" (got {shown_value(entry)})",
            )
            continue
        report_unknown(entry, ("status", "json"), sub)
        status = entry.get("status", [])
        statuses: frozenset[int] = frozenset()
        try:
            for item in status if isinstance(status, list) else [status]:
                statuses |= parse_statuses(item)
        except UnitError as exc:
            sub.report("status", str(exc))
        body = entry.get("json", {})
        if not isinstance(body, dict):
            sub.report("json", f"must be a table of field = value (got {shown_value(body)})")
            body = {}
        rules.append(GiveUp(statuses, tuple(_flatten(body))))
    return rules


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """{ error = { type = "x" } } and { "error.type" = "x" } both mean error.type == "x"."""
    pairs = []
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            pairs += _flatten(value, f"{path}.")
        else:
            pairs.append((path, value))
    return pairs


RETRY_KEYS: dict[str, Parser] = {
    "on_exceptions": _list_of(_exception),
    "on_status": _list_of(_status),
    "until": _condition,
    "while": _condition,
    "result_predicate": _predicate,
    "exception_predicate": _predicate,
    "idempotent": _flag,
    "refused_any_method": _flag,
    "give_up": _give_up,
}


def _hint_sources(value: Any, ctx: Context, key: str) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise UnitError(f'must be a list like ["Retry-After"] (got {shown_value(value)})')
    sources = []
    for index, entry in enumerate(value):
        if isinstance(entry, str) and _HEADER.fullmatch(entry):
            sources.append((entry, hint_format(entry)))
        elif isinstance(entry, dict) and set(entry) <= {"header", "format"}:
            header, fmt = entry.get("header"), entry.get("format")
            if not isinstance(header, str) or not _HEADER.fullmatch(header):
                ctx.report(
                    f"{key}[{index}].header", f"must be a header name (got {shown_value(header)})"
                )
            elif fmt is not None and fmt not in HINT_FORMATS:
                options = ", ".join(map(repr, HINT_FORMATS))
                ctx.report(
                    f"{key}[{index}].format", f"must be one of {options} (got {shown_value(fmt)})"
                )
            else:
                sources.append((header, fmt or hint_format(header)))
        else:
            ctx.report(
                f"{key}[{index}]",
                'must be a header name or { header = "X-RateLimit-Reset", format = '
                f'"epoch-seconds" }} (got {shown_value(entry)})',
            )
    return sources


WAIT_KEYS: dict[str, Parser] = {
    "strategy": choice(WAIT_STRATEGIES),
    "seconds": duration,
    "initial": duration,
    "multiplier": _multiplier,
    "max": duration,
    "min": duration,
    "jitter": duration,
    "steps": _steps,
    "server_hints": _hint_sources,
    "hint_cap": duration,
    "hint_above_cap": choice(HINT_ACTIONS),
}


def _header(value: Any, ctx: Context, key: str) -> str:
    if not isinstance(value, str) or not _HEADER.fullmatch(value):
        raise UnitError(f"must be a header name (got {shown_value(value)})")
    return value


PAUSE_KEYS: dict[str, Parser] = {
    "remaining": _header,
    "reset": _header,
    "format": choice(HINT_FORMATS),
    "max": duration,
}
STOP_KEYS: dict[str, Parser] = {"attempts": _attempts, "deadline": _positive_duration}
SECTIONS = {"retry": RETRY_KEYS, "wait": WAIT_KEYS, "stop": STOP_KEYS, "pause": PAUSE_KEYS}
POLICY_KEYS: dict[str, Parser] = {
    "extends": _text,
    "description": _text,
    "quotas": _list_of(_quota_entry),
}


def read_section(
    table: Mapping[str, Any], ctx: Context, keys: Mapping[str, Parser]
) -> dict[str, Located]:
    """Parse each known key of `table`; report unknown keys and bad values."""
    report_unknown(table, tuple(keys), ctx)
    section: dict[str, Located] = {}
    for key, value in table.items():
        parser = keys.get(key)
        if parser is None:
            continue
        try:
            parsed = parser(value, ctx, key)
        except (UnitError, LookupError) as exc:
            ctx.report(key, _message(exc))
            continue
        if parsed is not None:
            section[key] = ctx.located(key, parsed)
    return section


def read_policy(table: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """A `[defaults]` or `[endpoints.x]` table: top keys as Located, sections as dicts."""
    report_unknown(table, (*POLICY_KEYS, *SECTIONS), ctx)
    policy: dict[str, Any] = read_section(
        {k: v for k, v in table.items() if k in POLICY_KEYS}, ctx, POLICY_KEYS
    )
    for name, keys in SECTIONS.items():
        if name not in table:
            continue
        value = table[name]
        if isinstance(value, dict):
            policy[name] = read_section(value, ctx.child(name), keys)
        else:
            ctx.report(name, f"must be a table (got {shown_value(value)})")
    return policy


def report_unknown(table: Mapping[str, Any], known: tuple[str, ...], ctx: Context) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            ctx.report(key, f"unknown key{hint}")


def _message(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else str(exc)
