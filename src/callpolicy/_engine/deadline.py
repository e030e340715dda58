"""Deadline propagation and attempt timeouts.

While an attempt of a policy that declares `stop.deadline` or `stop.attempt_timeout` runs,
a context variable holds when it must end, on the clock policies use: the earliest of the
call's deadline, the attempt's timeout and the deadline of any decorated call it is nested
in. `time_left()` reads it, so a sync HTTP client can be given the time left as its own
timeout (as gRPC propagates deadlines). A coroutine's attempt is also cancelled when its
time is up, and `AttemptTimeout` is raised in its place. The variable is set only for the
policies that declare one of the two keys: other policies' calls never touch it.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from callpolicy._clock import CLOCK
from callpolicy._errors import AttemptTimeout
from callpolicy._model import Stop

_ends_at: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "callpolicy_ends_at", default=None
)


def time_left() -> float | None:
    """Seconds left before the current attempt must end (its call's `stop.deadline`, its
    `stop.attempt_timeout`, and those of the decorated calls it runs in: the earliest),
    never below 0; None outside a decorated call, or when no policy it runs under declares
    either key."""
    ends_at = _ends_at.get()
    return None if ends_at is None else max(0.0, ends_at - CLOCK.now())


class Timing:
    """A policy's deadline and attempt timeout, applied to each attempt of its calls."""

    def __init__(self, policy: str, stop: Stop) -> None:
        self.policy = policy
        self.attempt_timeout = stop.attempt_timeout

    @classmethod
    def of(cls, policy: str, stop: Stop) -> Timing | None:
        """The timing of a policy; None when it declares neither key (nothing to do)."""
        if stop.deadline is None and stop.attempt_timeout is None:
            return None
        return cls(policy, stop)

    def _ends_at(self, deadline_at: float | None) -> tuple[float | None, bool]:
        """When an attempt starting now must end, and whether a deadline (this call's or an
        outer one's) set it rather than the attempt timeout."""
        ends_at, by_deadline = deadline_at, True
        if self.attempt_timeout is not None:
            own = CLOCK.now() + self.attempt_timeout
            if ends_at is None or own < ends_at:
                ends_at, by_deadline = own, False
        outer = _ends_at.get()
        if outer is not None and (ends_at is None or outer < ends_at):
            ends_at, by_deadline = outer, True
        return ends_at, by_deadline

    def attempts(self, fn: Callable[..., Any], deadline_at: float | None) -> Callable[..., Any]:
        """`fn` with each attempt's end in the context variable (a sync function)."""

        def attempt(*args: Any, **kwargs: Any) -> Any:
            token = _ends_at.set(self._ends_at(deadline_at)[0])
            try:
                return fn(*args, **kwargs)
            finally:
                _ends_at.reset(token)

        return attempt

    def async_attempts(
        self, fn: Callable[..., Awaitable[Any]], deadline_at: float | None
    ) -> Callable[..., Awaitable[Any]]:
        """`fn` with each attempt's end in the context variable and, with an attempt
        timeout, each attempt cancelled when its time is up (`AttemptTimeout`)."""
        bounded = self.attempt_timeout is not None

        async def attempt(*args: Any, **kwargs: Any) -> Any:
            ends_at, by_deadline = self._ends_at(deadline_at)
            token = _ends_at.set(ends_at)
            try:
                if not bounded or ends_at is None:
                    return await fn(*args, **kwargs)
                seconds = max(0.0, ends_at - CLOCK.now())
                return await _within(self.policy, seconds, by_deadline, fn(*args, **kwargs))
            finally:
                _ends_at.reset(token)

        return attempt


if sys.version_info >= (3, 11):

    async def _within(policy: str, seconds: float, by_deadline: bool, work: Awaitable[Any]) -> Any:
        """`work` awaited for `seconds` at most (on the event loop's clock)."""
        limit = asyncio.timeout(seconds)
        try:
            async with limit:
                return await work
        except TimeoutError as error:
            if not limit.expired():
                raise  # the function's own TimeoutError, unchanged
            raise AttemptTimeout(policy, seconds, by_deadline) from error

else:  # pragma: no cover - Python 3.10, as asyncio.timeout (3.11) and async-timeout do it
    _CANCEL = "callpolicy: the attempt's time is up"
    _scopes: contextvars.ContextVar[tuple[_Scope, ...]] = contextvars.ContextVar(
        "callpolicy_attempt_scopes", default=()
    )

    class _Scope:
        """One attempt's timer: it cancels the task running the attempt (the attempt runs
        in the caller's task, in its context, and has ended when `_within` returns)."""

        def __init__(self, task: asyncio.Task[Any]) -> None:
            self.task = task
            self.expired = False

        def expire(self) -> None:
            self.expired = True
            self.task.cancel(_CANCEL)

    async def _within(policy: str, seconds: float, by_deadline: bool, work: Awaitable[Any]) -> Any:
        """`work` awaited for `seconds` at most (on the event loop's clock)."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError(f"{policy}: stop.attempt_timeout needs to run inside a task")
        scope = _Scope(task)
        enclosing = _scopes.get()
        token = _scopes.set((*enclosing, scope))
        timer = asyncio.get_running_loop().call_later(seconds, scope.expire)
        try:
            return await work
        except asyncio.CancelledError as cancelled:
            # Ours: our timer fired, the cancellation delivered is one of ours (not one
            # from outside), and no enclosing attempt of this task is also over (the
            # outermost one that is turns the cancellation into its AttemptTimeout).
            if (
                not scope.expired
                or cancelled.args != (_CANCEL,)
                or any(outer.expired and outer.task is task for outer in enclosing)
            ):
                raise
            timeout = TimeoutError().with_traceback(cancelled.__traceback__)
            timeout.__context__ = cancelled  # the attempt's frames: where it was cut
            raise AttemptTimeout(policy, seconds, by_deadline) from timeout
        finally:
            timer.cancel()
            _scopes.reset(token)
