"""The events besides sleeps (sleep.py): attempts starting and ending, a call ending or
giving up, quota refusals, breaker and budget state changes, fallbacks used.

Every event has a `kind` (what hooks subscribe to), the `policy`, the `attempt` it happened
in and the `call_id` of its call (0 when no hook traces calls). Those that are logged say so
with a `message()` and a `level`; the others are for hooks only (`message()` is None).
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import attrs

from callpolicy._events.trace import current_attempt, current_call_id, current_trace

EventKind = Literal[
    "attempt_start",
    "attempt_end",
    "sleep",
    "give_up",
    "call_end",
    "quota_refused",
    "breaker",
    "budget",
    "fallback",
]
EVENT_KINDS: tuple[str, ...] = EventKind.__args__  # type: ignore[attr-defined]


@attrs.frozen
class _Quiet:
    """An event only hooks see: not logged."""

    level: ClassVar[int] = logging.DEBUG

    def message(self) -> str | None:
        return None

    def extra(self) -> dict[str, object]:
        return {}


@attrs.frozen
class AttemptStarted(_Quiet):
    """An attempt begins, before it takes its quotas."""

    policy: str
    attempt: int
    call_id: int = attrs.field(factory=current_call_id, kw_only=True)
    kind: ClassVar[str] = "attempt_start"


@attrs.frozen
class AttemptEnded(_Quiet):
    """An attempt's call returned (`failed` False, whatever the value) or raised; `outcome`
    says what: "returned" or the error ("ConnectionError: refused"). `retried`: its outcome
    calls for another attempt (which the stop, the budget or the breaker may yet refuse)."""

    policy: str
    attempt: int
    seconds: float
    failed: bool
    outcome: str
    retried: bool
    call_id: int = attrs.field(factory=current_call_id, kw_only=True)
    kind: ClassVar[str] = "attempt_end"


@attrs.frozen
class CallEnded(_Quiet):
    """A call is over: returned (`failed` False) or raised `error` (its type and message),
    after `attempts` attempts and `seconds` in all."""

    policy: str
    attempt: int
    seconds: float
    failed: bool
    error: str | None = None
    call_id: int = attrs.field(factory=current_call_id, kw_only=True)
    kind: ClassVar[str] = "call_end"


@attrs.frozen
class GaveUp(_Quiet):
    """The call gives up after `attempt`, the last that ran (`reason`: "stop" for its
    attempts or deadline, "rule <name>", "quota", "not repeatable", "hint above its cap"),
    with `error` (the outcome, described), which it raises."""

    policy: str
    attempt: int
    reason: str
    error: str
    call_id: int = attrs.field(factory=current_call_id, kw_only=True)
    kind: ClassVar[str] = "give_up"


@attrs.frozen
class QuotaRefused(_Quiet):
    """A quota refused an attempt with QuotaExceeded (`reason`: "max_wait", "deadline",
    "cost", "non-blocking")."""

    policy: str
    attempt: int
    quota: str
    reason: str
    call_id: int = attrs.field(factory=current_call_id, kw_only=True)
    kind: ClassVar[str] = "quota_refused"


def _caller() -> str:
    """The policy whose traced call is in progress here ("" when none is traced)."""
    trace = current_trace()
    return "" if trace is None else trace.policy


@attrs.frozen
class BreakerChanged:
    """Circuit breaker `breaker` changed to `state` ("open", "half-open", "closed") because
    `why`. `policy` and `attempt`: the traced call that changed it ("" and 0 otherwise; a
    breaker is shared by the policies naming it). Logged: open at WARNING, else INFO."""

    breaker: str
    state: str
    why: str
    policy: str = attrs.field(factory=_caller, kw_only=True)
    attempt: int = attrs.field(factory=current_attempt, kw_only=True)
    call_id: int = attrs.field(factory=current_call_id, kw_only=True)
    kind: ClassVar[str] = "breaker"

    @property
    def level(self) -> int:
        return logging.WARNING if self.state == "open" else logging.INFO

    def message(self) -> str:
        return f"circuit breaker {self.breaker} {self.state}: {self.why}"

    def extra(self) -> dict[str, object]:
        return {"breaker": self.breaker, "breaker_state": self.state, "policy": self.policy}


@attrs.frozen
class BudgetChanged:
    """Retry budget `budget` ran out of retries (`exhausted`) or has them again, with
    `tokens` of `max_tokens` left. `policy`, `attempt`: as for `BreakerChanged`."""

    budget: str
    exhausted: bool
    tokens: float
    max_tokens: int
    policy: str = attrs.field(factory=_caller, kw_only=True)
    attempt: int = attrs.field(factory=current_attempt, kw_only=True)
    call_id: int = attrs.field(factory=current_call_id, kw_only=True)
    kind: ClassVar[str] = "budget"

    @property
    def level(self) -> int:
        return logging.WARNING if self.exhausted else logging.INFO

    def message(self) -> str:
        if self.exhausted:
            return (
                f"retry budget {self.budget} exhausted: {self.tokens:.1f} of {self.max_tokens} "
                f"tokens left (retries go above {self.max_tokens / 2:g}); first attempts "
                "still go, retries fail fast"
            )
        return (
            f"retry budget {self.budget} available again: {self.tokens:.1f} of "
            f"{self.max_tokens} tokens"
        )

    def extra(self) -> dict[str, object]:
        return {"budget": self.budget, "policy": self.policy}
