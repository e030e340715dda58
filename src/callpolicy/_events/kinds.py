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

from callpolicy._events.trace import current_call_id

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
