"""Per-call options (cost, priority, blocking) and the pool key a call was given.

    with callpolicy.call_options(cost=1200, priority=10):
        client.messages(...)        # every @policy call inside the block sees them

Context variables, so they follow threads' and tasks' own contexts.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

CostFn = Callable[..., float]


@attrs.frozen
class Costing:
    """A decorated function's cost for weighted quotas: `cost` (a number, or a function of
    the call's arguments) before the call, `actual` (a function of its result) after it."""

    cost: float | CostFn | None = None
    actual: Callable[[Any], float] | None = None


# What a weighted quota reads to cost a call: the decorator's costing, the call's arguments.
CallArgs = tuple["Costing | None", tuple[Any, ...], dict[str, Any]]


@attrs.frozen
class CallOptions:
    cost: float | None = None  # the call's cost for weighted quotas (else the policy's)
    priority: int = 0  # waiters with a higher priority go first
    blocking: bool = True  # False: never wait for quota, raise QuotaExceeded at once


DEFAULT = CallOptions()
_options: contextvars.ContextVar[CallOptions] = contextvars.ContextVar(
    "callpolicy_options", default=DEFAULT
)
_pool_keys: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "callpolicy_pool_keys", default=None
)


@contextmanager
def call_options(
    *, cost: float | None = None, priority: int | None = None, blocking: bool | None = None
) -> Iterator[CallOptions]:
    """Set options for the @policy calls made inside the block (nested blocks add up)."""
    current = _options.get()
    if cost is not None and (
        isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost < math.inf
    ):
        raise ValueError(f"cost must be a finite number >= 0 (got {cost!r})")
    chosen = CallOptions(
        cost=current.cost if cost is None else cost,
        priority=current.priority if priority is None else priority,
        blocking=current.blocking if blocking is None else blocking,
    )
    token = _options.set(chosen)
    try:
        yield chosen
    finally:
        _options.reset(token)


def current_options() -> CallOptions:
    return _options.get()


def pool_key(pool: str) -> str:
    """The member of key pool `pool` ("anthropic.keys") that admitted the current attempt,
    e.g. "anthropic.key_a". Call it inside the decorated function."""
    keys = _pool_keys.get()
    if keys is None or pool not in keys:
        raise LookupError(f"no key of pool {pool!r} was taken by the current call")
    return keys[pool]


PoolToken = contextvars.Token[dict[str, str] | None]


def set_pool_key(pool: str, member: str) -> PoolToken:
    keys = dict(_pool_keys.get() or {})
    keys[pool] = member
    return _pool_keys.set(keys)


def reset_pool_key(token: PoolToken) -> None:
    _pool_keys.reset(token)
