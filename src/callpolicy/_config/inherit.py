"""Inheritance: the merge rule, and `extends` chains resolved into one table per policy.

A policy `service.endpoint` is its file's `[defaults]`, then what its `extends` names
(itself resolved the same way), then its own keys. Merge rule (per key): a later layer's key
replaces the earlier one's; `retry`, `wait`, `stop`, `pause` and `fallback` merge key by
key, except that a `wait` with a different `strategy` replaces the whole `wait` table (an
inherited `initial` means nothing to a `fixed` wait), and `fallback = false` drops the whole
inherited `fallback`. Lists and inline tables (`quotas`,
`on_status`, `until`, `retry.rules`) are replaced whole, never concatenated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from callpolicy._config.context import Located
from callpolicy._config.fallback import merge_fallback
from callpolicy._errors import Problem
from callpolicy._model import Wait
from callpolicy._text import suggestion

SECTION_NAMES = ("retry", "wait", "stop", "pause", "fallback")
DEFAULT_STRATEGY = attrs.fields(Wait).strategy.default
Node = tuple[str, str | None]  # (service, endpoint); None is the file's [defaults]


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
        if key == "fallback":
            merged[key] = merge_fallback(below, value)
        elif key == "wait" and _strategy(value) not in (None, _strategy(below) or DEFAULT_STRATEGY):
            merged[key] = dict(value)
        else:
            merged[key] = {**below, **value}
    return merged


def _strategy(section: Mapping[str, Located]) -> Any:
    leaf = section.get("strategy")
    return None if leaf is None else leaf.value


class Inheritance:
    """Resolves the `extends` chains of parsed files (service -> (defaults, endpoints)), with
    memoisation and cycle detection. Walks iteratively: a chain of any length is fine."""

    def __init__(
        self, tables: Mapping[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]]
    ) -> None:
        self.tables = tables
        self.problems: list[Problem] = []
        self.done: dict[Node, dict[str, Any]] = {}
        self.orders: dict[Node, tuple[str, ...]] = {}

    def order(self, node: Node) -> tuple[str, ...]:
        """The layers `node`'s merged table was made of ("spotify.defaults", ...), each once
        where it was merged last: a later layer's keys replace an earlier one's."""
        self.resolve(node)
        return self.orders[node]

    def resolve(self, node: Node) -> dict[str, Any]:
        """Merged layers of `node`: its file's defaults, what it extends, its own keys.
        Depth first, with an explicit stack: a chain of any length is fine."""
        path: list[Node] = []  # nodes being resolved, outermost first
        stack: list[tuple[Node, bool]] = [(node, False)]
        while stack:
            current, expanded = stack.pop()
            if current in self.done:
                continue
            if expanded:
                self.done[current] = self._layers(current)
                path.pop()
                continue
            path.append(current)
            stack.append((current, True))
            for parent in reversed(self._parents(current)):
                if parent in path:  # resolved as empty for this link; reported once
                    self._cycle(path[path.index(parent) :])
                elif parent not in self.done:
                    stack.append((parent, False))
        return self.done[node]

    def _parents(self, node: Node) -> list[Node]:
        """What `node` builds on: its file's defaults (for an endpoint), what it extends."""
        service, endpoint = node
        parents: list[Node] = [] if endpoint is None else [(service, None)]
        extends = self._own(node).get("extends")
        target = self._target(extends) if extends is not None else None
        return parents if target is None else [*parents, target]

    def _layers(self, node: Node) -> dict[str, Any]:
        service, endpoint = node
        own = self._own(node)
        layers: dict[str, Any] = {}
        order: tuple[str, ...] = ()
        if endpoint is not None:
            layers = self.done.get((service, None), {})
            order = self.orders.get((service, None), ())
        extends = own.get("extends")
        if extends is not None:
            target = self._target(extends)
            if target is None:
                self._unknown_target(extends)
            else:
                layers = merge(layers, self.done.get(target, {}))
                order += self.orders.get(target, ())
        order += (_name(node),)
        self.orders[node] = tuple(reversed(dict.fromkeys(reversed(order))))  # each at its last
        return merge(layers, own)

    def _cycle(self, cycle: list[Node]) -> None:
        """Report a cycle once, at the last `extends` of the chain (a defaults link has none)."""
        names = [_name(node) for node in [*cycle, cycle[0]]]
        leaf: Located = next(
            self._own(node)["extends"] for node in reversed(cycle) if "extends" in self._own(node)
        )
        self.problems.append(
            Problem(leaf.path, leaf.line, leaf.key, f"extends cycle: {' -> '.join(names)}")
        )

    def _own(self, node: Node) -> dict[str, Any]:
        service, endpoint = node
        defaults, endpoints = self.tables[service]
        return defaults if endpoint is None else endpoints[endpoint]

    def _target(self, leaf: Located) -> Node | None:
        service = leaf.key.split(".", 1)[0]
        target_service, dot, endpoint = str(leaf.value).partition(".")
        if not dot:
            target_service, endpoint = service, str(leaf.value)
        found = self.tables.get(target_service)
        if found is None or endpoint not in found[1]:
            return None
        return target_service, endpoint

    def _unknown_target(self, leaf: Located) -> None:
        names = sorted(f"{s}.{e}" for s, (_, endpoints) in self.tables.items() for e in endpoints)
        hint = suggestion(leaf.value, names)
        known = f" (known: {', '.join(names[:20])}{', ...' if len(names) > 20 else ''})"
        self.problems.append(
            Problem(
                leaf.path,
                leaf.line,
                leaf.key,
                f"no policy named {leaf.value!r} to extend{hint or known}",
            )
        )


def _name(node: Node) -> str:
    service, endpoint = node
    return f"{service}.{endpoint or 'defaults'}"
