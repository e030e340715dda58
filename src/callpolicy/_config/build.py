"""Merged, located policy tables -> model objects, with the checks that span several keys.

Only the keys a file sets are passed to the model: every default lives in `_model/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from callpolicy._config.context import Located
from callpolicy._config.fallback import build_fallback
from callpolicy._config.quotas import resolve_quotas
from callpolicy._config.resilience import NamedLayers
from callpolicy._errors import Problem
from callpolicy._model import (
    STRATEGY_KEYS,
    Pause,
    Policy,
    Quota,
    Retry,
    RetryRule,
    Stop,
    Wait,
)

HINT_KEYS = ("server_hints", "hint_cap", "hint_above_cap")  # with any strategy
# Policy-file key -> model field, where the two differ.
RETRY_FIELDS = {"while": "while_"}
WAIT_FIELDS = {"server_hints": "hints"}


def build_policy(
    name: str,
    layers: Mapping[str, Any],
    quotas: Mapping[str, Quota],
    problems: list[Problem],
    source: str,
    broken_quotas: frozenset[str] = frozenset(),
    order: tuple[str, ...] = (),
    named: NamedLayers | None = None,
) -> Policy:
    """Turn the merged `layers` of policy `name` into a `Policy`; report what does not fit.
    `order`: the layers merged, first to last ("svc.defaults", ..., `name`)."""
    given = _given(layers, ("description",))
    stop = layers.get("stop", {})
    given["retry"] = _build_retry(layers.get("retry", {}), stop, problems, order or (name,))
    given["wait"] = build_wait(layers.get("wait", {}), problems, name)
    given["stop"] = Stop(**_given(layers.get("stop", {})))
    given["quotas"] = resolve_quotas(name, layers.get("quotas"), quotas, problems, broken_quotas)
    named = named or NamedLayers()
    for key in ("breaker", "budget"):  # named tables, or the policy's own inline one
        given[key] = named.resolve(key, name, layers.get(key), problems)
    if "pause" in layers:  # an empty table is a pause with every default
        given["pause"] = Pause(**_given(layers["pause"]))
    if "fallback" in layers:
        given["fallback"] = build_fallback(layers["fallback"], problems, order or (name,))
    return Policy(name=name, source=source, **given)


def build_wait(keys: Mapping[str, Located], problems: list[Problem], policy: str) -> Wait:
    strategy = _value(keys, "strategy", _default(Wait, "strategy"))
    used = STRATEGY_KEYS[strategy]
    for key, leaf in keys.items():
        if key not in ("strategy", *HINT_KEYS) and key not in used:
            uses = f"it uses {', '.join(used)}" if used else "it takes no other keys"
            fix = _strategy_for(key)
            hint = f'; set strategy = "{fix}" to use {key}' if fix else ""
            _report(problems, leaf, f"is not used by strategy {strategy!r} ({uses}){hint}")
    if strategy == "random" and "max" not in keys and not _written(problems, "wait.max"):
        _report(problems, keys.get("strategy"), 'strategy "random" needs max, e.g. max = "5s"')
    if strategy == "chain" and "steps" not in keys and not _written(problems, "wait.steps"):
        _report(problems, keys.get("strategy"), 'strategy "chain" needs steps = [ {...}, ... ]')
    if strategy in ("random", "exponential"):
        _check_bounds(keys, strategy, problems, policy)
    given = _given(keys, fields=WAIT_FIELDS)
    given["steps"] = tuple(build_wait(step, problems, policy) for step in given.get("steps", []))
    given["hints"] = tuple(given.get("hints", ()))
    return Wait(**given)


def _check_bounds(
    keys: Mapping[str, Located], strategy: str, problems: list[Problem], policy: str
) -> None:
    """`max` >= `initial` (exponential) or `min` (random), blamed on the layer that broke it."""
    low_key = "min" if strategy == "random" else "initial"
    low_leaf, high_leaf = keys.get(low_key), keys.get("max")
    low = _value(keys, low_key, _default(Wait, low_key))
    if high_leaf is None or low <= high_leaf.value:
        return
    high = high_leaf.value
    own = f"{policy}."
    if low_leaf is not None and low_leaf.key.startswith(own) and not high_leaf.key.startswith(own):
        message = f"must be <= max ({low:g}s > {high:g}s; max is set at {_where(high_leaf)})"
        _report(problems, low_leaf, message)
        return
    origin = f"the default {low_key}" if low_leaf is None else low_key
    _report(problems, high_leaf, f"must be >= {origin} ({high:g}s < {low:g}s)")


def _build_retry(
    keys: Mapping[str, Located],
    stop: Mapping[str, Located],
    problems: list[Problem],
    order: tuple[str, ...],
) -> Retry:
    policy = order[-1]
    given = _matching(_given(keys, fields=RETRY_FIELDS))
    if "give_up" in given:
        given["give_up"] = tuple(given["give_up"])
    if "rules" in given:
        given["rules"] = tuple(_build_rule(rule, problems, policy) for rule in given["rules"])
        _check_rule_attempts(keys["rules"].value, stop.get("attempts"), problems, order)
    return Retry(**given)


def _build_rule(keys: Mapping[str, Located], problems: list[Problem], policy: str) -> RetryRule:
    given = _matching(_given(keys, fields=RETRY_FIELDS))
    if "wait" in given:
        given["wait"] = build_wait(given["wait"], problems, policy)
    return RetryRule(**given)


def _matching(given: dict[str, Any]) -> dict[str, Any]:
    """The matching keys' values as the model holds them."""
    if "on_exceptions" in given:  # None: an optional ("?pkg.Error") class not installed
        given["on_exceptions"] = tuple(e for e in given["on_exceptions"] if e is not None)
    if "on_status" in given:
        given["on_status"] = frozenset().union(*given["on_status"])
    return given


def _check_rule_attempts(
    rules: list[Mapping[str, Located]],
    stop_leaf: Located | None,
    problems: list[Problem],
    order: tuple[str, ...],
) -> None:
    """A rule's attempts above `stop.attempts` could never be reached: reported once, at
    whichever of the two the later layer set (the rule, when one layer set both)."""
    if stop_leaf is None:
        refused = {p.key for p in problems}
        if any(f"{layer}.stop.attempts" in refused for layer in order):
            return  # written but refused, reported: the attempts meant are not known
    most = _default(Stop, "attempts") if stop_leaf is None else stop_leaf.value
    highest: tuple[Located, str] | None = None  # the rule the stop must reach, when blamed
    for rule in rules:
        leaf = rule.get("attempts")
        if leaf is None or leaf.value <= most:
            continue
        if stop_leaf is not None and _layer(stop_leaf, order) > _layer(leaf, order):
            if highest is None or leaf.value > highest[0].value:
                highest = (leaf, rule["name"].value)
            continue
        where = "by default" if stop_leaf is None else f"set at {_where(stop_leaf)}"
        message = f"must be <= stop.attempts ({most}, {where}): no call makes more attempts"
        _report(problems, leaf, message)
    if highest is not None:
        leaf, name = highest
        message = f"must be >= {leaf.value}, the attempts of retry rule {name!r}"
        _report(problems, stop_leaf, f"{message} (set at {_where(leaf)})")


def _layer(leaf: Located, order: tuple[str, ...]) -> int:
    """Where in `order` the layer that wrote `leaf` was merged (-1: not known)."""
    service, _, rest = leaf.key.partition(".")
    layer = f"{service}.{rest.partition('.')[0]}"
    return order.index(layer) if layer in order else -1


def _where(leaf: Located) -> str:
    return f"{leaf.path}:{leaf.line}" if leaf.line else leaf.path


def _given(
    keys: Mapping[str, Any],
    only: tuple[str, ...] | None = None,
    fields: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The values the keys set (all of them, or `only` these), by model field name."""
    names = fields or {}
    return {
        names.get(key, key): leaf.value
        for key, leaf in keys.items()
        if isinstance(leaf, Located) and (only is None or key in only)
    }


def _default(cls: type, field: str) -> Any:
    return getattr(attrs.fields(cls), field).default


def _strategy_for(key: str) -> str | None:
    for strategy, keys in STRATEGY_KEYS.items():
        if key in keys:
            return strategy
    return None


def _value(keys: Mapping[str, Any], key: str, default: Any) -> Any:
    leaf = keys.get(key)
    return default if leaf is None else leaf.value


def _written(problems: list[Problem], key: str) -> bool:
    """Whether some `key` was written but refused (reported already): a check that needs
    it would only repeat that problem in other words."""
    return any(p.key.endswith(f".{key}") for p in problems)


def _report(problems: list[Problem], leaf: Located | None, message: str) -> None:
    if leaf is not None:
        problems.append(Problem(leaf.path, leaf.line, leaf.key, message))
