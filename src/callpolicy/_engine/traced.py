"""Calls followed by hooks: while a hook is registered, each call gets an id (the events of
its quotas, sleeps and attempts carry it), and its attempts and end are events.

The runner's own path is unchanged: `traced_call` wraps it, sets the call's `Trace` in a
context variable, says the first attempt begins, and when the call is over, closes whatever
attempt is still open and says how the call ended. The retries (runner.py) say when each
later attempt begins, and when an attempt's outcome is retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

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


def traced_call(
    runner: Runner, fn: Callable[..., Any], args: Args, kwargs: Kwargs, costing: Costing | None
) -> Any:
    trace = _begin(runner.name)
    token = CURRENT.set(trace)
    try:
        try:
            result = runner.call(fn, args, kwargs, costing, traced=True)
        except BaseException as error:
            _end(trace, error)
            raise
        _end(trace, None)
        return result
    finally:
        CURRENT.reset(token)


async def async_traced_call(
    runner: Runner,
    fn: Callable[..., Awaitable[Any]],
    args: Args,
    kwargs: Kwargs,
    costing: Costing | None,
) -> Any:
    trace = _begin(runner.name)
    token = CURRENT.set(trace)
    try:
        try:
            result = await runner.async_call(fn, args, kwargs, costing, traced=True)
        except BaseException as error:
            _end(trace, error)
            raise
        _end(trace, None)
        return result
    finally:
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


def _begin(policy: str) -> Trace:
    trace = new_trace(policy)
    if wants("attempt_start"):
        emit(AttemptStarted(policy, 1, call_id=trace.call_id))
    return trace


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
