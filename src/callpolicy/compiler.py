"""A `Policy` compiled into a callable plan: quotas, then the call, then tenacity on failure.

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

from callpolicy.clock import CLOCK
from callpolicy.conditions import RetryCondition
from callpolicy.errors import QuotaExceeded
from callpolicy.events import (
    emit,
    listening,
)
from callpolicy.model import Policy
from callpolicy.options import Costing
from callpolicy.outcomes import DeadlineStop, give_up, no_quota_for_retry, sleep_event
from callpolicy.pause import ServerPause
from callpolicy.quotas import QuotaStore
from callpolicy.waits import compile_wait

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
# RetryCallState wants a Retrying to point at; ours is never iterated.
_STATE_OWNER = tenacity.Retrying()


class CompiledPolicy:
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

    # -- sync ------------------------------------------------------------------------------
    def call(
        self, fn: Callable[..., Any], args: Args, kwargs: Kwargs, costing: Costing | None = None
    ) -> Any:
        start = CLOCK.now() if self.deadline is not None else 0.0
        admission, pause = self.admission, self.pause
        if pause is not None:
            pause.wait(1, self._deadline_at(start))
        grant = None
        if admission is not None:
            grant = admission.admit(1, self._deadline_at(start), costing, args, kwargs)
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
            state = self._new_state(fn, args, kwargs, start)
            state.set_exception((type(exc), exc, exc.__traceback__))
        except BaseException:  # interrupted or cancelled: never retried
            if pause is not None:
                pause.leave()
            raise
        else:
            if pause is not None:
                pause.note(result)
            if not (self.checks_results and self.condition.retries_result(result)):
                return result
            state = self._new_state(fn, args, kwargs, start)
            state.set_result(result)
        # Outside the except block, so a later failure is not chained to this one.
        return self._retry(fn, args, kwargs, start, state, costing)

    def _retry(
        self,
        fn: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        start: float,
        state: tenacity.RetryCallState,
        costing: Costing | None,
    ) -> Any:
        deadline_at = self._deadline_at(start)
        admission, pause = self.admission, self.pause
        while True:
            sleep = self._next_sleep(state)
            last = state.outcome
            state.prepare_for_next_attempt()
            CLOCK.sleep(sleep)
            if pause is not None:
                self._pause_for_retry(pause, last, state, deadline_at)
            grant = None
            if admission is not None:
                try:
                    grant = admission.admit(
                        state.attempt_number, deadline_at, costing, args, kwargs
                    )
                except QuotaExceeded as refused:
                    self._no_quota_for_retry(refused, last, state)
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
                state.set_exception((type(exc), exc, exc.__traceback__))
            except BaseException:
                if pause is not None:
                    pause.leave()
                raise
            else:
                if pause is not None:
                    pause.note(result)
                if not (self.checks_results and self.condition.retries_result(result)):
                    return result
                state.set_result(result)

    # -- async -----------------------------------------------------------------------------
    async def acall(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: Args,
        kwargs: Kwargs,
        costing: Costing | None = None,
    ) -> Any:
        start = CLOCK.now() if self.deadline is not None else 0.0
        admission, pause = self.admission, self.pause
        if pause is not None:
            await pause.async_wait(1, self._deadline_at(start))
        grant = None
        if admission is not None:
            grant = await admission.async_admit(1, self._deadline_at(start), costing, args, kwargs)
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
            state = self._new_state(fn, args, kwargs, start)
            state.set_exception((type(exc), exc, exc.__traceback__))
        except BaseException:  # interrupted or cancelled: never retried
            if pause is not None:
                pause.leave()
            raise
        else:
            if pause is not None:
                pause.note(result)
            if not (self.checks_results and self.condition.retries_result(result)):
                return result
            state = self._new_state(fn, args, kwargs, start)
            state.set_result(result)
        return await self._aretry(fn, args, kwargs, start, state, costing)

    async def _aretry(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: Args,
        kwargs: Kwargs,
        start: float,
        state: tenacity.RetryCallState,
        costing: Costing | None,
    ) -> Any:
        deadline_at = self._deadline_at(start)
        admission, pause = self.admission, self.pause
        while True:
            sleep = self._next_sleep(state)
            last = state.outcome
            state.prepare_for_next_attempt()
            await CLOCK.async_sleep(sleep)
            if pause is not None:
                try:
                    await pause.async_wait(state.attempt_number, deadline_at)
                except QuotaExceeded as refused:
                    self._no_quota_for_retry(refused, last, state)
            grant = None
            if admission is not None:
                try:
                    grant = await admission.async_admit(
                        state.attempt_number, deadline_at, costing, args, kwargs
                    )
                except QuotaExceeded as refused:
                    self._no_quota_for_retry(refused, last, state)
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
                state.set_exception((type(exc), exc, exc.__traceback__))
            except BaseException:
                if pause is not None:
                    pause.leave()
                raise
            else:
                if pause is not None:
                    pause.note(result)
                if not (self.checks_results and self.condition.retries_result(result)):
                    return result
                state.set_result(result)

    # -- shared ----------------------------------------------------------------------------
    def _new_state(
        self, fn: Callable[..., Any], args: Args, kwargs: Kwargs, start: float
    ) -> tenacity.RetryCallState:
        state = tenacity.RetryCallState(_STATE_OWNER, fn, args, kwargs)
        state.start_time = start  # on CLOCK's timeline, read by _DeadlineStop
        return state

    def _next_sleep(self, state: tenacity.RetryCallState) -> float:
        """After a retryable outcome: how long to sleep before the next attempt; raises
        (the last error, or RetryExhausted) when the stop strategy says to give up."""
        sleep = float(self.wait(state))
        state.upcoming_sleep = sleep
        if math.isinf(sleep) or self.stop(state):  # inf: a server hint above its cap
            self._give_up(state)
        state.idle_for += sleep
        self._before_sleep(state)
        return sleep

    def _deadline_at(self, start: float) -> float | None:
        return None if self.deadline is None else start + self.deadline

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        if listening():  # describing the cause costs more than the rest of a retry
            emit(sleep_event(self.name, self.max_attempts, self.condition.statuses, state))

    def _give_up(self, state: tenacity.RetryCallState) -> NoReturn:
        give_up(self.name, self.max_attempts, self.deadline, state)

    def _pause_for_retry(
        self,
        pause: ServerPause,
        last: tenacity.Future | None,
        state: tenacity.RetryCallState,
        deadline_at: float | None,
    ) -> None:
        try:
            pause.wait(state.attempt_number, deadline_at)
        except QuotaExceeded as refused:
            no_quota_for_retry(self.name, refused, last, state)

    def _no_quota_for_retry(
        self, refused: QuotaExceeded, last: tenacity.Future | None, state: tenacity.RetryCallState
    ) -> NoReturn:
        no_quota_for_retry(self.name, refused, last, state)
