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
from typing import Any

import tenacity

from callpolicy._clock import CLOCK
from callpolicy._engine.announced import Learner
from callpolicy._engine.conditions import RetryCondition
from callpolicy._engine.deadline import Timing
from callpolicy._engine.outcomes import (
    DeadlineStop,
    cannot_repeat,
    give_up,
    no_quota_for_retry,
    sleep_event,
)
from callpolicy._engine.pause import ServerPause
from callpolicy._engine.repeat import not_replayable
from callpolicy._engine.rules import Cause, compile_causes
from callpolicy._engine.waits import compile_wait
from callpolicy._errors import QuotaExceeded
from callpolicy._events import emit, listening
from callpolicy._model import Policy
from callpolicy._options import Costing
from callpolicy._quotas import QuotaStore
from callpolicy._steps import Call, Method, Raised, Sleep, Steps, async_run, run

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
        self.wait = compile_wait(policy.wait, policy.name)
        causes = compile_causes(policy, self.wait)
        self.condition = RetryCondition(policy.retry, policy.name, policy.wait.hints, causes)
        self.checks_results = self.condition.checks_results
        self.said_by_server = bool(policy.retry.should_retry_header)
        self.ruled = bool(policy.retry.rules)  # else one cause: the call's attempts are its
        self.admission = quotas.admission(policy)
        pause = policy.pause
        self.pause = None if pause is None else ServerPause(policy.name, self.max_attempts, pause)
        learning = quotas.learning(policy)
        self.learner = Learner(learning) if learning else None
        # Whether every answer is read (the pause, learned limits), not only retried ones.
        self.reads_answers = self.pause is not None or self.learner is not None
        # A returned value ends the call at once: nothing reads it (the success path).
        self.returns_at_once = not self.reads_answers and not self.checks_results
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.max_attempts)
        if self.deadline is not None:
            stop = stop | DeadlineStop(self.deadline)
        self.stop = stop
        self.timing = Timing.of(policy.name, policy.stop)  # None: no deadline, no timeout

    def call(
        self, fn: Callable[..., Any], args: Args, kwargs: Kwargs, costing: Costing | None = None
    ) -> Any:
        start = CLOCK.now() if self.deadline is not None else 0.0
        deadline_at = None if self.deadline is None else start + self.deadline
        if self.timing is not None:
            fn = self.timing.attempts(fn, deadline_at)
        admission, pause = self.admission, self.pause
        grant = None
        if pause is not None:
            pause.wait(1, deadline_at)
        if admission is not None:
            grant = admission.admit(1, deadline_at, (costing, args, kwargs))
        try:
            if pause is not None:
                pause.enter()
            if grant is None or grant.plain:
                result = fn(*args, **kwargs)
            else:
                result = grant.run(fn, args, kwargs, costing)
        except BaseException as exc:
            cause = self._retries_error(exc)
            if cause is None:
                raise  # unchanged, chain and all
            error: BaseException | None = exc
            result = None
        else:
            if self.returns_at_once:
                return result
            cause = self._retries_result(result)
            if cause is None:
                return result
            error = None
        # Outside the except block, so a later failure is not chained to this one.
        return run(self._retries(start, fn, args, kwargs, costing, cause, error, result))

    async def async_call(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: Args,
        kwargs: Kwargs,
        costing: Costing | None = None,
    ) -> Any:
        start = CLOCK.now() if self.deadline is not None else 0.0
        deadline_at = None if self.deadline is None else start + self.deadline
        if self.timing is not None:
            fn = self.timing.async_attempts(fn, deadline_at)
        admission, pause = self.admission, self.pause
        grant = None
        if pause is not None:
            await pause.async_wait(1, deadline_at)
        if admission is not None:
            grant = await admission.async_admit(1, deadline_at, (costing, args, kwargs))
        try:
            if pause is not None:
                pause.enter()
            if grant is None or grant.plain:
                result = await fn(*args, **kwargs)
            else:
                result = await grant.async_run(fn, args, kwargs, costing)
        except BaseException as exc:
            cause = self._retries_error(exc)
            if cause is None:
                raise  # unchanged, chain and all
            error: BaseException | None = exc
            result = None
        else:
            if self.returns_at_once:
                return result
            cause = self._retries_result(result)
            if cause is None:
                return result
            error = None
        steps = self._retries(start, fn, args, kwargs, costing, cause, error, result)
        return await async_run(steps)

    # -- shared by both flavours -------------------------------------------------------------
    def _retries_result(self, result: Any) -> Cause | None:
        """The cause a returned value is retried by; None: it ends the call."""
        if self.pause is not None:
            self.pause.note(result)
        if self.learner is not None:
            self.learner.note(result)
        return self.condition.retries_result(result) if self.checks_results else None

    def _retries(
        self,
        start: float,
        fn: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        costing: Costing | None,
        cause: Cause,
        error: BaseException | None,
        result: Any = None,
    ) -> Steps[Any]:
        """After the first attempt raised a retryable `error` (or returned a retryable
        `result`): the retries, as steps. Errors that are not retried propagate unchanged."""
        admission, pause = self.admission, self.pause
        deadline_at = None if self.deadline is None else start + self.deadline
        state = tenacity.RetryCallState(_STATE_OWNER, fn, args, kwargs)
        state.start_time = start  # on CLOCK's timeline, read by DeadlineStop
        if self.ruled:
            state.callpolicy_counts = [0] * len(self.condition.causes)  # type: ignore[attr-defined]
        try:
            while True:
                if error is not None:
                    state.set_exception((type(error), error, error.__traceback__))
                else:
                    state.set_result(result)
                last = state.outcome
                yield Sleep(self._next_sleep(state, cause))
                attempt, grant, token = state.attempt_number, None, None
                try:
                    left = 0.0 if pause is None else pause.left(attempt, deadline_at)
                    if left:
                        yield Sleep(left)
                    if admission is not None:
                        call = (costing, args, kwargs)
                        grant = yield Method(admission, "admit", attempt, deadline_at, call)
                except QuotaExceeded as refused:
                    no_quota_for_retry(self.name, refused, last, state)
                if pause is not None:
                    pause.enter()
                try:
                    if grant is not None:
                        token = grant.enter()
                    result = yield Call(fn, args, kwargs)
                except BaseException as exc:
                    if grant is not None:
                        yield from grant.leave(token)
                    found = self._retries_error(exc)
                    if found is None:
                        raise
                    cause, error = found, exc
                    continue
                if grant is not None:
                    yield from grant.leave(token)
                    yield from grant.settle(costing, result)
                found = self._retries_result(result)
                if found is None:
                    return result
                cause, error = found, None
        except StopIteration as stop:  # the user's, or the last attempt's: see Raised
            return Raised(stop)

    def _retries_error(self, error: BaseException) -> Cause | None:
        """The cause an attempt's error calls for another attempt by; interrupts never do."""
        pause = self.pause
        if not isinstance(error, Exception):  # KeyboardInterrupt, CancelledError, ...
            if pause is not None:
                pause.leave()
            return None
        if pause is not None:
            pause.note(error)
        if self.learner is not None:
            self.learner.note(error)
        return self.condition.retries_exception(error)

    def _next_sleep(self, state: tenacity.RetryCallState, cause: Cause) -> float:
        """After an outcome `cause` retries: how long to sleep before the next attempt, which
        it then prepares; raises (the last error, or RetryExhausted) when the stop strategy
        or the cause's attempts say to give up."""
        if self.ruled:
            count = self._rule_count(state, cause)
            sleep = self._rule_wait(state, cause, count)
        else:  # one cause, whose attempts are the call's
            count, sleep = state.attempt_number, float(self.wait(state))
        state.upcoming_sleep = sleep
        if math.isinf(sleep) or self.stop(state):  # inf: a server hint above its cap
            give_up(self.name, self.max_attempts, self.deadline, state)
        why = not_replayable(state.args, state.kwargs)
        if why is not None:
            cannot_repeat(self.name, state, why)
        state.idle_for += sleep
        if listening():  # describing the cause costs more than the rest of a retry
            said = self._said(state) if self.said_by_server else None
            emit(sleep_event(self.name, self.max_attempts, cause, count, state, said))
        state.prepare_for_next_attempt()
        return sleep

    def _said(self, state: tenacity.RetryCallState) -> str | None:
        outcome = state.outcome
        assert outcome is not None
        return self.condition.said(outcome.exception() if outcome.failed else outcome.result())

    def _rule_count(self, state: tenacity.RetryCallState, cause: Cause) -> int:
        """One more attempt ended in `cause`: its count, the first included; gives up when
        the cause has had its attempts."""
        counts: list[int] = state.callpolicy_counts  # type: ignore[attr-defined]
        count = counts[cause.index] = counts[cause.index] + 1
        if count >= cause.attempts:  # the plain keys' attempts are stop.attempts: say so
            rule = cause if cause.name is not None else None
            give_up(self.name, self.max_attempts, self.deadline, state, rule)
        return count

    def _rule_wait(self, state: tenacity.RetryCallState, cause: Cause, count: int) -> float:
        """The cause's wait, counting the cause's own attempts (an exponential wait starts
        at its initial for the first failure of each cause)."""
        assert cause.wait is not None
        attempt = state.attempt_number
        state.callpolicy_sleep = None  # type: ignore[attr-defined]  # another cause's
        state.attempt_number = count
        try:
            return float(cause.wait(state))
        finally:
            state.attempt_number = attempt
