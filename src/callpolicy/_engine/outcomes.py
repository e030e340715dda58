"""How a retried call ends: the stop at a deadline, the sleep event, giving up with the
last error (or RetryExhausted), and a retry that found no quota in time."""

from __future__ import annotations

import math
import re
from typing import Any, NoReturn

import tenacity

from callpolicy._clock import CLOCK
from callpolicy._engine.http import status_of
from callpolicy._engine.rules import Cause
from callpolicy._engine.waits import SleepParts
from callpolicy._errors import QuotaExceeded, RetryExhausted, mark_gave_up, reraise
from callpolicy._events import SleepEvent, SleepTrigger
from callpolicy._text import Throttled, format_seconds, shown_value, without_secrets

_not_repeated = Throttled(60.0)


class DeadlineStop(tenacity.stop.stop_base):
    """Stop before a sleep that would end past the deadline (measured from the call's start)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        elapsed = CLOCK.now() - retry_state.start_time
        return elapsed + retry_state.upcoming_sleep > self.deadline


def sleep_event(
    policy: str,
    max_attempts: int,
    cause: Cause,
    count: int,
    state: tenacity.RetryCallState,
    said: str | None = None,
) -> SleepEvent:
    """The backoff sleep about to happen after the attempt `state` holds, the `count`th
    to end in `cause` (named in the event when it is a rule); `said`: the server's word
    that retried it ("x-should-retry: true")."""
    outcome = state.outcome
    assert outcome is not None
    exc = outcome.exception() if outcome.failed else None
    trigger: SleepTrigger
    if exc is not None:
        trigger, why = "exception", describe_exception(exc)
    else:
        result = outcome.result()
        trigger = "status" if status_of(result) in cause.statuses else "result"
        why = describe_result(result)
    if said:
        why = f"{why}, {said}"
    parts: SleepParts | None = getattr(state, "callpolicy_sleep", None)
    seconds = state.upcoming_sleep
    ruled = cause.name is not None
    return SleepEvent(
        policy,
        state.attempt_number,
        max_attempts,
        "backoff",
        seconds,
        why,
        trigger,
        hint=None if parts is None else parts.hint,
        backoff=seconds if parts is None else parts.backoff,
        jitter=None if parts is None else parts.jitter,
        hint_seconds=None if parts is None else parts.hint_seconds,
        rule=cause.name,
        rule_attempt=count if ruled else None,
        rule_max_attempts=cause.attempts if ruled else None,
    )


def give_up(
    policy: str,
    max_attempts: int,
    deadline: float | None,
    state: tenacity.RetryCallState,
    cause: Cause | None = None,
) -> NoReturn:
    """Retries are over: raise the last original exception, or RetryExhausted with the last
    result and why (`cause`: a rule that has had its attempts)."""
    outcome = state.outcome
    assert outcome is not None
    if outcome.failed:
        error = outcome.exception()
        assert error is not None
        mark_gave_up(error, policy)
        reraise(error)  # the last original exception, its chain as it was
    parts: SleepParts | None = getattr(state, "callpolicy_sleep", None)
    hint = None if parts is None else parts.hint
    if cause is not None:
        reason = f"retry rule {cause.name!r}: attempts = {cause.attempts} reached"
    elif math.isinf(state.upcoming_sleep) and hint:
        reason = f"the server said to wait longer than allowed: {hint}"
    elif state.attempt_number >= max_attempts:
        reason = f"stop.attempts = {max_attempts} reached"
    else:
        shown = format_seconds(deadline or 0.0)
        reason = f"the next wait ({state.upcoming_sleep:.3f}s) would pass stop.deadline = {shown}"
    raise RetryExhausted(policy, outcome.result(), state.attempt_number, reason)


def cannot_repeat(policy: str, state: tenacity.RetryCallState, why: str) -> NoReturn:
    """The call's arguments cannot be given again (a consumed generator, a read file): give
    up with the last error (noted, and logged at most once a minute) or RetryExhausted,
    rather than send something else than the first attempt sent."""
    outcome = state.outcome
    assert outcome is not None
    cause = re.sub(r"\d+", "N", why)  # a file at another position is the same cause
    _not_repeated.warn((policy, cause), "%s: not retrying: %s", policy, why, policy=policy)
    if outcome.failed:
        error = outcome.exception()
        assert error is not None
        if hasattr(error, "add_note"):  # Python 3.11+
            error.add_note(f"callpolicy: {policy} did not retry: {why}")
        mark_gave_up(error, policy)
        reraise(error)
    raise RetryExhausted(policy, outcome.result(), state.attempt_number, f"not retried: {why}")


def no_quota_for_retry(
    policy: str,
    refused: QuotaExceeded,
    last: tenacity.Future | None,
    state: tenacity.RetryCallState,
) -> NoReturn:
    """A retry found no quota (or the server's pause) in time: fail with the last error,
    losing nothing."""
    assert last is not None
    attempts = state.attempt_number - 1
    if last.failed:
        error = last.exception()
        assert error is not None
        if refused.reason == "deadline":  # the deadline rule: fail at once with the last error
            if error.__context__ is None and not error.__suppress_context__:
                error.__context__ = refused  # why, unless the error has a context of its own
            mark_gave_up(error, policy)
            reraise(error)
        raise refused from error
    raise RetryExhausted(policy, last.result(), attempts, str(refused)) from refused


def describe_exception(exc: BaseException) -> str:
    """`exc` in words for a log line or an event, any URL in it without its credentials
    and query: "HTTPError: 500 Server Error: Internal Server Error for url:
    https://api.example.com/v1/offers (HTTP 500)"."""
    status = status_of(exc)
    try:
        said = without_secrets(str(exc))
    except Exception:  # an error whose __str__ fails is still described, never raised
        said = "(its message could not be read)"
    text = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
    return f"{text} (HTTP {status})" if status is not None and str(status) not in text else text


def describe_result(result: Any) -> str:
    status = status_of(result)
    if status is not None:
        return f"HTTP {status}"
    return f"returned {shown_value(result, 120)}"
