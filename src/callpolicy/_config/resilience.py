"""Circuit breakers and retry budgets in policy files: their tables (`[breakers.x]`,
`[budgets.x]`, or an inline table in an endpoint's `breaker` / `budget`), and a policy's
`breaker` and `budget` keys resolved to `Breaker` and `Budget` models.

A named table is shared by every policy naming it ("api" in its own file, "service.api"
from another); an inline table is the policy's own (named after the policy), so an inline
table in `[defaults]` gives each endpoint a breaker of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from callpolicy._config.context import Context, Located, Parser, atom, list_of, read_section
from callpolicy._config.storage import parse_storage
from callpolicy._config.values import (
    UnitError,
    parse_duration,
    parse_positive_duration,
    parse_statuses,
    resolve_exception,
)
from callpolicy._errors import Problem
from callpolicy._model import (
    MAX_BUDGET_TOKENS,
    MAX_PROBES,
    MAX_WINDOW_CALLS,
    TOKEN_SCALE,
    Breaker,
    Budget,
)
from callpolicy._text import shown_value, suggestion

KINDS = {"breaker": "breakers", "budget": "budgets"}  # policy key -> table of named ones


@attrs.frozen
class LayerRef:
    """A policy's `breaker` or `budget`: a name, an inline table (`spec`), or neither
    (`false`: none, dropping an inherited one)."""

    name: str | None
    spec: dict[str, Any] | None
    service: str  # the file it was written in: names resolve there


def parse_ref(value: Any, ctx: Context, key: str) -> LayerRef:
    if isinstance(value, dict):
        return LayerRef(None, value, ctx.service)
    if isinstance(value, str) and value:
        return LayerRef(value, None, ctx.service)
    if value is False:
        return LayerRef(None, None, ctx.service)
    raise UnitError(
        f"must be the name of a [{KINDS[key]}.<name>] table, an inline table or false "
        f"(got {shown_value(value)})"
    )


def _count(least: int, most: int) -> Parser:
    def parse(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
            raise UnitError(
                f"must be an integer from {least} to {most:,} (got {shown_value(value)})"
            )
        return value

    return atom(parse)


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise UnitError(
            f"must be a number above 0 and at most 1, like 0.5 (got {shown_value(value)})"
        )
    return float(value)


def _token_ratio(value: Any) -> float:
    ratio = _ratio(value)
    if abs(ratio * TOKEN_SCALE - round(ratio * TOKEN_SCALE)) > 1e-9:
        raise UnitError(f"may have at most 3 decimals, as in gRPC (got {shown_value(value)})")
    return ratio


def _window(value: Any) -> tuple[str, float]:
    """`window = 100` (calls) or `window = "60s"` (a time window)."""
    if isinstance(value, str):
        return ("window_seconds", parse_duration(value, allow_zero=False))
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WINDOW_CALLS:
        return ("window_calls", value)
    raise UnitError(
        f'must be a number of calls (1 to {MAX_WINDOW_CALLS:,}) or a duration like "60s" '
        f"(got {shown_value(value)})"
    )


BREAKER_KEYS: dict[str, Parser] = {
    "failure_ratio": atom(_ratio),
    "slow_call_ratio": atom(_ratio),
    "slow_call": atom(parse_positive_duration),
    "window": atom(_window),
    "min_calls": _count(1, MAX_WINDOW_CALLS),
    "open_for": atom(parse_positive_duration),
    "probes": _count(1, MAX_PROBES),
    "on_exceptions": list_of(atom(resolve_exception)),
    "on_status": list_of(atom(parse_statuses)),
    "storage": atom(parse_storage),
}
BUDGET_KEYS: dict[str, Parser] = {
    "max_tokens": _count(1, MAX_BUDGET_TOKENS),
    "token_ratio": atom(_token_ratio),
}
TABLE_KEYS = {"breakers": BREAKER_KEYS, "budgets": BUDGET_KEYS}
EXAMPLES = {
    "breakers": "{ failure_ratio = 0.5, window = 100 }",
    "budgets": "{ max_tokens = 100, token_ratio = 0.1 }",
}


def read_layer(kind: str, table: Any, ctx: Context) -> dict[str, Located] | None:
    """One breaker or budget table (`kind`: "breakers" or "budgets"); None (after
    reporting) when it cannot make one."""
    if not isinstance(table, dict):
        ctx.report(None, f"must be a table like {EXAMPLES[kind]} (got {shown_value(table)})")
        return None
    before = len(ctx.problems)
    keys = read_section(table, ctx, TABLE_KEYS[kind])
    if kind == "breakers":
        _check_breaker(keys, ctx)
    return keys if len(ctx.problems) == before else None


def _check_breaker(keys: Mapping[str, Located], ctx: Context) -> None:
    window, least = keys.get("window"), keys.get("min_calls")
    calls = window.value[1] if window is not None else _default(Breaker, "window_calls")
    if window is not None and window.value[0] == "window_seconds":
        return
    if least is not None and least.value > calls:
        ctx.report("min_calls", f"must be <= window ({calls} calls): the breaker could never open")


def build_layer(kind: str, name: str, keys: Mapping[str, Located]) -> Breaker | Budget:
    given = {key: leaf.value for key, leaf in keys.items()}
    if kind == "budgets":
        return Budget(name=name, **given)
    if "window" in given:
        field, size = given.pop("window")
        given[field] = size
        if field == "window_seconds":
            given["window_calls"] = None
    if "on_exceptions" in given:  # None: an optional ("?pkg.Error") class not installed
        given["on_exceptions"] = tuple(e for e in given["on_exceptions"] if e is not None)
    if "on_status" in given:
        given["on_status"] = frozenset().union(*given["on_status"])
    given["judged"] = "on_exceptions" in keys or "on_status" in keys
    return Breaker(name=name, **given)


@attrs.define
class NamedLayers:
    """The `[breakers.x]` and `[budgets.x]` tables of every file: parsed keys by kind and
    "service.name"; the names of tables whose problems were reported, in `broken`."""

    tables: dict[str, dict[str, dict[str, Located]]] = attrs.Factory(
        lambda: {kind: {} for kind in TABLE_KEYS}
    )
    broken: set[tuple[str, str]] = attrs.Factory(set)
    built: dict[str, dict[str, Any]] = attrs.Factory(dict)

    def read(self, kind: str, full: str, body: Any, ctx: Context) -> None:
        keys = read_layer(kind, body, ctx)
        if keys is None:
            self.broken.add((kind, full))
        else:
            self.tables[kind][full] = keys

    def build(self) -> None:
        for kind, tables in self.tables.items():
            self.built[kind] = {
                name: build_layer(kind, name, keys) for name, keys in tables.items()
            }

    def resolve(self, key: str, policy: str, leaf: Located | None, problems: list[Problem]) -> Any:
        """The breaker or budget (`key`) a policy's leaf names or declares; None if none."""
        if leaf is None:
            return None
        kind, ref = KINDS[key], leaf.value
        if ref.name is None and ref.spec is None:
            return None  # false
        if ref.spec is not None:
            clash = self._named_like(kind, key, policy)
            if clash is not None:
                problems.append(Problem(leaf.path, leaf.line, leaf.key, clash))
                return None
            ctx = Context(leaf.path, {}, (), leaf.key, ref.service, [])
            keys = read_layer(kind, ref.spec, ctx)
            problems.extend(Problem(p.path, leaf.line, p.key, p.message) for p in ctx.problems)
            return None if keys is None else build_layer(kind, policy, keys)
        name: str = ref.name
        full = name if "." in name else f"{ref.service}.{name}"
        found = self.built.get(kind, {}).get(full)
        if found is None and (kind, full) not in self.broken:
            known = [*self.built.get(kind, {}), *(n for k, n in self.broken if k == kind)]
            hint = suggestion(full, known)
            shown = f" (known: {', '.join(sorted(known))})" if known and not hint else ""
            message = f"no {key} named {full!r}{hint}{shown}"
            problems.append(Problem(leaf.path, leaf.line, leaf.key, message))
        return found

    def _named_like(self, kind: str, key: str, policy: str) -> str | None:
        """Why an inline breaker or budget of `policy` (named after it) may not be: a table
        of its kind has that name. Two breakers of one name: their log lines, CircuitOpen
        and statistics could not be told apart, and in Redis they would be one state."""
        table = self.tables[kind].get(policy)
        if table is None and (kind, policy) not in self.broken:
            return None
        first = min(table.values(), key=lambda k: k.line or 0) if table else None
        where = f" ({first.path}:{first.line})" if first is not None and first.line else ""
        header = f"[{kind}.{policy.partition('.')[2]}]"
        told = (
            "logs, CircuitOpen and the statistics could not tell apart (in Redis, one state)"
            if key == "breaker"
            else "logs and events could not tell apart"
        )
        return (
            f"an inline {key} is named after its policy, {policy!r}, as is the {header} "
            f"table{where}: two {KINDS[key]} of one name, which {told}; rename the table"
        )


def _default(cls: type, field: str) -> Any:
    return getattr(attrs.fields(cls), field).default
