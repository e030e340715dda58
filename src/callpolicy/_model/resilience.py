"""The policy model's resilience layers: a circuit breaker (`Breaker`) and a retry budget
(`Budget`), each per policy (an inline table) or shared by name (`[breakers.x]`,
`[budgets.x]`), with their defaults and bounds.

Defaults: the breaker's follow resilience4j's CircuitBreaker (failure ratio 50%, slow-call
ratio 100% of calls over 60 s, a window of the last 100 calls) except where a client library
wants it to act sooner: 20 calls at least (resilience4j: 100), 30 s open (60 s) and 3 probes
(10). The budget is gRPC's retry throttling (gRFC A6), with 100 tokens and 0.1 per success.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from callpolicy._model.quotas import Storage, _storage

BREAKER_STATES = ("closed", "open", "half-open")
MAX_WINDOW_CALLS = 100_000  # a count window keeps one byte per call
MAX_PROBES = 1000
MAX_BUDGET_TOKENS = 1000  # gRFC A6: max_tokens in (0, 1000]
TOKEN_SCALE = 1000  # token_ratio has at most 3 decimals (gRFC A6): counted in thousandths
TIME_BUCKETS = 10  # a time window moves a tenth of its length at a time


@attrs.frozen
class Breaker:
    """A circuit breaker: opens when, over its window (the last `window_calls` calls, or
    those of the last `window_seconds`), at least `min_calls` were recorded and the share
    of failures reaches `failure_ratio` or the share of calls slower than `slow_call`
    reaches `slow_call_ratio`. Open, it refuses every attempt for `open_for` seconds, then
    lets `probes` trial attempts through (half-open): all succeed, it closes; one fails, it
    opens again. What counts as a failure: `on_exceptions` and `on_status` when either is
    set (`judged` is True), else what the policy retries on."""

    name: str
    failure_ratio: float = attrs.field(default=0.5, validator=[v.gt(0), v.le(1)])
    slow_call_ratio: float = attrs.field(default=1.0, validator=[v.gt(0), v.le(1)])
    slow_call: float = attrs.field(default=60.0, validator=v.gt(0))
    window_calls: int | None = 100  # 1 to MAX_WINDOW_CALLS, checked below
    window_seconds: float | None = attrs.field(default=None, validator=v.optional(v.gt(0)))
    min_calls: int = attrs.field(default=20, validator=v.ge(1))
    open_for: float = attrs.field(default=30.0, validator=v.gt(0))
    probes: int = attrs.field(default=3, validator=[v.ge(1), v.le(MAX_PROBES)])
    on_exceptions: tuple[type[Exception], ...] = ()
    on_status: frozenset[int] = frozenset()
    judged: bool = False  # on_exceptions or on_status set: they alone say what failed
    storage: Storage = attrs.field(default=Storage(), converter=_storage)

    @property
    def least_calls(self) -> int:
        """min_calls, at most a count window's size (as resilience4j: else it never opens)."""
        size = self.window_calls
        return self.min_calls if size is None else min(self.min_calls, size)

    def __attrs_post_init__(self) -> None:
        if (self.window_calls is None) == (self.window_seconds is None):
            raise ValueError("a Breaker has either window_calls or window_seconds")
        if self.window_calls is not None and not 1 <= self.window_calls <= MAX_WINDOW_CALLS:
            raise ValueError(
                f"'window_calls' must be 1 to {MAX_WINDOW_CALLS} (got {self.window_calls!r})"
            )


@attrs.frozen
class Budget:
    """A retry budget, gRPC's retry throttling (gRFC A6): a bucket of `max_tokens` that
    starts full; every attempt whose outcome the policy retries on takes 1 token, every call
    that succeeds gives `token_ratio` back; retries go only while more than half the tokens
    are left. First attempts always go."""

    name: str
    max_tokens: int = attrs.field(default=100, validator=[v.ge(1), v.le(MAX_BUDGET_TOKENS)])
    token_ratio: float = attrs.field(default=0.1, validator=[v.gt(0), v.le(1)])
