"""A `Policy` compiled into a runner: quotas, then the call, then tenacity's strategies on
failure. One attempt loop per flavour (sync, async); every decision is shared.

The success path takes the quotas, calls the function and checks the outcome, nothing more.
Only when an attempt's outcome calls for a retry do tenacity's pieces take over: the policy's
retry condition, wait and stop strategies (built once per policy) decide from a
`RetryCallState` that starts with the failed first attempt already recorded. The loop that
drives them is ours, not `Retrying.iter()`: it keeps no state outside the call's own
`RetryCallState`, so calls may nest (a predicate calling another decorated function), and
threads and tasks share a policy freely.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import tenacity

from callpolicy._clock import CLOCK
from callpolicy._engine.conditions import RetryCondition
from callpolicy._engine.outcomes import DeadlineStop, give_up, no_quota_for_retry, sleep_event
from callpolicy._engine.pause import ServerPause
from callpolicy._engine.waits import compile_wait
from callpolicy._errors import QuotaExceeded
from callpolicy._events import emit, listening
from callpolicy._model import Policy
from callpolicy._options import Costing
from callpolicy._quotas import QuotaStore

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
# RetryCallState wants a Retrying to point at; ours is never iterated.
_STATE_OWNER = tenacity.Retrying()


class Runner:
    """Runs calls under one policy. Built once per policy name and registry generation."""

    def __init__(self, policy: Policy, quotas: QuotaStore) -> None:
        self.policy = policy
        self.name = policy.name
        self.max_attempts = policy.stop.attempts
        self.deadline = policy.stop.deadline
        self.condition = RetryCondition(policy.retry, policy.name, policy.wait.hints)
        self.checks_results = self.condition.checks_results
        self.admission = quotas.admission(policy)
        pause = policy.pause
        self.pause = None if pause is None else ServerPause(policy.name, self.max_attempts, pause)
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.max_attempts)
        if self.deadline is not None:
            stop = stop | DeadlineStop(self.deadline)
        self.stop = stop
        self.wait = compile_wait(policy.wait, policy.name)

    def call(
        self, fn: Callable[..., Any], args: Args, kwargs: Kwargs, costing: Costing | None = None
    ) -> Any:
        start = CLOCK.now() if self.deadline is not None else 0.0
        deadline_at = None if self.deadline is None else start + self.deadline
        admission, pause = self.admission, self.pause
        state: tenacity.RetryCallState | None = None  # built at the first retryable outcome
        while True:
            grant = None
            try:
                if pause is not None:
                    pause.wait(_attempt(state), deadline_at)
                if admission is not None:
                    grant = admission.admit(_attempt(state), deadline_at, costing, args, kwargs)
            except QuotaExceeded as refused:
                self._refused(refused, state)
            if pause is not None:
                pause.enter()
            try:
                if grant is None or grant.plain:
                    result = fn(*args, **kwargs)
                else:
                    result = grant.run(fn, args, kwargs, costing)
            except Exception as exc:
                if pause is not None:
                    pause.note(exc)
                if not self.condition.retries_exception(exc):
                    raise
                state = self._failed(state, exc, fn, args, kwargs, start)
            except BaseException:  # interrupted or cancelled: never retried
                if pause is not None:
                    pause.leave()
                raise
            else:
                if pause is not None:
                    pause.note(result)
                if not (self.checks_results and self.condition.retries_result(result)):
                    return result
                state = self._returned(state, result, fn, args, kwargs, start)
            # Outside the except block, so a later failure is not chained to this one.
            CLOCK.sleep(self._next_sleep(state))

    async def async_call(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: Args,
        kwargs: Kwargs,
        costing: Costing | None = None,
    ) -> Any:
        start = CLOCK.now() if self.deadline is not None else 0.0
        deadline_at = None if self.deadline is None else start + self.deadline
        admission, pause = self.admission, self.pause
        state: tenacity.RetryCallState | None = None
        while True:
            grant = None
            try:
                if pause is not None:
                    await pause.async_wait(_attempt(state), deadline_at)
                if admission is not None:
                    attempt = _attempt(state)
                    grant = await admission.async_admit(attempt, deadline_at, costing, args, kwargs)
            except QuotaExceeded as refused:
                self._refused(refused, state)
            if pause is not None:
                pause.enter()
            try:
                if grant is None or grant.plain:
                    result = await fn(*args, **kwargs)
                else:
                    result = await grant.async_run(fn, args, kwargs, costing)
            except Exception as exc:
                if pause is not None:
                    pause.note(exc)
                if not self.condition.retries_exception(exc):
                    raise
                state = self._failed(state, exc, fn, args, kwargs, start)
            except BaseException:
                if pause is not None:
                    pause.leave()
                raise
            else:
                if pause is not None:
                    pause.note(result)
                if not (self.checks_results and self.condition.retries_result(result)):
                    return result
                state = self._returned(state, result, fn, args, kwargs, start)
            await CLOCK.async_sleep(self._next_sleep(state))

    # -- decisions shared by both loops ----------------------------------------------------
    def _failed(
        self,
        state: tenacity.RetryCallState | None,
        exc: Exception,
        fn: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        start: float,
    ) -> tenacity.RetryCallState:
        """Record a retryable exception on the call's retry state (made at the first one)."""
        state = state or self._new_state(fn, args, kwargs, start)
        state.set_exception((type(exc), exc, exc.__traceback__))
        return state

    def _returned(
        self,
        state: tenacity.RetryCallState | None,
        result: Any,
        fn: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        start: float,
    ) -> tenacity.RetryCallState:
        state = state or self._new_state(fn, args, kwargs, start)
        state.set_result(result)
        return state

    def _new_state(
        self, fn: Callable[..., Any], args: Args, kwargs: Kwargs, start: float
    ) -> tenacity.RetryCallState:
        state = tenacity.RetryCallState(_STATE_OWNER, fn, args, kwargs)
        state.start_time = start  # on CLOCK's timeline, read by DeadlineStop
        return state

    def _next_sleep(self, state: tenacity.RetryCallState) -> float:
        """After a retryable outcome: how long to sleep before the next attempt, which it
        then prepares; raises (the last error, or RetryExhausted) when the stop strategy
        says to give up."""
        sleep = float(self.wait(state))
        state.upcoming_sleep = sleep
        if math.isinf(sleep) or self.stop(state):  # inf: a server hint above its cap
            give_up(self.name, self.max_attempts, self.deadline, state)
        state.idle_for += sleep
        if listening():  # describing the cause costs more than the rest of a retry
            emit(sleep_event(self.name, self.max_attempts, self.condition.statuses, state))
        state.callpolicy_last = state.outcome  # type: ignore[attr-defined]
        state.prepare_for_next_attempt()
        return sleep

    def _refused(self, refused: QuotaExceeded, state: tenacity.RetryCallState | None) -> NoReturn:
        """No quota (or the server's pause) in time: the first attempt raises the refusal; a
        retry fails with the last error, losing nothing."""
        if state is None:
            raise refused
        no_quota_for_retry(self.name, refused, state.callpolicy_last, state)  # type: ignore[attr-defined]


def _attempt(state: tenacity.RetryCallState | None) -> int:
    return 1 if state is None else state.attempt_number
