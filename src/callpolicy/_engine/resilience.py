"""The state of a registry's circuit breakers and retry budgets, by model: a breaker or
budget keeps its state across reloads while its definition is unchanged, and its state is
dropped when no loaded policy names it any more (`retain`)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from callpolicy._engine.breaker import LocalBreaker
from callpolicy._engine.budget import LocalBudget
from callpolicy._engine.circuit import BreakerState, Circuit
from callpolicy._engine.conditions import RetryCondition
from callpolicy._model import Breaker, Budget, Policy

if TYPE_CHECKING:
    from callpolicy._quotas import QuotaStore


class ResilienceStore:
    """Breakers (in this process, or shared through Redis) and budgets of one registry."""

    def __init__(self, quotas: QuotaStore | None = None) -> None:
        self.quotas = quotas
        self.breakers: dict[Breaker, BreakerState] = {}
        self.budgets: dict[Budget, LocalBudget] = {}
        self.lock = threading.Lock()

    def breaker(self, model: Breaker) -> BreakerState:
        with self.lock:
            found = self.breakers.get(model)
            if found is None:
                found = self.breakers[model] = self._new_breaker(model)
            return found

    def state_of(self, model: Breaker) -> str:
        """The breaker's state as this process last saw it ("closed" before its first use)."""
        with self.lock:
            found = self.breakers.get(model)
        return "closed" if found is None else found.state

    def circuit(self, policy: Policy, condition: RetryCondition) -> Circuit | None:
        """How `policy`'s attempts pass its breaker; None when it has none."""
        if policy.breaker is None:
            return None
        return Circuit(policy.name, policy.breaker, self.breaker(policy.breaker), condition)

    def budget(self, model: Budget) -> LocalBudget:
        with self.lock:
            found = self.budgets.get(model)
            if found is None:
                found = self.budgets[model] = LocalBudget(model)
            return found

    def retain(self, policies: Iterable[Policy]) -> None:
        """Forget the breakers and budgets no policy of `policies` names."""
        policies = list(policies)
        breakers = {p.breaker for p in policies}
        budgets = {p.budget for p in policies}
        with self.lock:
            self.breakers = {m: s for m, s in self.breakers.items() if m in breakers}
            self.budgets = {m: s for m, s in self.budgets.items() if m in budgets}

    def _new_breaker(self, model: Breaker) -> BreakerState:
        if model.storage.is_memory:
            return LocalBreaker(model)
        from callpolicy._engine.redis_breaker import RedisBreaker  # noqa: PLC0415 (optional)

        return RedisBreaker(model)
