"""callpolicy: retry, wait, stop and quota rules for API calls, declared in TOML policy files.

from callpolicy import policy

@policy("spotify.tracks")
def track(track_id): ...
"""

from __future__ import annotations

from callpolicy.decorator import policy
from callpolicy.errors import (
    AccountLimit,
    PolicyError,
    Problem,
    QuotaExceeded,
    QuotaUnavailable,
    RetryExhausted,
)
from callpolicy.events import SleepEvent, add_sleep_hook
from callpolicy.loader import PathLike
from callpolicy.model import Policy, Quota, ResultCondition, Retry, Stop, Wait
from callpolicy.options import CallOptions, call_options, pool_key
from callpolicy.registry import Registry, default_registry
from callpolicy.testing import FakeClock, fake_time


def load(*paths: PathLike) -> Registry:
    """Load policy files into the default registry, atomically; with no paths, from
    `CALLPOLICY_PATH` or `./policies`. Raises `PolicyError` listing every problem, and then
    the policies loaded before stay in force."""
    return default_registry.load(*paths)


__all__ = [
    "AccountLimit",
    "CallOptions",
    "FakeClock",
    "Policy",
    "PolicyError",
    "Problem",
    "Quota",
    "QuotaExceeded",
    "QuotaUnavailable",
    "Registry",
    "ResultCondition",
    "Retry",
    "RetryExhausted",
    "SleepEvent",
    "Stop",
    "Wait",
    "add_sleep_hook",
    "call_options",
    "default_registry",
    "fake_time",
    "load",
    "policy",
    "pool_key",
]
