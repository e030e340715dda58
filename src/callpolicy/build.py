"""Merged, located policy tables -> model objects, with the checks that span several keys.

Merge rule (per key): a later layer's key replaces the earlier one's; `retry`, `wait` and
`stop` merge key by key, except that a `wait` with a different `strategy` replaces the whole
`wait` table (an inherited `initial` means nothing to a `fixed` wait). Lists and inline
tables (`quotas`, `on_status`, `until`) are replaced whole, never concatenated.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from callpolicy.errors import Problem
from callpolicy.hints import hint_format
from callpolicy.model import Pause, Policy, Quota, Retry, Stop, Wait
from callpolicy.quotas.spec import build_quota, read_quota
from callpolicy.schema import Context, Located, QuotaRef

SECTION_NAMES = ("retry", "wait", "stop", "pause")
HINT_KEYS = ("server_hints", "hint_cap", "hint_above_cap")  # with any strategy
INHERITED = ("quotas", "description")

# Keys each wait strategy uses, besides `strategy` itself.
STRATEGY_KEYS: dict[str, tuple[str, ...]] = {
    "none": (),
    "fixed": ("seconds", "jitter"),
    "exponential": ("initial", "multiplier", "max", "jitter"),
    "random": ("min", "max"),
    "chain": ("steps",),
}


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, by the rule in this module's docstring."""
    merged = {k: v for k, v in base.items() if k != "extends"}
    for key, value in over.items():
        if key == "extends":
            continue
        if key not in SECTION_NAMES:
            merged[key] = value
            continue
        below: dict[str, Located] = merged.get(key, {})
        if key == "wait" and _strategy(value) not in (None, _strategy(below) or "exponential"):
            merged[key] = dict(value)
        else:
            merged[key] = {**below, **value}
    return merged


def build_policy(
    name: str,
    layers: Mapping[str, Any],
    quotas: Mapping[str, Quota],
    problems: list[Problem],
    source: str,
) -> Policy:
    """Turn the merged `layers` of policy `name` into a `Policy`; report what does not fit."""
    retry = _build_retry(layers.get("retry", {}))
    wait = build_wait(layers.get("wait", {}), problems, name)
    stop_keys = layers.get("stop", {})
    stop = Stop(
        attempts=_value(stop_keys, "attempts", 3),
        deadline=_value(stop_keys, "deadline", None),
    )
    quota_list = _resolve_quotas(name, layers.get("quotas"), quotas, problems)
    description = _value(layers, "description", "")
    pause = _build_pause(layers.get("pause"))
    return Policy(name, retry, wait, stop, quota_list, description, source, pause)


def _build_pause(keys: Mapping[str, Located] | None) -> Pause | None:
    """The endpoint's pause; the reset header's format defaults by its name."""
    if not keys:
        return None
    reset = _value(keys, "reset", "X-RateLimit-Reset")
    return Pause(
        remaining=_value(keys, "remaining", "X-RateLimit-Remaining"),
        reset=reset,
        format=_value(keys, "format", hint_format(reset)),
        max=_value(keys, "max", 60.0),
    )


def build_wait(keys: Mapping[str, Located], problems: list[Problem], policy: str) -> Wait:
    strategy = _value(keys, "strategy", "exponential")
    used = STRATEGY_KEYS[strategy]
    for key, leaf in keys.items():
        if key not in ("strategy", *HINT_KEYS) and key not in used:
            uses = f"it uses {', '.join(used)}" if used else "it takes no other keys"
            fix = _strategy_for(key)
            hint = f'; set strategy = "{fix}" to use {key}' if fix else ""
            _report(problems, leaf, f"is not used by strategy {strategy!r} ({uses}){hint}")
    if strategy == "random" and "max" not in keys:
        _report(problems, keys.get("strategy"), 'strategy "random" needs max, e.g. max = "5s"')
    if strategy == "chain" and "steps" not in keys:
        _report(problems, keys.get("strategy"), 'strategy "chain" needs steps = [ {...}, ... ]')
    if strategy in ("random", "exponential"):
        _check_bounds(keys, strategy, problems, policy)
    steps = tuple(build_wait(step, problems, policy) for step in _value(keys, "steps", []))
    return Wait(
        strategy=strategy,
        seconds=_value(keys, "seconds", 1.0),
        initial=_value(keys, "initial", 1.0),
        multiplier=_value(keys, "multiplier", 2.0),
        max=_value(keys, "max", 30.0),
        min=_value(keys, "min", 0.0),
        jitter=_value(keys, "jitter", 0.0),
        steps=steps,
        hints=tuple(_value(keys, "server_hints", [])),
        hint_cap=_value(keys, "hint_cap", 60.0),
        hint_above_cap=_value(keys, "hint_above_cap", "clamp"),
    )


def _check_bounds(
    keys: Mapping[str, Located], strategy: str, problems: list[Problem], policy: str
) -> None:
    """`max` >= `initial` (exponential) or `min` (random), blamed on the layer that broke it."""
    low_key = "min" if strategy == "random" else "initial"
    low_leaf, high_leaf = keys.get(low_key), keys.get("max")
    low = _value(keys, low_key, 0.0 if strategy == "random" else 1.0)
    if high_leaf is None or low <= high_leaf.value:
        return
    high = high_leaf.value
    own = f"{policy}."
    if low_leaf is not None and low_leaf.key.startswith(own) and not high_leaf.key.startswith(own):
        where = f"{high_leaf.path}:{high_leaf.line}" if high_leaf.line else high_leaf.path
        message = f"must be <= max ({low:g}s > {high:g}s; max is set at {where})"
        _report(problems, low_leaf, message)
        return
    origin = f"the default {low_key}" if low_leaf is None else low_key
    _report(problems, high_leaf, f"must be >= {origin} ({high:g}s < {low:g}s)")


def _build_retry(keys: Mapping[str, Located]) -> Retry:
    exceptions = tuple(e for e in _value(keys, "on_exceptions", []) if e is not None)
    statuses: frozenset[int] = frozenset().union(*_value(keys, "on_status", []))
    return Retry(
        on_exceptions=exceptions,
        on_status=statuses,
        until=_value(keys, "until", None),
        while_=_value(keys, "while", None),
        result_predicate=_value(keys, "result_predicate", None),
        exception_predicate=_value(keys, "exception_predicate", None),
        idempotent=_value(keys, "idempotent", None),
        refused_any_method=_value(keys, "refused_any_method", True),
        give_up=tuple(_value(keys, "give_up", [])),
    )


def _resolve_quotas(
    policy: str, leaf: Located | None, named: Mapping[str, Quota], problems: list[Problem]
) -> tuple[Quota, ...]:
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
            if quota is None:
                _report_unknown_quota(full, named, leaf, index, problems)
        if quota is not None:
            found.setdefault(quota.name, quota)
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
    full: str, named: Mapping[str, Quota], leaf: Located, index: int, problems: list[Problem]
) -> None:
    close = difflib.get_close_matches(full, list(named), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = f" (known: {', '.join(sorted(named))})" if named and not close else ""
    problems.append(
        Problem(
            leaf.path, leaf.line, f"{leaf.key}[{index}]", f"no quota named {full!r}{hint}{known}"
        )
    )


def _strategy(section: Mapping[str, Located]) -> Any:
    leaf = section.get("strategy")
    return None if leaf is None else leaf.value


def _strategy_for(key: str) -> str | None:
    for strategy, keys in STRATEGY_KEYS.items():
        if key in keys:
            return strategy
    return None


def _value(keys: Mapping[str, Any], key: str, default: Any) -> Any:
    leaf = keys.get(key)
    return default if leaf is None else leaf.value


def _report(problems: list[Problem], leaf: Located | None, message: str) -> None:
    if leaf is not None:
        problems.append(Problem(leaf.path, leaf.line, leaf.key, message))
