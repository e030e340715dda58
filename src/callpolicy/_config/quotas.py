"""Quota tables (`[quotas.x]`, and inline ones in an endpoint's `quotas`) -> `Quota` models,
with every problem located; and a policy's `quotas` list resolved to those models.

A quota is one of three kinds, by the key it has:
  limit = "N/period"     at most N calls (or cost units, with weighted = true) per period
  concurrency = N        at most N calls in flight at once
  pool = ["a", "b"]      one of several quotas (API keys): a call takes the first that admits
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from callpolicy._config.adapting import check_adapt, parse_adapt
from callpolicy._config.context import (
    Context,
    Located,
    Parser,
    QuotaRef,
    atom,
    choice,
    read_section,
)
from callpolicy._config.learning import check_learn, parse_learn
from callpolicy._config.storage import parse_storage
from callpolicy._config.values import (
    UnitError,
    parse_burst,
    parse_duration,
    parse_flag,
    parse_lease,
    parse_rate,
    parse_slots,
)
from callpolicy._errors import Problem
from callpolicy._model import (
    ALGORITHMS,
    BUCKETS,
    MAX_SLIDING_WINDOW,
    UNAVAILABLE_MODES,
    Quota,
)
from callpolicy._text import shown_value, suggestion

KINDS = ("limit", "concurrency", "pool")
QUOTA_FIELDS = {"limit": "rate", "local_limit": "local_limit"}  # key -> model field, if not same


def _names(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UnitError(f"must be a non-empty list of quota names (got {shown_value(value)})")
    return value


QUOTA_KEYS: dict[str, Parser] = {
    "limit": atom(parse_rate),
    "concurrency": atom(parse_slots),
    "pool": atom(_names),
    "algorithm": choice(ALGORITHMS),
    "max_wait": atom(parse_duration),
    "weighted": atom(parse_flag),
    "storage": atom(parse_storage),
    "on_unavailable": choice(UNAVAILABLE_MODES),
    "local_limit": atom(parse_rate),
    "guard": atom(parse_duration),
    "burst": atom(parse_burst),
    "spread": atom(parse_flag),
    "lease": atom(parse_lease),
    "learn": parse_learn,
    "adapt": parse_adapt,
}
RATE_ONLY = ("algorithm", "weighted", "local_limit", "guard", "burst", "spread", "learn", "adapt")


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
    _check_lease(table, keys, kind, ctx)
    mode = keys.get("on_unavailable")
    if mode is not None and mode.value == "local" and "local_limit" not in table:
        ctx.report("on_unavailable", 'needs local_limit, the share of this process, e.g. "5/1s"')
    rate = keys.get("limit")
    if "learn" in keys:
        check_learn(keys["learn"].value, rate.value if rate is not None else None, ctx)
    if "adapt" in keys and kind == "limit":
        weighted_calls = "weighted" in keys and keys["weighted"].value
        learn = keys["learn"].value if "learn" in keys else None
        check_adapt(
            keys["adapt"].value,
            rate.value if rate is not None else None,
            weighted_calls,
            ctx,
            learn,
        )
    algorithm = keys["algorithm"].value if "algorithm" in keys else Quota.algorithm_default()
    bucket = algorithm in BUCKETS
    if "burst" in keys and not bucket and kind == "limit":
        ctx.report("burst", 'applies to algorithm = "leaky-bucket" or "token-bucket"')
    if "spread" in keys and bucket:
        ctx.report("spread", "applies to the windows; a bucket spreads its calls with burst = 0")
    if algorithm == "token-bucket" and "burst" in keys and keys["burst"].value == 0:
        ctx.report(
            "burst",
            "is a token bucket's size, at least 1 (a leaky bucket's burst = 0 spaces calls evenly)",
        )
    exact = algorithm == "sliding-window" and not ("spread" in keys and keys["spread"].value)
    weighted = "weighted" in keys and keys["weighted"].value
    largest, where = (rate.value.calls, "limit") if rate is not None else (0, "limit")
    if "learn" in keys and keys["learn"].value.ceiling.calls > largest:
        largest, where = keys["learn"].value.ceiling.calls, "learn.ceiling"  # it may get there
    if "adapt" in keys and keys["adapt"].value.ceiling.calls > largest:
        largest, where = keys["adapt"].value.ceiling.calls, "adapt.ceiling"
    if exact and largest > MAX_SLIDING_WINDOW and not weighted:
        ctx.report(
            where,
            f"is too large for an exact sliding window (more than "
            f'{MAX_SLIDING_WINDOW:,} calls); use algorithm = "leaky-bucket" or "token-bucket"',
        )
    elif exact and largest > MAX_SLIDING_WINDOW:
        # One entry per call of cost > 0, at most MAX_SLIDING_WINDOW: calls of one unit each
        # would be held back below a larger limit.
        ctx.report(
            where,
            f"is too large for a weighted sliding window (more than {MAX_SLIDING_WINDOW:,} "
            "cost units: it keeps one entry per call); count in larger units (cost in "
            'thousands of tokens), or use algorithm = "token-bucket", "leaky-bucket" or '
            '"fixed-window"',
        )
    return keys if len(ctx.problems) == before else None


def _check_lease(table: Any, keys: dict[str, Located], kind: str, ctx: Context) -> None:
    """A lease is an in-flight slot's in Redis: nothing else has one."""
    if "lease" not in keys:
        return
    storage = keys.get("storage")
    if kind != "concurrency":
        ctx.report("lease", f"applies only to a quota with concurrency (this one has {kind})")
    elif storage.value.is_memory if storage else "storage" not in table:
        ctx.report(
            "lease",
            'applies only to a quota in Redis (storage = "redis://..."): an in-memory slot '
            "is given back when its call ends, or with its process",
        )


def build_quota(name: str, keys: Mapping[str, Located], pool: tuple[Quota, ...] = ()) -> Quota:
    """The quota the keys set; what they leave out takes the model's default."""
    given = {QUOTA_FIELDS.get(key, key): leaf.value for key, leaf in keys.items()}
    given.pop("pool", None)
    return Quota(name=name, pool=pool, **given)


def build_named_quotas(
    tables: Mapping[str, tuple[dict[str, Located], str]],
    problems: list[Problem],
    broken: set[str],
) -> dict[str, Quota]:
    """`tables` maps "service.name" to (parsed keys, service); pools resolve their members
    (same-file names, or "service.name") once every plain quota is built. A member in
    `broken` (a quota table whose own problems were reported) is not reported again, and a
    pool left without members joins `broken`."""
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
            if found is None and full in broken:
                continue
            if found is None:
                others = [q for q in [*tables, *broken] if q != name]
                message = f"no quota named {full!r}{suggestion(full, others)}"
                if full in tables:
                    message = f"{full!r} is a pool; a pool's members are plain quotas"
                problems.append(Problem(leaf.path, leaf.line, f"{leaf.key}[{index}]", message))
            elif found.changes_limit:
                how = "learns its limit" if found.learn is not None else "adapts its rate"
                message = f"{full!r} {how}: a pool's members cannot (yet)"
                problems.append(Problem(leaf.path, leaf.line, f"{leaf.key}[{index}]", message))
            else:
                members.append(found)
        if members:
            quotas[name] = build_quota(name, keys, tuple(members))
        else:
            broken.add(name)
    return quotas


def resolve_quotas(
    policy: str,
    leaf: Located | None,
    named: Mapping[str, Quota],
    problems: list[Problem],
    broken: frozenset[str] = frozenset(),
) -> tuple[Quota, ...]:
    """The quotas a policy's `quotas` list names or declares inline. A name in `broken` (a
    quota table whose own problems were reported) is not reported again here."""
    if leaf is None:
        return ()
    found: dict[str, Quota] = {}
    refs: list[QuotaRef] = leaf.value
    for index, ref in enumerate(refs):
        if ref.spec is not None:
            quota = _inline_quota(policy, ref.spec, leaf, index, problems)
        else:
            assert ref.name is not None
            full = ref.name if "." in ref.name else f"{ref.service}.{ref.name}"
            quota = named.get(full)
            if quota is None and full not in broken:
                _report_unknown_quota(full, [*named, *broken], leaf, index, problems)
        if quota is not None and found.setdefault(quota.name, quota) != quota:
            message = (
                f"another inline quota of {quota.rate} counts differently; declare one of them "
                "as [quotas.<name>]"
            )
            problems.append(Problem(leaf.path, leaf.line, f"{leaf.key}[{index}]", message))
    if sum(bool(q.pool) for q in found.values()) > 1:
        message = "may draw from one pool at most (a call takes one key)"
        problems.append(Problem(leaf.path, leaf.line, leaf.key, message))
    return tuple(found.values())


def _inline_quota(
    policy: str, spec: dict[str, Any], leaf: Located, index: int, problems: list[Problem]
) -> Quota | None:
    ctx = Context(leaf.path, {}, (), f"{leaf.key}[{index}]", policy.split(".", maxsplit=1)[0], [])
    keys = read_quota(spec, ctx)
    problems.extend(Problem(p.path, leaf.line, p.key, p.message) for p in ctx.problems)
    if keys is None or ctx.problems:
        return None
    if "pool" in keys:
        message = "an inline quota cannot be a pool: declare it as [quotas.<name>]"
        problems.append(Problem(leaf.path, leaf.line, f"{leaf.key}[{index}]", message))
        return None
    if "limit" in keys:
        return build_quota(f"{policy}[{keys['limit'].value}]", keys)
    return build_quota(f"{policy}[{keys['concurrency'].value} in flight]", keys)


def _report_unknown_quota(
    full: str, named: list[str], leaf: Located, index: int, problems: list[Problem]
) -> None:
    hint = suggestion(full, named)
    known = f" (known: {', '.join(sorted(named))})" if named and not hint else ""
    problems.append(
        Problem(
            leaf.path, leaf.line, f"{leaf.key}[{index}]", f"no quota named {full!r}{hint}{known}"
        )
    )
