"""A `Policy` compiled into a runner: quotas, then the call, then tenacity's strategies on
failure. The first attempt in a thin shell per flavour (sync, async), the retries as steps.

The success path takes the quotas, calls the function and checks the outcome, nothing more.
Only when an attempt's outcome calls for a retry do tenacity's pieces take over (between.py)
from a `RetryCallState` that starts with the failed first attempt already recorded. The loop
is ours, not `Retrying.iter()`: it keeps no state outside the call's own `RetryCallState`,
so calls may nest and threads and tasks share a policy freely.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import tenacity

from callpolicy._clock import CLOCK
from callpolicy._engine.admitted import admitted
from callpolicy._engine.announced import Learner
from callpolicy._engine.between import Between
from callpolicy._engine.conditions import RetryCondition
from callpolicy._engine.deadline import Timing
from callpolicy._engine.noted import Noted
from callpolicy._engine.outcomes import DeadlineStop
from callpolicy._engine.pause import ServerPause
from callpolicy._engine.resilience import ResilienceStore
from callpolicy._engine.rules import Cause, compile_causes
from callpolicy._engine.traced import (
    Traced,
    async_traced_call,
    attempt_begins,
    attempt_refused,
    attempt_retried,
    traced_call,
)
from callpolicy._engine.waits import compile_wait
from callpolicy._events import HOOKS
from callpolicy._model import Policy
from callpolicy._options import Costing
from callpolicy._quotas import QuotaStore
from callpolicy._stats import Tally
from callpolicy._steps import Call, Raised, Sleep, Steps, async_run, run

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


class Runner(Noted):
    """Runs calls under one policy. Built once per policy name and registry generation."""

    def __init__(
        self,
        policy: Policy,
        quotas: QuotaStore,
        tally: Tally | None = None,
        layers: ResilienceStore | None = None,
    ) -> None:
        self.policy = policy
        self.tally = Tally() if tally is None else tally
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
        layers = layers or ResilienceStore(quotas)
        self.breaker = layers.circuit(policy, self.condition)
        self.budget = None if policy.budget is None else layers.budget(policy.budget)
        pause = policy.pause
        self.pause = None if pause is None else ServerPause(policy.name, self.max_attempts, pause)
        learning = quotas.learning(policy)
        self.learner = Learner(learning) if learning else None
        # Whether every answer is read (the pause, learned limits), not only retried ones.
        self.reads_answers = self.pause is not None or self.learner is not None
        # A returned value ends the call at once: nothing reads it (the success path).
        # (the breaker and the budget are told, inline)
        self.returns_at_once = not self.reads_answers and not self.checks_results
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.max_attempts)
        if self.deadline is not None:
            stop = stop | DeadlineStop(self.deadline)
        self.between = Between(
            self.name,
            self.max_attempts,
            self.deadline,
            self.condition,
            self.wait,
            stop,
            self.tally,
            self.ruled,
            self.said_by_server,
            self.breaker,
            self.budget,
        )
        self.timing = Timing.of(policy.name, policy.stop)  # None: no deadline, no timeout

    def call(
        self,
        fn: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        costing: Costing | None = None,
        trace: Traced = None,
    ) -> Any:
        if trace is None and HOOKS.traced:
            return traced_call(self, fn, args, kwargs, costing)
        tally = self.tally
        tally.start()
        start = CLOCK.now() if self.deadline is not None else 0.0
        deadline_at = None if self.deadline is None else start + self.deadline
        if self.timing is not None:
            fn = self.timing.attempts(fn, deadline_at)
        admission, pause, breaker, budget = self.admission, self.pause, self.breaker, self.budget
        grant, ticket = None, None
        try:  # the first attempt; the retries count their own outcome
            if breaker is not None:
                ticket = breaker.enter()
            if pause is not None:
                pause.wait(1, deadline_at)
            if admission is not None:
                grant = admission.admit(1, deadline_at, (costing, args, kwargs))
            if ticket is not None:  # a slow call is timed from here, past the quotas' waits
                ticket[1] = CLOCK.now()
            try:
                if pause is not None:
                    pause.enter()
                if grant is None or grant.plain:
                    result = fn(*args, **kwargs)
                else:
                    result = grant.run(fn, args, kwargs, costing)
            except BaseException as exc:
                cause = self._retries_error(exc, ticket)
                if cause is None:
                    raise  # unchanged, chain and all
                error: BaseException | None = exc
                result = None
            else:
                if self.returns_at_once:
                    if ticket is not None:
                        breaker.returned(ticket, result)  # type: ignore[union-attr]
                    if budget is not None and budget.tokens != budget.most:
                        budget.succeeded()
                    tally.succeed()
                    return result
                cause = self._retries_result(result, ticket)  # may raise AccountLimit
                if cause is None:
                    tally.succeed()
                    return result
                error = None
        except BaseException as failure:
            tally.fail()
            self._cancel(ticket)  # a trial call not made (after an outcome: nothing)
            attempt_refused(trace or None, failure)  # said now: a fallback may yet serve
            raise
        # Outside the except block, so a later failure is not chained to this one.
        steps = self._retries(start, fn, args, kwargs, costing, cause, error, result, trace)
        return run(steps)

    async def async_call(  # noqa: PLR0915 (flat on purpose, as `call`: the success path)
        self,
        fn: Callable[..., Awaitable[Any]],
        args: Args,
        kwargs: Kwargs,
        costing: Costing | None = None,
        trace: Traced = None,
    ) -> Any:
        if trace is None and HOOKS.traced:
            return await async_traced_call(self, fn, args, kwargs, costing)
        tally = self.tally
        tally.start()
        start = CLOCK.now() if self.deadline is not None else 0.0
        deadline_at = None if self.deadline is None else start + self.deadline
        if self.timing is not None:
            fn = self.timing.async_attempts(fn, deadline_at)
        admission, pause, breaker, budget = self.admission, self.pause, self.breaker, self.budget
        grant, ticket = None, None
        try:  # the first attempt; the retries count their own outcome
            if breaker is not None:  # a remote breaker's round trip awaited
                ticket = await breaker.async_enter() if breaker.remote else breaker.enter()
            if pause is not None:
                await pause.async_wait(1, deadline_at)
            if admission is not None:
                grant = await admission.async_admit(1, deadline_at, (costing, args, kwargs))
            if ticket is not None:  # a slow call is timed from here, past the quotas' waits
                ticket[1] = CLOCK.now()
            try:
                if pause is not None:
                    pause.enter()
                if grant is None or grant.plain:
                    result = await fn(*args, **kwargs)
                else:
                    result = await grant.async_run(fn, args, kwargs, costing)
            except BaseException as exc:
                if ticket is not None and breaker.remote:  # type: ignore[union-attr]
                    await breaker.async_ended(ticket, exc, None)  # type: ignore[union-attr]
                cause = self._retries_error(exc, ticket)
                if cause is None:
                    raise  # unchanged, chain and all
                error: BaseException | None = exc
                result = None
            else:
                if self.returns_at_once:
                    if ticket is not None:
                        if breaker.remote:  # type: ignore[union-attr]
                            await breaker.async_ended(ticket, None, result)  # type: ignore[union-attr]
                        else:
                            breaker.returned(ticket, result)  # type: ignore[union-attr]
                    if budget is not None and budget.tokens != budget.most:
                        budget.succeeded()
                    tally.succeed()
                    return result
                if ticket is not None and breaker.remote:  # type: ignore[union-attr]
                    await breaker.async_ended(ticket, None, result)  # type: ignore[union-attr]
                cause = self._retries_result(result, ticket)  # may raise AccountLimit
                if cause is None:
                    tally.succeed()
                    return result
                error = None
        except BaseException as failure:
            tally.fail()
            if ticket is not None and breaker.remote:  # type: ignore[union-attr]
                await breaker.async_cancel(ticket, failure)  # type: ignore[union-attr]
            self._cancel(ticket)  # a trial call not made (after an outcome: nothing)
            attempt_refused(trace or None, failure)  # said now: a fallback may yet serve
            raise
        steps = self._retries(start, fn, args, kwargs, costing, cause, error, result, trace)
        return await async_run(steps)

    # -- shared by both flavours -------------------------------------------------------------
    def _retries(
        self,
        start: float,
        fn: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        costing: Costing | None,
        cause: Cause,
        error: BaseException | None,
        result: Any,
        traced: Traced,
    ) -> Steps[Any]:
        """After the first attempt raised a retryable `error` (or returned a retryable
        `result`): the retries, as steps. Errors that are not retried propagate unchanged."""
        pause, tally, between = self.pause, self.tally, self.between
        trace = traced or None  # this call's own trace (None: untraced)
        deadline_at = None if self.deadline is None else start + self.deadline
        state, ticket = between.new_state(fn, args, kwargs, start), None
        try:
            attempt_retried(trace, error, result)  # the first attempt's
            while True:
                if error is not None:
                    state.set_exception((type(error), error, error.__traceback__))
                else:
                    state.set_result(result)
                last = state.outcome
                yield Sleep(between.next_sleep(state, cause))
                token = None
                tally.retry()
                attempt_begins(trace, state.attempt_number)
                ticket, grant = yield from admitted(self, state, last, deadline_at, costing, trace)
                if pause is not None:
                    pause.enter()
                try:
                    if grant is not None:
                        token = grant.enter()
                    result = yield Call(fn, args, kwargs)
                except BaseException as exc:
                    if grant is not None:
                        yield from grant.leave(token)
                    yield from self._ending(ticket, exc, None)
                    found = self._retries_error(exc)
                    if found is None:
                        raise
                    cause, error = found, exc
                    attempt_retried(trace, error, None)
                    continue
                if grant is not None:
                    yield from grant.leave(token)
                    yield from grant.settle(costing, result)
                yield from self._ending(ticket, None, result)
                found = self._retries_result(result)
                if found is None:
                    tally.succeed()
                    return result
                cause, error = found, None
                attempt_retried(trace, None, result)
        except BaseException as failure:
            tally.fail()
            yield from self._giving_back(ticket, failure)
            attempt_refused(trace, failure)
            if isinstance(failure, StopIteration):  # the user's, or the last attempt's
                return Raised(failure)  # see Raised
            raise
