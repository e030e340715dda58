"""Fixed-window quotas on ratelimit's counter.

ratelimit counts calls in windows of one period: the first opens when the limiter is created
(when the policies load), each later one at the first call after the previous one ended.
Within a window it never admits more than N, but two adjacent windows can admit N each within
less than one period: up to 2N in a period-long stretch that spans a boundary.
"""

from __future__ import annotations

from ratelimit import RateLimitDecorator, RateLimitException

from callpolicy.clock import CLOCK
from callpolicy.model import Quota


def _now() -> float:
    return CLOCK.now()


class FixedWindowLimiter:
    """`try_acquire()` takes one call from the quota or says how long until it could."""

    def __init__(self, quota: Quota) -> None:
        self.quota = quota
        self._admit = RateLimitDecorator(
            calls=quota.rate.calls, period=quota.rate.period, clock=_now
        )(_admitted)

    def try_acquire(self) -> float:
        """0.0 if the call is admitted now, else the seconds until the window resets."""
        try:
            self._admit()
        except RateLimitException as exc:
            return max(float(exc.period_remaining), 1e-6)
        return 0.0


def _admitted() -> None:
    return None
