"""The keys a policy's tables may hold (`[defaults]`, `[endpoints.x]`: retry, wait, stop,
pause, quotas, breaker, budget) and the parser of each; quota tables' keys are in `quotas.py`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from callpolicy._config.context import (
    Context,
    Located,
    Parser,
    QuotaRef,
    atom,
    choice,
    list_of,
    read_section,
    report_unknown,
)
from callpolicy._config.fallback import FALLBACK_KEYS, read_fallback
from callpolicy._config.resilience import parse_ref
from callpolicy._config.rules import parse_rule_name, read_rules, table_of
from callpolicy._config.values import (
    UnitError,
    is_header,
    parse_attempts,
    parse_duration,
    parse_flag,
    parse_header,
    parse_multiplier,
    parse_positive_duration,
    parse_statuses,
    parse_text,
    resolve_exception,
    resolve_predicate,
)
from callpolicy._model import (
    HEADER_FORMATS,
    HINT_ACTIONS,
    HINT_FIELD,
    HINT_FORMATS,
    WAIT_STRATEGIES,
    GiveUp,
    ResultCondition,
    hint_format,
)
from callpolicy._text import shown_value

_FIELD_PATH = re.compile(r"[^\s.]{1,64}(?:\.[^\s.]{1,64}){0,7}")


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


MATCH_KEYS: dict[str, Parser] = {
    "on_exceptions": list_of(atom(resolve_exception)),
    "on_status": list_of(atom(parse_statuses)),
    "until": _condition,
    "while": _condition,
    "result_predicate": atom(resolve_predicate),
    "exception_predicate": atom(resolve_predicate),
}


def _hint_sources(value: Any, ctx: Context, key: str) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise UnitError(f'must be a list like ["Retry-After"] (got {shown_value(value)})')
    sources = []
    for index, entry in enumerate(value):
        if isinstance(entry, str) and is_header(entry):
            sources.append((entry, hint_format(entry)))
        elif isinstance(entry, dict) and "field" in entry and set(entry) <= {"field", "format"}:
            source = _field_source(entry, ctx, f"{key}[{index}]")
            if source is not None:
                sources.append(source)
        elif isinstance(entry, dict) and set(entry) <= {"header", "format"}:
            header, fmt = entry.get("header"), entry.get("format")
            formats = HEADER_FORMATS
            if not isinstance(header, str) or not is_header(header):
                ctx.report(
                    f"{key}[{index}].header", f"must be a header name (got {shown_value(header)})"
                )
            elif fmt is not None and fmt not in formats:
                options = ", ".join(map(repr, formats))
                ctx.report(
                    f"{key}[{index}].format",
                    f"must be one of {options} for a header (got {shown_value(fmt)})",
                )
            else:
                sources.append((header, fmt or hint_format(header)))
        else:
            ctx.report(
                f"{key}[{index}]",
                'must be a header name, { header = "X-RateLimit-Reset", format = '
                '"epoch-seconds" } or { field = "eta_seconds" } '
                f"(got {shown_value(entry)})",
            )
    return sources


def _field_source(entry: dict[str, Any], ctx: Context, key: str) -> tuple[str, str] | None:
    """A hint read from a field of the returned value (a polled job's estimate)."""
    field, fmt = entry.get("field"), entry.get("format", "delta-seconds")
    if not isinstance(field, str) or not _FIELD_PATH.fullmatch(field):
        ctx.report(
            f"{key}.field",
            'must be a field name, dotted for nesting, like "eta_seconds" or '
            f'"job.progress" (got {shown_value(field)})',
        )
        return None
    if fmt not in HINT_FORMATS or fmt == "retry-after":
        options = ", ".join(repr(f) for f in HINT_FORMATS if f != "retry-after")
        ctx.report(f"{key}.format", f"must be one of {options} (got {shown_value(fmt)})")
        return None
    return (f"{HINT_FIELD}{field}", fmt)


duration = atom(parse_duration)
WAIT_KEYS: dict[str, Parser] = {
    "strategy": choice(WAIT_STRATEGIES),
    "seconds": duration,
    "initial": duration,
    "multiplier": atom(parse_multiplier),
    "max": duration,
    "min": duration,
    "jitter": duration,
    "steps": _steps,
    "server_hints": _hint_sources,
    "hint_cap": duration,
    "hint_above_cap": choice(HINT_ACTIONS),
}
PAUSE_KEYS: dict[str, Parser] = {
    "remaining": atom(parse_header),
    "reset": atom(parse_header),
    "format": choice(HEADER_FORMATS),
    "max": duration,
}
STOP_KEYS: dict[str, Parser] = {
    "attempts": atom(parse_attempts),
    "deadline": atom(parse_positive_duration),
    "attempt_timeout": atom(parse_positive_duration),
}


def _rules(value: Any, ctx: Context, key: str) -> list[dict[str, Located]]:
    return read_rules(value, ctx, key, RULE_KEYS, tuple(MATCH_KEYS))


def _rule_wait(value: Any, ctx: Context, key: str) -> dict[str, Located]:
    """A rule's own wait: a whole wait table, read as the policy's `wait` is."""
    return read_section(
        table_of(value, '{ strategy = "fixed", seconds = "1s" }'), ctx.child(key), WAIT_KEYS
    )


RULE_KEYS: dict[str, Parser] = {
    "name": atom(parse_rule_name),
    **MATCH_KEYS,
    "wait": _rule_wait,
    "attempts": atom(parse_attempts),
}
RETRY_KEYS: dict[str, Parser] = {
    **MATCH_KEYS,
    "idempotent": atom(parse_flag),
    "refused_any_method": atom(parse_flag),
    "should_retry_header": atom(parse_header),
    "give_up": _give_up,
    "rules": _rules,
}
SECTIONS = {
    "retry": RETRY_KEYS,
    "wait": WAIT_KEYS,
    "stop": STOP_KEYS,
    "pause": PAUSE_KEYS,
    "fallback": FALLBACK_KEYS,
}
POLICY_KEYS: dict[str, Parser] = {
    "extends": atom(parse_text),
    "description": atom(parse_text),
    "quotas": list_of(_quota_entry),
    "breaker": parse_ref,
    "budget": parse_ref,
}


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
        if name == "fallback":  # a table, or false (an inherited fallback dropped)
            if (section := read_fallback(value, ctx)) is not None:
                policy[name] = section
        elif isinstance(value, dict):
            policy[name] = read_section(value, ctx.child(name), keys)
        else:
            ctx.report(name, f"must be a table (got {shown_value(value)})")
    return policy
