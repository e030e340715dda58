"""What each policy's calls did in this process, for a statistics snapshot and metrics
(`Registry.stats()`, the Prometheus collector).

Per registry, per policy name, kept across reloads (like the quotas' counts); a forked child
starts from zero. A call's start and success are counted without a lock (`itertools.count`:
one C call, atomic under the GIL), so the success path stays cheap; failures, retries,
give-ups and sleeps under a lock.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Iterable
from typing import ClassVar

import attrs

from callpolicy._forks import Book

# Upper bounds of the sleep histogram's buckets, in seconds (Prometheus's defaults, and the
# long waits a rate-limited API asks for).
SLEEP_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, math.inf,
)  # fmt: skip


@attrs.frozen
class PolicyStats:
    """One policy's calls in this process, since it started (or since the fork).

    `calls`: calls started, those in flight included; `successes`: calls that returned
    (after any retries); `failures`: calls that raised (a give-up, an error not retried, a
    quota refusal, an open circuit...); `retries`: attempts after the first; `give_ups`:
    calls that stopped retrying a retryable outcome (attempts, deadline, rule, budget);
    `fallbacks`: failed calls a fallback served (counted in `failures` too);
    `sleeps` and `sleep_seconds`: backoff sleeps between attempts, and `sleep_buckets` their
    count per upper bound of `sleep_bounds` (not cumulative); quota waits are in each
    quota's `QuotaCounters`. `breaker`: the state of the policy's circuit breaker as this
    process last saw it (None: it has none).
    """

    calls: int = 0
    successes: int = 0
    failures: int = 0
    retries: int = 0
    give_ups: int = 0
    fallbacks: int = 0
    sleeps: int = 0
    sleep_seconds: float = 0.0
    sleep_buckets: tuple[int, ...] = (0,) * len(SLEEP_BUCKETS)
    breaker: str | None = None  # "closed", "open", "half-open"; None: the policy has none
    sleep_bounds: ClassVar[tuple[float, ...]] = SLEEP_BUCKETS

    @property
    def in_flight(self) -> int:
        return max(self.calls - self.successes - self.failures, 0)

    @property
    def failure_rate(self) -> float:
        """Failures per ended call, 0 to 1 (0.0 before any call ended)."""
        ended = self.successes + self.failures
        return self.failures / ended if ended else 0.0


def peek_count(counter: itertools.count[int]) -> int:
    """The value `next(counter)` would give, read without taking it ("count(5)")."""
    return int(repr(counter)[6:-1])


class Tally:
    """One policy's live counts. `start()` and `succeed()` are lock-free."""

    __slots__ = (
        "_buckets",
        "_lock",
        "_started",
        "_succeeded",
        "failures",
        "fallbacks",
        "give_ups",
        "retries",
        "sleep_seconds",
        "sleeps",
        "start",
        "succeed",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._started = itertools.count()
        self._succeeded = itertools.count()
        # Called through the tally (never kept elsewhere): rebound here after a fork.
        self.start = self._started.__next__
        self.succeed = self._succeeded.__next__
        self.failures = self.retries = self.give_ups = self.fallbacks = self.sleeps = 0
        self.sleep_seconds = 0.0
        self._buckets = [0] * len(SLEEP_BUCKETS)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def fail(self) -> None:
        with self._lock:
            self.failures += 1

    def retry(self) -> None:
        with self._lock:
            self.retries += 1

    def give_up(self) -> None:
        with self._lock:
            self.give_ups += 1

    def fell_back(self) -> None:
        with self._lock:
            self.fallbacks += 1

    def slept(self, seconds: float) -> None:
        index = min(bisect.bisect_left(SLEEP_BUCKETS, seconds), len(SLEEP_BUCKETS) - 1)
        with self._lock:
            self.sleeps += 1
            self.sleep_seconds += seconds
            self._buckets[index] += 1

    def snapshot(self) -> PolicyStats:
        with self._lock:
            failures, retries, give_ups = self.failures, self.retries, self.give_ups
            fallbacks = self.fallbacks
            sleeps, seconds, buckets = self.sleeps, self.sleep_seconds, tuple(self._buckets)
        # Read in this order, each count no older than those it is compared with: a call
        # counted as ended was counted as started before.
        successes = peek_count(self._succeeded)
        return PolicyStats(
            calls=peek_count(self._started),
            successes=successes,
            failures=failures,
            retries=retries,
            give_ups=give_ups,
            fallbacks=fallbacks,
            sleeps=sleeps,
            sleep_seconds=seconds,
            sleep_buckets=buckets,
        )


class StatsBook(Book[Tally]):
    """The tallies of one registry's policies, by name."""

    def __init__(self) -> None:
        super().__init__(Tally)

    def snapshot(self, names: Iterable[str]) -> dict[str, PolicyStats]:
        """The stats of each policy of `names` (zeros for one not called yet), by name."""
        return {name: self.of(name).snapshot() for name in sorted(names)}
