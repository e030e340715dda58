"""A Prometheus collector of a registry's statistics (`prometheus-client`, the `prometheus`
extra).

It reads `Registry.stats()` and `Registry.quota_counters()` when scraped, so calls pay
nothing for it (no hook, no per-call metric update): the counts are the ones the runner keeps
anyway, lock-free on the success path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as missing:  # imported only when asked for: say what to install
    raise ImportError(
        "callpolicy's Prometheus collector needs prometheus-client: "
        "pip install 'callpolicy[prometheus]'"
    ) from missing

from callpolicy._model import BREAKER_STATES
from callpolicy._stats import SLEEP_BUCKETS

if TYPE_CHECKING:
    from callpolicy._registry import Registry


class PolicyCollector:
    """Registers with `prometheus_client.REGISTRY.register(collector)` (or any registry)."""

    def __init__(self, registry: Registry, prefix: str = "callpolicy") -> None:
        self.registry = registry
        self.prefix = prefix

    def describe(self) -> list[Metric]:
        """The families without samples: lets prometheus_client refuse a second collector
        of the same names in one registry (two callpolicy registries: give each a prefix)."""
        return [*self._families(), *self._quota_families().values()]

    def collect(self) -> Iterator[Metric]:
        if not self.registry.loaded():
            # A lazy registry before its first call: nothing to say, and a scrape must not
            # load policy files (nor fail the application's other metrics).
            return
        yield from self._policies()
        yield from self._quotas()

    def _families(self) -> tuple[Any, ...]:  # the *MetricFamily classes (add_metric)
        p = self.prefix
        calls = CounterMetricFamily(
            f"{p}_calls", "Calls ended, by outcome", labels=["policy", "outcome"]
        )
        attempts = CounterMetricFamily(f"{p}_attempts", "Attempts started", labels=["policy"])
        retries = CounterMetricFamily(f"{p}_retries", "Attempts after the first", labels=["policy"])
        give_ups = CounterMetricFamily(
            f"{p}_give_ups", "Calls that stopped retrying a retryable outcome", labels=["policy"]
        )
        fallbacks = CounterMetricFamily(
            f"{p}_fallbacks", "Failed calls a fallback served", labels=["policy"]
        )
        in_flight = GaugeMetricFamily(f"{p}_in_flight", "Calls in progress", labels=["policy"])
        sleeps = HistogramMetricFamily(
            f"{p}_sleep_seconds", "Backoff sleeps between attempts", labels=["policy"], unit=""
        )
        breakers = GaugeMetricFamily(
            f"{p}_breaker_state",
            "1 for the state each policy's circuit breaker is in (as this process saw it)",
            labels=["policy", "state"],
        )
        return (calls, attempts, retries, give_ups, fallbacks, in_flight, sleeps, breakers)

    def _policies(self) -> Iterator[Metric]:
        families = self._families()
        calls, attempts, retries, give_ups, fallbacks, in_flight, sleeps, breakers = families
        for name, stats in self.registry.stats().items():
            calls.add_metric([name, "success"], stats.successes)
            calls.add_metric([name, "failure"], stats.failures)
            attempts.add_metric([name], stats.calls + stats.retries)
            retries.add_metric([name], stats.retries)
            give_ups.add_metric([name], stats.give_ups)
            fallbacks.add_metric([name], stats.fallbacks)
            in_flight.add_metric([name], stats.in_flight)
            cumulative, running = [], 0
            for bound, count in zip(SLEEP_BUCKETS, stats.sleep_buckets, strict=True):
                running += count
                cumulative.append((_le(bound), running))
            sleeps.add_metric([name], cumulative, stats.sleep_seconds)
            if stats.breaker is not None:
                for state in BREAKER_STATES:
                    breakers.add_metric([name, state], float(state == stats.breaker))
        yield from families

    def _quota_families(self) -> dict[str, Any]:
        p = self.prefix
        return {
            "admitted": CounterMetricFamily(
                f"{p}_quota_admitted", "Attempts admitted", labels=["quota"]
            ),
            "refused": CounterMetricFamily(
                f"{p}_quota_refused", "Attempts refused (QuotaExceeded)", labels=["quota"]
            ),
            "waited": CounterMetricFamily(
                f"{p}_quota_waits", "Attempts that waited", labels=["quota"]
            ),
            "waited_seconds": CounterMetricFamily(
                f"{p}_quota_wait_seconds", "Seconds attempts waited", labels=["quota"]
            ),
            "cuts": CounterMetricFamily(
                f"{p}_quota_cuts", "Congestion events that cut an adaptive rate", labels=["quota"]
            ),
            "learned": GaugeMetricFamily(
                f"{p}_quota_learned_per_second",
                "The limit a quota learned or adapted to, in calls per second (once it has one)",
                labels=["quota"],
            ),
        }

    def _quotas(self) -> Iterator[Metric]:
        families = self._quota_families()
        learned = families.pop("learned")
        for quota, counts in self.registry.quota_counters().items():
            for field, family in families.items():
                family.add_metric([quota], getattr(counts, field))
            if counts.learned is not None:
                learned.add_metric([quota], counts.learned.calls / counts.learned.period)
        families["learned"] = learned
        yield from families.values()


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
