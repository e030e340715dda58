"""callpolicy: retry, wait, stop and quota rules for API calls, declared in TOML policy files.

from callpolicy import policy

@policy("spotify.tracks")
def track(track_id): ...
"""

from __future__ import annotations

from callpolicy._config import PathLike
from callpolicy._errors import (
    AccountLimit,
    CallPolicyError,
    PolicyError,
    Problem,
    QuotaExceeded,
    QuotaUnavailable,
    RetryExhausted,
)
from callpolicy._events import SleepEvent, add_sleep_hook
from callpolicy._model import (
    Adapt,
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


__all__ = [
    "AccountLimit",
    "Adapt",
    "CallOptions",
    "CallPolicyError",
    "FakeClock",
    "Learn",
    "Pause",
    "Policy",
    "PolicyError",
    "Problem",
    "Quota",
    "QuotaCounters",
    "QuotaExceeded",
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
    "add_sleep_hook",
    "call_options",
    "default_registry",
    "fake_time",
    "load",
    "policy",
    "pool_key",
    "quota_counters",
]
