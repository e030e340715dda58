"""A quota's `adapt` table: its rate adapted to a server that announces no limit and only
refuses (429, 503), within bounds.

    adapt = { floor = "5/1s", ceiling = "50/1s", on_status = [429, 503], algorithm = "cubic" }

The bounds count over the limit's period; the declared limit is where the rate starts.
"""

from __future__ import annotations

from typing import Any

from callpolicy._config.context import (
    Context,
    Located,
    Parser,
    atom,
    choice,
    list_of,
    read_section,
)
from callpolicy._config.learning import check_bounds
from callpolicy._config.values import UnitError, parse_rate, parse_statuses
from callpolicy._model import ADAPT_ALGORITHMS, Adapt, Learn, Rate
from callpolicy._text import format_seconds, shown_value

EXAMPLE = '{ floor = "5/1s", ceiling = "50/1s" }'

ADAPT_KEYS: dict[str, Parser] = {
    "floor": atom(parse_rate),
    "ceiling": atom(parse_rate),
    "on_status": list_of(atom(parse_statuses)),
    "algorithm": choice(ADAPT_ALGORITHMS),
}


def parse_adapt(value: Any, ctx: Context, key: str) -> Adapt | None:
    """The `adapt` table; None (after reporting) when it cannot make one."""
    if not isinstance(value, dict):
        raise UnitError(f"must be a table like {EXAMPLE} (got {shown_value(value)})")
    here = ctx.child(key)
    before = len(here.problems)
    keys = read_section(value, here, ADAPT_KEYS)
    for needed in ("floor", "ceiling"):
        if needed not in value:
            here.report(None, f"needs {needed} (like {EXAMPLE})")
    floor, ceiling = check_bounds(keys, here)
    statuses = _statuses(keys.get("on_status"), here, value.get("on_status"))
    if len(here.problems) != before or floor is None or ceiling is None:
        return None
    given: dict[str, Any] = {}  # only what the file sets: the defaults live in _model
    if statuses is not None:
        given["statuses"] = statuses
    if "algorithm" in keys:
        given["algorithm"] = keys["algorithm"].value
    return Adapt(floor.value, ceiling.value, **given)


def _statuses(given: Located | None, ctx: Context, raw: Any) -> frozenset[int] | None:
    """The refusals' statuses: 4xx or 5xx only (a 2xx or 3xx refuses nothing)."""
    if given is None:
        return None
    statuses: frozenset[int] = frozenset().union(*given.value)
    if raw == []:  # (entries that are no status are reported on their own)
        ctx.report("on_status", "must name at least one status, like [429, 503]")
    elif any(status < 400 for status in statuses):
        low = min(statuses)
        ctx.report("on_status", f"must be refusals, 4xx or 5xx (got {low})")
    return statuses


def check_adapt(
    adapt: Adapt, rate: Rate | None, weighted: bool, ctx: Context, learn: Learn | None = None
) -> None:
    """The bounds against the quota's own limit (the rate it starts at): the same period,
    the limit between them; not a weighted quota (a refusal says nothing of costs); with
    `learn`, bounds that meet (the limit stays within both)."""
    if learn is not None and (
        learn.floor.calls > adapt.ceiling.calls or adapt.floor.calls > learn.ceiling.calls
    ):
        ctx.report(
            "adapt",
            f"bounds {adapt.floor}..{adapt.ceiling} must meet learn's "
            f"{learn.floor}..{learn.ceiling} (learn.floor, learn.ceiling, adapt.floor, "
            "adapt.ceiling): the limit stays within both",
        )
        return
    if weighted:
        ctx.report(
            "adapt",
            "cannot adapt a weighted quota (a refusal says which call was one too many, not "
            "which cost units): adapt a quota of calls next to it",
        )
    if rate is None:
        return
    if adapt.floor.period != rate.period:
        period = format_seconds(rate.period)
        ctx.report(
            "adapt.floor",
            f"must count over the limit's period, like {adapt.floor.calls}/{period} "
            f"(got {adapt.floor}; the limit is {rate})",
        )
    elif not adapt.floor.calls <= rate.calls <= adapt.ceiling.calls:
        ctx.report(
            "limit",
            f"must be within adapt's bounds {adapt.floor}..{adapt.ceiling} (got {rate}: the "
            "rate starts there)",
        )
