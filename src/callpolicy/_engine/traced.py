"""Calls followed by hooks: while calls are traced (a hook of attempts or call ends is
registered), each call gets an id (the events of its quotas, sleeps and attempts carry it),
and its attempts and end are events.

The runner's own path is unchanged: `traced_call` wraps it, sets the call's `Trace` in a
context variable, says the first attempt begins, and when the call is over, closes whatever
attempt is still open, says how the call ended and runs the hooks' clean-ups. The retries
(runner.py) say when each later attempt begins, and how each attempt they run ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from callpolicy._clock import CLOCK
from callpolicy._engine.outcomes import describe_exception, describe_result
from callpolicy._events import (
    AttemptEnded,
    AttemptStarted,
    CallEnded,
    Trace,
    emit,
    new_trace,
    wants,
)
from callpolicy._events.trace import CURRENT
from callpolicy._options import Costing

if TYPE_CHECKING:
    from callpolicy._engine.runner import Runner

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
# A call's trace: None: trace it if hooks follow calls; a Trace: traced (by traced_call);
# False: untraced (the caller decided, e.g. a fallback runner's shell).
Traced = Trace | Literal[False] | None


def traced_call(
    runner: Runner, fn: Callable[..., Any], args: Args, kwargs: Kwargs, costing: Costing | None
) -> Any:
    trace = new_trace(runner.name)
    token = CURRENT.set(trace)
    try:
        _begin(trace)
        try:
            result = runner.call(fn, args, kwargs, costing, trace)
        except BaseException as error:
            _end(trace, error)
            raise
        _end(trace, None)
        return result
    finally:
        trace.finish()
        CURRENT.reset(token)


async def async_traced_call(
    runner: Runner,
    fn: Callable[..., Awaitable[Any]],
    args: Args,
    kwargs: Kwargs,
    costing: Costing | None,
) -> Any:
    trace = new_trace(runner.name)
    token = CURRENT.set(trace)
    try:
        _begin(trace)
        try:
            result = await runner.async_call(fn, args, kwargs, costing, trace)
        except BaseException as error:
            _end(trace, error)
            raise
        _end(trace, None)
        return result
    finally:
        trace.finish()
        CURRENT.reset(token)


def attempt_begins(trace: Trace | None, attempt: int) -> None:
    """A later attempt begins (before its quotas)."""
    if trace is not None:
        trace.begin(attempt)
        if wants("attempt_start"):
            emit(AttemptStarted(trace.policy, attempt, call_id=trace.call_id))


def attempt_retried(trace: Trace | None, error: BaseException | None, result: Any) -> None:
    """The attempt in progress ended with an outcome the policy retries."""
    if trace is not None:
        _attempt_ended(trace, error, result, retried=True)


def attempt_refused(trace: Trace | None, error: BaseException) -> None:
    """The attempt in progress ended the call with `error` (raised, or refused before its
    call: no quota, no time left, an open breaker); nothing if it was said already."""
    if trace is not None:
        _attempt_ended(trace, error, None, retried=False)


def _begin(trace: Trace) -> None:
    if wants("attempt_start"):
        emit(AttemptStarted(trace.policy, 1, call_id=trace.call_id))


def _end(trace: Trace, error: BaseException | None) -> None:
    """The call is over: the attempt still open ended with its outcome, and so did the call."""
    _attempt_ended(trace, error, None, retried=False)
    if wants("call_end"):
        said = None if error is None else describe_exception(error)
        seconds = CLOCK.now() - trace.started
        emit(
            CallEnded(
                trace.policy, trace.attempt, seconds, error is not None, said, call_id=trace.call_id
            )
        )


def _attempt_ended(trace: Trace, error: BaseException | None, result: Any, retried: bool) -> None:
    seconds = trace.end()
    if seconds is None or not wants("attempt_end"):
        return  # no attempt open (it ended retried; the call ended between attempts)
    if error is not None:
        outcome = describe_exception(error)
    else:
        outcome = describe_result(result) if retried else "returned"
    event = AttemptEnded(
        trace.policy,
        trace.attempt,
        seconds,
        error is not None,
        outcome,
        retried,
        call_id=trace.call_id,
    )
    emit(event)
