"""A registry of loaded policies (atomic reloads, runners built lazily, quota state kept
across loads), and `@policy`, the decorator that applies one of them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from callpolicy._config import PathLike, default_paths, load_policies
from callpolicy._decorate import decorate
from callpolicy._engine import Runner, build_runner
from callpolicy._engine.resilience import ResilienceStore
from callpolicy._errors import PolicyError, Problem
from callpolicy._forks import renew_after_fork
from callpolicy._model import Policy, Quota
from callpolicy._options import Costing
from callpolicy._quotas import QuotaCounters, QuotaStore
from callpolicy._stats import PolicyStats, StatsBook
from callpolicy._text import suggestion

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Policies loaded from policy files (directories of `*.toml`, or single files).

    `Registry(*paths)` loads at once and raises `PolicyError` on any problem. With no paths it
    reads the directories in `CALLPOLICY_PATH`, else `./policies`.
    """

    def __init__(self, *paths: PathLike, lazy: bool = False) -> None:
        self._paths: tuple[PathLike, ...] = paths
        self._policies: dict[str, Policy] | None = None
        self._runners: dict[str, Runner] = {}
        self._quotas = QuotaStore()
        self._layers = ResilienceStore(self._quotas)  # breakers and budgets
        self._stats = StatsBook()
        self._lock = threading.RLock()
        renew_after_fork(self)
        #: Bumped by every successful load; decorated functions re-bind when it changes.
        self.generation = 0
        if not lazy:
            self.load(*paths)

    def load(self, *paths: PathLike) -> Registry:
        """Replace all policies with those under `paths` (default: the paths given before).

        Atomic: if any file has a problem, `PolicyError` lists them all and the policies
        loaded before stay in force. Quotas keep their state while their definition is unchanged.
        """
        chosen = paths or self._paths or tuple(default_paths())
        policies = load_policies(chosen)
        with self._lock:
            self._paths = chosen
            self._policies = policies
            self._runners = {}
            self._layers.retain(policies.values())
            self.generation += 1
        return self

    def after_fork(self) -> None:
        self._lock = threading.RLock()

    def names(self) -> list[str]:
        """Every policy name ("service.endpoint"), sorted."""
        return sorted(self._loaded())

    def get(self, name: str) -> Policy:
        """The `Policy` model called `name`; `PolicyError` with a did-you-mean if unknown."""
        policies = self._loaded()
        found = policies.get(name)
        if found is None:
            raise self._unknown(name, policies)
        return found

    def policy(
        self,
        name: str,
        *,
        cost: float | Callable[..., float] | None = None,
        actual_cost: Callable[[Any], float] | None = None,
    ) -> Callable[[F], F]:
        """A decorator applying policy `name` of this registry; see `callpolicy.policy`."""
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"policy name must be a non-empty string like 'spotify.tracks' (got {name!r})"
            )
        costing = None if cost is None and actual_cost is None else Costing(cost, actual_cost)
        return lambda fn: decorate(fn, name, self, costing)

    def runner(self, name: str, where: tuple[str, int] | None = None) -> Runner:
        """What runs the calls of policy `name`, built on first use for the current
        generation (internal: decorated functions use it)."""
        found = self._runners.get(name)
        if found is not None:
            return found
        with self._lock:
            policies = self._loaded()
            model = policies.get(name)
            if model is None:
                raise self._unknown(name, policies, where)
            found = self._runners.get(name)
            if found is None:
                tally = self._stats.of(name)
                found = self._runners[name] = build_runner(model, self._quotas, tally, self._layers)
            return found

    def quotas(self) -> list[Quota]:
        """Every quota some policy uses, sorted by name."""
        return sorted({q for p in self._loaded().values() for q in p.quotas}, key=lambda q: q.name)

    def quota_counters(self) -> dict[str, QuotaCounters]:
        """What each quota of the loaded policies did in this process, by name (a pool's
        members each by theirs): admitted, refused, waited... (see `QuotaCounters`)."""
        names = {member.name for q in self.quotas() for member in (q.pool or (q,))}
        return self._quotas.snapshot(names)

    def loaded(self) -> bool:
        """Whether policies are loaded (a lazy registry loads them at its first use)."""
        return self._policies is not None

    def stats(self) -> dict[str, PolicyStats]:
        """What each loaded policy's calls did in this process, by name: calls, successes,
        failures, retries, give-ups, sleeps, failure rate, breaker state (`PolicyStats`)."""
        policies = self._loaded()
        stats = self._stats.snapshot(policies)
        for name, model in policies.items():
            if model.breaker is not None:
                state = self._layers.state_of(model.breaker)
                stats[name] = attrs.evolve(stats[name], breaker=state)
        return stats

    def _loaded(self) -> dict[str, Policy]:
        if self._policies is None:
            with self._lock:
                if self._policies is None:
                    self.load()
        assert self._policies is not None
        return self._policies

    def _unknown(
        self, name: str, policies: dict[str, Policy], where: tuple[str, int] | None = None
    ) -> PolicyError:
        hint = suggestion(name, policies)
        sources = ", ".join(str(p) for p in self._paths)
        path, line = where if where else ("<policy>", None)
        return PolicyError(
            [
                Problem(
                    path,
                    line,
                    name,
                    f"no policy named {name!r}{hint} (policies loaded from {sources})",
                )
            ]
        )


default_registry = Registry(lazy=True)


def policy(
    name: str,
    *,
    registry: Registry | None = None,
    cost: float | Callable[..., float] | None = None,
    actual_cost: Callable[[Any], float] | None = None,
) -> Callable[[F], F]:
    """Apply the retry, wait, stop and quota rules of policy `name` (e.g. "spotify.tracks").

    Works on plain functions, methods and `async def` functions; generator functions are
    refused (a generator's body runs after the call returns, out of the policy's reach).
    For weighted quotas, `cost` is what a call takes (a number, or a function of the call's
    arguments; 1 by default) and `actual_cost(result)` corrects it once the call returned.
    """
    return (registry or default_registry).policy(name, cost=cost, actual_cost=actual_cost)
