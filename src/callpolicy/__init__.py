"""callpolicy: retry, wait, stop and quota rules for API calls, declared in TOML policy files.

from callpolicy import policy

@policy("spotify.tracks")
def track(track_id): ...
"""

from __future__ import annotations

import typing

from callpolicy._config import PathLike
from callpolicy._engine.deadline import time_left
from callpolicy._engine.fallback_used import FallbackEvent, last_fallback
from callpolicy._errors import (
    AccountLimit,
    AttemptTimeout,
    CallPolicyError,
    CircuitOpen,
    PolicyError,
    Problem,
    QuotaExceeded,
    QuotaUnavailable,
    RetryExhausted,
)
from callpolicy._events import (
    AttemptEnded,
    AttemptStarted,
    CallEnded,
    Event,
    GaveUp,
    QuotaRefused,
    SleepEvent,
    add_hook,
    add_sleep_hook,
)
from callpolicy._model import (
    Adapt,
    Breaker,
    Budget,
    Fallback,
    Learn,
    Pause,
    Policy,
    Quota,
    Rate,
    ResultCondition,
    Retry,
    RetryRule,
    Stop,
    Storage,
    Wait,
)
from callpolicy._options import CallOptions, call_options, pool_key
from callpolicy._quotas import QuotaCounters
from callpolicy._registry import Registry, default_registry, policy
from callpolicy._stats import PolicyStats
from callpolicy.testing import FakeClock, fake_time

__version__ = "0.1.0"


def load(*paths: PathLike) -> Registry:
    """Load policy files into the default registry, atomically; with no paths, from
    `CALLPOLICY_PATH` or `./policies`. Raises `PolicyError` listing every problem, and then
    the policies loaded before stay in force."""
    return default_registry.load(*paths)


def quota_counters() -> dict[str, QuotaCounters]:
    """What each quota of the default registry did in this process, by quota name: attempts
    admitted, refused, waited (and seconds waited), failed open, failed closed, and admitted
    by `local_limit` while Redis was away. For metrics; see `QuotaCounters`."""
    return default_registry.quota_counters()


def policy_stats() -> dict[str, PolicyStats]:
    """What each policy of the default registry did in this process, by policy name: calls,
    successes, failures, retries, give-ups, backoff sleeps and the failure rate."""
    return default_registry.stats()


def prometheus_collector(
    registry: Registry | None = None, prefix: str = "callpolicy"
) -> typing.Any:
    """A Prometheus collector of `registry`'s statistics (the default registry's by default),
    its metrics named `<prefix>_...`:
    `prometheus_client.REGISTRY.register(callpolicy.prometheus_collector())`. Needs the
    `prometheus` extra (prometheus-client)."""
    from callpolicy._metrics.prometheus import PolicyCollector  # noqa: PLC0415 (an extra)

    return PolicyCollector(default_registry if registry is None else registry, prefix)


def opentelemetry_hook(
    tracer_provider: typing.Any = None, meter_provider: typing.Any = None
) -> typing.Any:
    """A hook making a span per call (with an event per attempt, sleep and give-up) and
    metrics: `callpolicy.add_hook(callpolicy.opentelemetry_hook())`. Needs the
    `opentelemetry` extra (opentelemetry-api)."""
    from callpolicy._metrics.otel import OpenTelemetryHook  # noqa: PLC0415 (an extra)

    return OpenTelemetryHook(tracer_provider, meter_provider)


__all__ = [
    "AccountLimit",
    "Adapt",
    "AttemptEnded",
    "AttemptStarted",
    "AttemptTimeout",
    "Breaker",
    "Budget",
    "CallEnded",
    "CallOptions",
    "CallPolicyError",
    "CircuitOpen",
    "Event",
    "FakeClock",
    "Fallback",
    "FallbackEvent",
    "GaveUp",
    "Learn",
    "Pause",
    "Policy",
    "PolicyError",
    "PolicyStats",
    "Problem",
    "Quota",
    "QuotaCounters",
    "QuotaExceeded",
    "QuotaRefused",
    "QuotaUnavailable",
    "Rate",
    "Registry",
    "ResultCondition",
    "Retry",
    "RetryExhausted",
    "RetryRule",
    "SleepEvent",
    "Stop",
    "Storage",
    "Wait",
    "add_hook",
    "add_sleep_hook",
    "call_options",
    "default_registry",
    "fake_time",
    "last_fallback",
    "load",
    "opentelemetry_hook",
    "policy",
    "policy_stats",
    "pool_key",
    "prometheus_collector",
    "quota_counters",
    "time_left",
]
