"""Quota tables (`[quotas.x]` and inline ones) -> `Quota` models, with every problem located.

A quota is one of three kinds, by the key it has:
  limit = "N/period"     at most N calls (or cost units, with weighted = true) per period
  concurrency = N        at most N calls in flight at once
  pool = ["a", "b"]      one of several quotas (API keys): a call takes the first that admits
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from callpolicy.errors import Problem
from callpolicy.model import ALGORITHMS, UNAVAILABLE_MODES, Quota
from callpolicy.schema import (
    Context,
    Located,
    Parser,
    choice,
    duration,
    read_section,
)
from callpolicy.units import UnitError, parse_rate, shown_value

# An exact sliding window keeps one entry per call in the window: past this many, memory
# and time per admission grow too much; token-bucket keeps two numbers whatever N is.
MAX_SLIDING_WINDOW = 1_000_000
KINDS = ("limit", "concurrency", "pool")
# A sliding window counts a call this much longer than its period: the time between a call's
# admission and its reaching the server (a thread switch, a network hop) then cannot put
# N + 1 calls into the server's window. It costs guard/period of the throughput.
DEFAULT_GUARD = 0.002


def _flag(value: Any, ctx: Context, key: str) -> bool:
    if not isinstance(value, bool):
        raise UnitError(f"must be true or false (got {shown_value(value)})")
    return value


def _count(value: Any, ctx: Context, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UnitError(f"must be an integer >= 1 (got {shown_value(value)})")
    return value


def _names(value: Any, ctx: Context, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UnitError(f"must be a non-empty list of quota names (got {shown_value(value)})")
    return value


def _storage(value: Any, ctx: Context, key: str) -> str:
    if not isinstance(value, str) or not value.startswith(("memory://", "redis://", "rediss://")):
        raise UnitError(
            'must be "memory://" or "redis://host:port/db" (got ' + shown_value(value) + ")"
        )
    return value


QUOTA_KEYS: dict[str, Parser] = {
    "limit": lambda value, ctx, key: parse_rate(value),
    "concurrency": _count,
    "pool": _names,
    "algorithm": choice(ALGORITHMS),
    "max_wait": duration,
    "weighted": _flag,
    "storage": _storage,
    "on_unavailable": choice(UNAVAILABLE_MODES),
    "local_limit": lambda value, ctx, key: parse_rate(value),
    "guard": duration,
}
RATE_ONLY = ("algorithm", "weighted", "local_limit", "guard")


def read_quota(table: Any, ctx: Context) -> dict[str, Located] | None:
    """Parse one quota table; None (after reporting) when it cannot make a quota."""
    if not isinstance(table, dict):
        ctx.report(None, f'must be a table like {{ limit = "20/1s" }} (got {shown_value(table)})')
        return None
    before = len(ctx.problems)
    keys = read_section(table, ctx, QUOTA_KEYS)
    kinds = [k for k in KINDS if k in table]
    if len(kinds) != 1:
        got = " and ".join(kinds) if kinds else "none"
        ctx.report(
            None,
            f'needs exactly one of limit = "180/30s", concurrency = 20 or '
            f'pool = ["a", "b"] (got {got})',
        )
        return None
    kind = kinds[0]
    for key in RATE_ONLY if kind != "limit" else ():
        if key in keys:
            ctx.report(key, f"applies only to a quota with a limit (this one has {kind})")
    if kind == "pool" and any(k in keys for k in ("storage", "on_unavailable", "max_wait")):
        ctx.report(None, "a pool takes storage, on_unavailable and max_wait from its members")
    mode = keys.get("on_unavailable")
    if mode is not None and mode.value == "local" and "local_limit" not in keys:
        ctx.report("on_unavailable", 'needs local_limit, the share of this process, e.g. "5/1s"')
    rate = keys.get("limit")
    algorithm = keys.get("algorithm")
    if "guard" in keys and algorithm is not None and algorithm.value != "sliding-window":
        ctx.report("guard", 'applies only to algorithm = "sliding-window"')
    if (
        rate is not None
        and (algorithm is None or algorithm.value == "sliding-window")
        and not _value(keys, "weighted", False)
        and rate.value.calls > MAX_SLIDING_WINDOW
    ):
        ctx.report(
            "limit",
            f"is too large for an exact sliding window (more than "
            f'{MAX_SLIDING_WINDOW:,} calls); use algorithm = "token-bucket"',
        )
    return keys if len(ctx.problems) == before else None


def build_quota(name: str, keys: Mapping[str, Located], pool: tuple[Quota, ...] = ()) -> Quota:
    return Quota(
        name=name,
        rate=_value(keys, "limit", None),
        concurrency=_value(keys, "concurrency", None),
        pool=pool,
        algorithm=_value(keys, "algorithm", "sliding-window"),
        max_wait=_value(keys, "max_wait", 60.0),
        weighted=_value(keys, "weighted", False),
        storage=_value(keys, "storage", "memory://"),
        on_unavailable=_value(keys, "on_unavailable", "fail-closed"),
        local_limit=_value(keys, "local_limit", None),
        guard=_value(keys, "guard", DEFAULT_GUARD),
    )


def build_named_quotas(
    tables: Mapping[str, tuple[dict[str, Located], str]], problems: list[Problem]
) -> dict[str, Quota]:
    """`tables` maps "service.name" to (parsed keys, service); pools resolve their members
    (same-file names, or "service.name") once every plain quota is built."""
    plain = {
        name: build_quota(name, keys) for name, (keys, _) in tables.items() if "pool" not in keys
    }
    quotas = dict(plain)
    for name, (keys, service) in tables.items():
        if "pool" not in keys:
            continue
        leaf = keys["pool"]
        members = []
        for index, member in enumerate(leaf.value):
            full = member if "." in member else f"{service}.{member}"
            found = plain.get(full)
            if found is None:
                known = [q for q in tables if q != name]
                close = difflib.get_close_matches(full, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                message = f"no quota named {full!r}{hint}"
                if full in tables:
                    message = f"{full!r} is a pool; a pool's members are plain quotas"
                problems.append(Problem(leaf.path, leaf.line, f"{leaf.key}[{index}]", message))
            else:
                members.append(found)
        if members:
            quotas[name] = build_quota(name, keys, tuple(members))
    return quotas


def _value(keys: Mapping[str, Located], key: str, default: Any) -> Any:
    leaf = keys.get(key)
    return default if leaf is None else leaf.value
