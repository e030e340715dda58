"""Which call an event belongs to: each call gets an id while calls are traced (a hook of
a per-call kind is registered, see hub.py).

The id is kept in a context variable for the duration of the call (its thread, or its task),
so every event raised on the way (a quota wait deep in a storage, a breaker changing state)
carries it without being handed it. Untraced, nothing is set, and events carry 0. A hook
may ask to be told when the call is over (`at_end`), whether or not it is still registered.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextvars import ContextVar

from callpolicy._clock import CLOCK
from callpolicy._text import Throttled

_finalizer_failures = Throttled(60.0)


class Trace:
    """One call in progress, as hooks follow it: its id, and its attempt in progress."""

    __slots__ = ("attempt", "attempt_started", "call_id", "finalizers", "policy", "started")

    def __init__(self, policy: str, call_id: int) -> None:
        self.policy = policy
        self.call_id = call_id
        self.started = CLOCK.now()
        self.attempt = 1
        self.attempt_started: float | None = self.started  # None: between attempts
        self.finalizers: list[Callable[[], None]] | None = None

    def begin(self, attempt: int) -> None:
        self.attempt = attempt
        self.attempt_started = CLOCK.now()

    def at_end(self, finalizer: Callable[[], None]) -> None:
        """Call `finalizer()` when the call is over, in its thread or task (after its last
        event): a hook's clean-up that must not depend on the hook still being registered."""
        if self.finalizers is None:
            self.finalizers = []
        self.finalizers.append(finalizer)

    def finish(self) -> None:
        for finalizer in self.finalizers or ():
            try:
                finalizer()
            except Exception as error:  # a hook's clean-up never changes the call's outcome
                _finalizer_failures.warn(
                    (type(error), getattr(finalizer, "__qualname__", None)),
                    "a hook's end-of-call clean-up raised %s: %s (ignored)",
                    type(error).__name__,
                    error,
                    policy=self.policy,
                )

    def end(self) -> float | None:
        """The attempt in progress is over: its length (None: none was in progress)."""
        started, self.attempt_started = self.attempt_started, None
        return None if started is None else CLOCK.now() - started


_ids = itertools.count(1)
CURRENT: ContextVar[Trace | None] = ContextVar("callpolicy_call", default=None)


def new_trace(policy: str) -> Trace:
    return Trace(policy, next(_ids))


def current_trace() -> Trace | None:
    return CURRENT.get()


def current_call_id() -> int:
    """The id of the call in progress in this thread or task; 0 when none is traced."""
    trace = CURRENT.get()
    return 0 if trace is None else trace.call_id


def current_attempt() -> int:
    """The attempt in progress of the call traced in this thread or task; 0 when none is."""
    trace = CURRENT.get()
    return 0 if trace is None else trace.attempt
