"""A fallback used: the event, its log line, the hooks receiving it, and `last_fallback()`.

The result a fallback serves is returned as it is (the type the caller expects), so how a
caller learns that it came from the fallback is outside it: hooks get a `FallbackEvent` for
every use; the log says it at WARNING, at most once a minute per policy, kind and source;
and `last_fallback()` returns the event of the latest call, in the current thread or task,
of a policy that has a fallback (None when that call's result was its own).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Literal

import attrs

from callpolicy._text import Throttled

logger = logging.getLogger("callpolicy")
FallbackSource = Literal["last_good", "call"]
FallbackHook = Callable[["FallbackEvent"], None]
_hooks: list[FallbackHook] = []
_hook_failures = Throttled(60.0)
_said = Throttled(60.0)
_used: contextvars.ContextVar[FallbackEvent | None] = contextvars.ContextVar(
    "callpolicy_fallback", default=None
)


@attrs.frozen
class FallbackEvent:
    """A call of `policy` gave up with `error` (a give-up of `kind`: "retries", "quota",
    "account" or "circuit"), and its fallback served instead: the last good result for the
    same arguments, `age` seconds old (`source` "last_good"), or what the function
    `function` returns (`source` "call"; the event comes before it is called)."""

    policy: str
    kind: str
    source: FallbackSource
    error: BaseException = attrs.field(repr=False)
    cause: str  # the error in words: "HTTPError: 429 Client Error (HTTP 429)"
    age: float | None = None
    function: str | None = None

    def message(self) -> str:
        if self.source == "last_good":
            served = f"served the last good result for these arguments, {self.age:.3f}s old"
        else:
            served = f"calling the fallback {self.function}"
        return f"{self.policy}: gave up ({self.kind}: {self.cause}); {served} (fallback)"


def add_fallback_hook(hook: FallbackHook) -> Callable[[], None]:
    """Call `hook(event)` whenever a policy's fallback serves a call that gave up; returns
    a function removing it. A hook never changes what the call returns or raises."""
    _hooks.append(hook)

    def remove() -> None:
        if hook in _hooks:
            _hooks.remove(hook)

    return remove


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
        (event.policy, event.kind, event.source),
        "%s (said at most once a minute per policy and kind)",
        event.message(),
        policy=event.policy,
        fallback_kind=event.kind,
        fallback_source=event.source,
    )
    for hook in tuple(_hooks):
        try:
            hook(event)
        except Exception as error:  # a hook never changes what the call returns or raises
            _hook_failures.warn(
                (id(hook), getattr(hook, "__qualname__", None), type(error)),
                "fallback hook %r raised %s: %s (ignored; said at most once a minute per hook)",
                getattr(hook, "__qualname__", hook),
                type(error).__name__,
                error,
                policy=event.policy,
            )


def renote(event: FallbackEvent) -> None:
    """After the fallback function returned: it may have made calls of its own."""
    _used.set(event)
