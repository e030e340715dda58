"""A fallback used: the event, its log line, the hooks receiving it, and `last_fallback()`.

The result a fallback serves is returned as it is (the type the caller expects), so how a
caller learns that it came from the fallback is outside it: hooks of the "fallback" kind get
a `FallbackEvent` for every use; the log says it at WARNING, at most once a minute per
policy, give-up and source; and `last_fallback()` returns the event of the latest call, in
the current thread or task, of a policy that has a fallback, to end (None when that call's
outcome was its own). Each such call sets it when it ends, so a call that returned its own
result after nested calls served theirs reports None; a task (gather, create_task) reports
only the calls it ran itself, never what it inherited from the task that started it.

While a policy's fallback function runs, the policy is marked serving in the context: a
call of the same policy inside it that gives up raises its give-up rather than call the
fallback again (a fallback that calls its own decorated function would recurse forever).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import ClassVar, Literal

import attrs

from callpolicy._events import emit
from callpolicy._events.trace import current_attempt, current_call_id
from callpolicy._text import Throttled

FallbackSource = Literal["last_good", "call"]
_said = Throttled(60.0)
# The latest call's use, and the task that made the call (None outside asyncio).
_used: contextvars.ContextVar[tuple[object, FallbackEvent] | None] = contextvars.ContextVar(
    "callpolicy_fallback", default=None
)
_serving: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "callpolicy_fallback_serving", default=frozenset()
)


@attrs.frozen
class FallbackEvent:
    """A call of `policy` gave up with `error` (a give-up of kind `give_up`: "retries",
    "quota", "account" or "circuit"), and its fallback served instead: the last good result
    for the same arguments, `age` seconds old (`source` "last_good"), or what the function
    `function` returns (`source` "call"; the event comes before it is called). `attempt`:
    the call's last attempt when hooks trace calls (0 otherwise)."""

    policy: str
    give_up: str
    source: FallbackSource
    error: BaseException = attrs.field(repr=False)
    cause: str  # the error in words: "HTTPError: 429 Client Error (HTTP 429)"
    age: float | None = None
    function: str | None = None
    attempt: int = attrs.field(factory=current_attempt, kw_only=True)
    call_id: int = attrs.field(factory=current_call_id, kw_only=True)
    kind: ClassVar[str] = "fallback"
    level: ClassVar[int] = logging.WARNING

    def message(self) -> str | None:
        return None  # said here, rate-limited (see note), not by every event

    def extra(self) -> dict[str, object]:
        return {}

    def describe(self) -> str:
        if self.source == "last_good":
            served = f"served the last good result for these arguments, {self.age:.3f}s old"
        else:
            served = f"calling the fallback {self.function}"
        return f"{self.policy}: gave up ({self.give_up}: {self.cause}); {served} (fallback)"


def last_fallback() -> FallbackEvent | None:
    """The fallback that served the latest call to end, in this thread or task, of a policy
    with a fallback; None if that call returned (or raised) its own outcome, or if there was
    none. Inside a fallback function, the use in progress (its `error` is the give-up)."""
    used = _used.get()
    if used is None or used[0] is not _task():
        return None  # none, or inherited from the task that started this one
    return used[1]


def _task() -> object:
    loop = asyncio._get_running_loop()
    return None if loop is None else asyncio.current_task(loop)


def settle(event: FallbackEvent | None) -> None:
    """A call of a policy with a fallback ends (`event`: the use that served it, if any)."""
    if event is not None:
        _used.set((_task(), event))
    elif _used.get() is not None:
        _used.set(None)


def note(event: FallbackEvent) -> None:
    """A fallback serves: for `last_fallback()`, the log and the hooks."""
    settle(event)
    _said.warn(
        (event.policy, event.give_up, event.source),
        "%s (said at most once a minute per policy and kind)",
        event.describe(),
        policy=event.policy,
        fallback_kind=event.give_up,
        fallback_source=event.source,
    )
    emit(event)  # to the hooks of the "fallback" kind


def serving(policy: str) -> bool:
    """Whether `policy`'s fallback function is running in this context."""
    return policy in _serving.get()


def enter(policy: str) -> contextvars.Token[frozenset[str]]:
    """`policy`'s fallback function starts (`leave` with the token when it ends)."""
    return _serving.set(_serving.get() | {policy})


def leave(token: contextvars.Token[frozenset[str]]) -> None:
    _serving.reset(token)
