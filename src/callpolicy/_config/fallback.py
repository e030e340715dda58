"""The `fallback` table of a policy (`[endpoints.x.fallback]` or `fallback = { ... }`): its
keys and their parsers, and building the model's `Fallback` with the checks that span keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from callpolicy._config.context import Context, Located, Parser, atom, read_section
from callpolicy._config.values import (
    UnitError,
    parse_positive_duration,
    resolve_predicate,
)
from callpolicy._errors import Problem
from callpolicy._model import FALLBACK_ON, MAX_ENTRIES, Fallback
from callpolicy._text import shown_value


def _on(value: Any, ctx: Context, key: str) -> frozenset[str]:
    options = ", ".join(map(repr, FALLBACK_ON))
    if not isinstance(value, list) or not value:
        raise UnitError(f"must be a non-empty list of {options} (got {shown_value(value)})")
    kinds: list[str] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str) or entry not in FALLBACK_ON:
            ctx.report(f"{key}[{index}]", f"must be one of {options} (got {shown_value(entry)})")
        elif entry in kinds:
            ctx.report(f"{key}[{index}]", f"{entry!r} is listed twice")
        else:
            kinds.append(entry)
    if len(kinds) != len(value):
        return None  # type: ignore[return-value]  # reported: no value
    return frozenset(kinds)


def _max_entries(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UnitError(f"must be an integer >= 1 (got {shown_value(value)})")
    if value > MAX_ENTRIES:
        raise UnitError(f"must be at most {MAX_ENTRIES:,} (got {shown_value(value)})")
    return value


def _function(value: object) -> tuple[str, Any]:
    """A callable named by dotted path, and the path (as written: `explain` and the log
    name it so, not by the class or `functools.partial` it turns out to be)."""
    return str(value), resolve_predicate(value)


FALLBACK_KEYS: dict[str, Parser] = {
    "call": atom(_function),
    "last_good": atom(parse_positive_duration),
    "max_entries": atom(_max_entries),
    "key": atom(_function),
    "on": _on,
}
_NEEDS_LAST_GOOD = ("max_entries", "key")


# `fallback = false`: the merged table holds only this key, which no table can write (an
# inherited fallback dropped); a later layer's table starts afresh on top of it.
OFF = "=false"


def read_fallback(value: Any, ctx: Context) -> dict[str, Located] | None:
    """A policy's `fallback`: its table's keys, or `false` (an inherited fallback dropped);
    None when reported."""
    if value is False:
        return {OFF: ctx.located("fallback", False)}
    if value == {}:
        ctx.report("fallback", NEEDS_ONE)
    elif not isinstance(value, dict):
        ctx.report("fallback", f"must be a table or false (got {shown_value(value)})")
    else:
        return read_section(value, ctx.child("fallback"), FALLBACK_KEYS)
    return None


def merge_fallback(below: Mapping[str, Located], over: Mapping[str, Located]) -> dict[str, Any]:
    """A layer's `fallback` on the inherited one: key by key, `false` dropping all of it."""
    if OFF in over:
        return dict(over)
    return {**{k: v for k, v in below.items() if k != OFF}, **over}


NEEDS_ONE = (
    'needs call = "package.module.function" or last_good = "10m" (or both): '
    "what to serve when the call gives up"
)


def build_fallback(
    keys: Mapping[str, Located], problems: list[Problem], order: tuple[str, ...]
) -> Fallback | None:
    """The merged `fallback` table as a `Fallback`; None (reported) when it cannot be one.
    `order`: the layers merged (a problem already reported in one of their `fallback`
    tables is not reported again in other words)."""
    if OFF in keys:
        return None  # `fallback = false`: none, whatever was inherited
    given = {key: leaf.value for key, leaf in keys.items() if isinstance(leaf, Located)}
    tables = tuple(f"{layer}.fallback" for layer in order)
    broken = any(p.key.startswith(tables) for p in problems)
    if "last_good" not in given:
        for key in _NEEDS_LAST_GOOD:
            leaf = keys.get(key)
            if leaf is not None:
                problems.append(
                    Problem(leaf.path, leaf.line, leaf.key, 'is used only with last_good = "..."')
                )
                broken = True
    if "call" not in given and "last_good" not in given:
        where = next(iter(keys.values()), None)
        if where is not None and not broken:
            key = where.key.rpartition(".")[0]
            problems.append(Problem(where.path, where.line, key, NEEDS_ONE))
        return None
    if broken:
        return None
    for key in ("call", "key"):
        if key in given:
            given[f"{key}_name"], given[key] = given[key]
    return Fallback(**given)
