"""The policy model's fallback: what a call that gives up serves instead of raising.

A fallback is the outermost layer of a call (see docs/policies.md, "Fallbacks"): it sees
only the error the call ended with, and acts only when that error is a give-up of this
policy, of one of the kinds `on` lists.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import attrs
from attrs import validators as v

# The give-ups a fallback may stand in for: retries exhausted (`RetryExhausted`, or the last
# error raised again after the retries gave up, at the deadline included), a quota that
# would not admit the call in time (`QuotaExceeded`), an account limit (`AccountLimit`), an
# open circuit breaker (`CircuitOpen`).
FALLBACK_ON: tuple[str, ...] = ("retries", "quota", "account", "circuit")
# An account limit is off by default: someone must act on it (pay, raise the limit), and a
# fallback served in silence would hide that; name it in `on` to serve one all the same.
DEFAULT_FALLBACK_ON: frozenset[str] = frozenset({"retries", "quota", "circuit"})
DEFAULT_MAX_ENTRIES = 1000
MAX_ENTRIES = 1_000_000
FallbackSource = str  # "last_good" or "call"
KeyFunction = Callable[..., Hashable]


@attrs.frozen
class Fallback:
    """What a call serves when it gives up: the last good result for the same arguments, at
    most `last_good` seconds old (`max_entries` kept, least recently used dropped first,
    keyed by `key(*args, **kwargs)` or by the arguments themselves), else what `call`
    (called with the call's own arguments) returns. At least one of the two is given.
    `call_name` and `key_name`: the dotted paths the file named the functions by."""

    call: Callable[..., Any] | None = None
    last_good: float | None = attrs.field(default=None, validator=v.optional(v.gt(0)))
    max_entries: int = attrs.field(
        default=DEFAULT_MAX_ENTRIES, validator=[v.ge(1), v.le(MAX_ENTRIES)]
    )
    key: KeyFunction | None = None
    on: frozenset[str] = attrs.field(
        default=DEFAULT_FALLBACK_ON,
        converter=frozenset,
        validator=v.deep_iterable(v.in_(FALLBACK_ON)),
    )
    call_name: str | None = None
    key_name: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.call is None and self.last_good is None:
            raise ValueError("a fallback needs 'call' or 'last_good' (or both)")
        if not self.on:
            raise ValueError(f"'on' must name at least one of {', '.join(FALLBACK_ON)}")
