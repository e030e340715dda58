"""Call quotas: one limiter per named quota, and waiting for admission (sync and async)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from callpolicy.clock import CLOCK
from callpolicy.errors import QuotaExceeded
from callpolicy.events import SleepEvent, emit
from callpolicy.model import Quota
from callpolicy.quotas.fixed_window import FixedWindowLimiter


class Limiter(Protocol):
    quota: Quota

    def try_acquire(self) -> float:
        """0.0 if a call is admitted now (and counted), else seconds until one might be."""
        ...


def make_limiter(quota: Quota) -> Limiter:
    """The limiter for `quota`'s algorithm."""
    return FixedWindowLimiter(quota)


class Admission:
    """Admits one attempt of a policy through all its limiters, waiting as they allow."""

    def __init__(self, policy: str, max_attempts: int, limiters: Sequence[Limiter]) -> None:
        self.policy = policy
        self.max_attempts = max_attempts
        self.limiters = tuple(limiters)

    def _check(
        self, limiter: Limiter, wait: float, waited: float, deadline_at: float | None
    ) -> None:
        quota = limiter.quota
        if waited + wait > quota.max_wait:
            raise QuotaExceeded(self.policy, quota.name, wait, quota.max_wait, "max_wait")
        if deadline_at is not None:
            left = deadline_at - CLOCK.now()
            if wait > left:
                raise QuotaExceeded(
                    self.policy,
                    quota.name,
                    wait,
                    max(left, 0.0),
                    "deadline",
                )

    def _event(self, limiter: Limiter, attempt: int, wait: float) -> SleepEvent:
        quota = limiter.quota
        # An inline quota's name already holds its rate: "api.get[20/1s]".
        cause = f"quota {quota.name}" if "[" in quota.name else f"quota {quota.name} ({quota.rate})"
        return SleepEvent(
            self.policy, attempt, self.max_attempts, "quota", wait, cause, "quota", quota.name
        )

    def acquire(self, attempt: int, deadline_at: float | None) -> None:
        for limiter in self.limiters:
            waited = 0.0
            wait = limiter.try_acquire()
            while wait > 0.0:
                self._check(limiter, wait, waited, deadline_at)
                emit(self._event(limiter, attempt, wait))
                CLOCK.sleep(wait)
                waited += wait
                wait = limiter.try_acquire()

    async def async_acquire(self, attempt: int, deadline_at: float | None) -> None:
        for limiter in self.limiters:
            waited = 0.0
            wait = limiter.try_acquire()
            while wait > 0.0:
                self._check(limiter, wait, waited, deadline_at)
                emit(self._event(limiter, attempt, wait))
                await CLOCK.async_sleep(wait)
                waited += wait
                wait = limiter.try_acquire()
