"""A quota's `learn` table: its limit taken from what responses announce, within bounds.

    learn = { from = "ratelimit", floor = "5/1s", ceiling = "50/1s", policy = "default" }

`from` says which headers: "x-ratelimit" (X-RateLimit-Limit, or the header `header` names;
`resource` keeps only responses whose X-RateLimit-Resource is that, as GitHub sends) or
"ratelimit" (the IETF draft's RateLimit-Policy, or its older RateLimit-Limit; `policy` names
the policy item to follow). `window` is what an announced limit counts over when the header
does not say (default: the limit's period). The bounds count over the limit's period.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from callpolicy._config.context import Context, Located, Parser, atom, choice, read_section
from callpolicy._config.values import UnitError, parse_header, parse_positive_duration, parse_rate
from callpolicy._model import LEARN_SOURCES, Learn, Rate
from callpolicy._text import format_seconds, shown_value

EXAMPLE = '{ from = "x-ratelimit", floor = "5/1s", ceiling = "50/1s" }'
# Policy item names and resources: a token or string of a structured field, short.
_MAX_NAME = 64


def _name(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= _MAX_NAME
        or not value.isascii()
        or not value.isprintable()
        or '"' in value
        or "\\" in value
    ):
        raise UnitError(
            f"must be a name of at most {_MAX_NAME} ASCII characters (got {shown_value(value)})"
        )
    return value


LEARN_KEYS: dict[str, Parser] = {
    "from": choice(LEARN_SOURCES),
    "floor": atom(parse_rate),
    "ceiling": atom(parse_rate),
    "window": atom(parse_positive_duration),
    "header": atom(parse_header),
    "policy": atom(_name),
    "resource": atom(_name),
}
ONLY = {"header": "x-ratelimit", "resource": "x-ratelimit", "policy": "ratelimit"}


def parse_learn(value: Any, ctx: Context, key: str) -> Learn | None:
    """The `learn` table; None (after reporting) when it cannot make one."""
    if not isinstance(value, dict):
        raise UnitError(f"must be a table like {EXAMPLE} (got {shown_value(value)})")
    here = ctx.child(key)
    before = len(here.problems)
    keys = read_section(value, here, LEARN_KEYS)
    for needed in ("from", "floor", "ceiling"):
        if needed not in value:
            here.report(None, f"needs {needed} (like {EXAMPLE})")
    source = keys["from"].value if "from" in keys else None
    for name, only in ONLY.items():
        if name in keys and source is not None and source != only:
            here.report(name, f'applies only to from = "{only}" (this one has "{source}")')
    floor, ceiling = check_bounds(keys, here)
    if len(here.problems) != before or source is None or floor is None or ceiling is None:
        return None
    named = keys.get("policy") or keys.get("resource")
    return Learn(
        source,
        floor.value,
        ceiling.value,
        keys["window"].value if "window" in keys else None,
        keys["header"].value if "header" in keys else "X-RateLimit-Limit",
        named.value if named is not None else None,
    )


def check_learn(learn: Learn, rate: Rate | None, ctx: Context) -> None:
    """The bounds against the quota's own limit: the same period, the limit between them."""
    if rate is None:
        return
    if learn.floor.period != rate.period:
        period = format_seconds(rate.period)
        ctx.report(
            "learn.floor",
            f"must count over the limit's period, like {learn.floor.calls}/{period} "
            f"(got {learn.floor}; the limit is {rate})",
        )
    elif not learn.floor.calls <= rate.calls <= learn.ceiling.calls:
        ctx.report(
            "limit",
            f"must be within learn's bounds {learn.floor}..{learn.ceiling} (got {rate})",
        )
    if learn.window is not None and learn.window < rate.period:
        ctx.report(
            "learn.window",
            f"must be at least the limit's period, {format_seconds(rate.period)} (got "
            f"{format_seconds(learn.window)}: an announcement over a shorter window cannot "
            "be held to the quota's)",
        )


def check_bounds(
    keys: Mapping[str, Located], here: Context
) -> tuple[Located | None, Located | None]:
    """A `learn` or `adapt` table's floor and ceiling, reported unless they count over one
    period with the floor at most the ceiling."""
    floor, ceiling = keys.get("floor"), keys.get("ceiling")
    if floor is not None and ceiling is not None:
        low, high = floor.value, ceiling.value
        if low.period != high.period:
            here.report(
                "ceiling", f"must count over the floor's period (got {high}; the floor is {low})"
            )
        elif low.calls > high.calls:
            here.report("floor", f"must be at most the ceiling {high} (got {low})")
    return floor, ceiling
