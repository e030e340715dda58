"""A fallback used: the event, its log line, the hooks receiving it, and `last_fallback()`.

The result a fallback serves is returned as it is (the type the caller expects), so how a
caller learns that it came from the fallback is outside it: hooks of the "fallback" kind get
a `FallbackEvent` for every use; the log says it at WARNING, at most once a minute per
policy, give-up and source; and `last_fallback()` returns the event of the latest call, in
the current thread or task, of a policy that has a fallback (None when that call's result
was its own).
"""

from __future__ import annotations

import contextvars
import logging
from typing import ClassVar, Literal

import attrs

from callpolicy._events import emit
from callpolicy._events.trace import current_attempt, current_call_id
from callpolicy._text import Throttled

FallbackSource = Literal["last_good", "call"]
_said = Throttled(60.0)
_used: contextvars.ContextVar[FallbackEvent | None] = contextvars.ContextVar(
    "callpolicy_fallback", default=None
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
    """The fallback that served the latest call, in this thread or task, of a policy with a
    fallback; None if that call returned (or raised) its own outcome, or if there was none.
    Inside a fallback function, the use in progress (its `error` is the give-up)."""
    return _used.get()


def forget() -> None:
    """A call of a policy with a fallback starts: the previous call's use is no longer news."""
    if _used.get() is not None:
        _used.set(None)


def note(event: FallbackEvent) -> None:
    """A fallback serves: for `last_fallback()`, the log and the hooks."""
    _used.set(event)
    _said.warn(
        (event.policy, event.give_up, event.source),
        "%s (said at most once a minute per policy and kind)",
        event.describe(),
        policy=event.policy,
        fallback_kind=event.give_up,
        fallback_source=event.source,
    )
    emit(event)  # to the hooks of the "fallback" kind


def renote(event: FallbackEvent) -> None:
    """After the fallback function returned: it may have made calls of its own."""
    _used.set(event)
