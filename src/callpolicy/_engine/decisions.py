"""Deciding a retry, after an attempt's outcome called for one: how long to sleep (the
policy's wait, or the wait of the retry rule that matched, counting that rule's attempts),
or giving up (the stop strategy, a rule's attempts, arguments that cannot be sent again, the
retry budget, an open breaker). The sleep event is emitted here, once per retry."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import tenacity

from callpolicy._engine.budget import LocalBudget, budget_stop
from callpolicy._engine.circuit import Circuit
from callpolicy._engine.conditions import RetryCondition
from callpolicy._engine.outcomes import cannot_repeat, give_up, sleep_event
from callpolicy._engine.repeat import not_replayable
from callpolicy._engine.rules import Cause
from callpolicy._events import emit, listening

# RetryCallState wants a Retrying to point at; ours is never iterated.
_STATE_OWNER = tenacity.Retrying()


class RetryDecisions:
    """The retry decisions of a `Runner` (its base: the attributes below are the runner's)."""

    name: str
    max_attempts: int
    deadline: float | None
    wait: tenacity.wait.wait_base
    condition: RetryCondition
    said_by_server: bool
    ruled: bool
    stop: tenacity.stop.stop_base
    breaker: Circuit | None
    budget: LocalBudget | None

    def _retry_state(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], start: float
    ) -> tenacity.RetryCallState:
        """The state of a call's retries, its first attempt started at `start`."""
        state = tenacity.RetryCallState(_STATE_OWNER, fn, args, kwargs)
        state.start_time = start  # on CLOCK's timeline, read by DeadlineStop
        if self.ruled:
            state.callpolicy_counts = [0] * len(self.condition.causes)  # type: ignore[attr-defined]
        return state

    def _next_sleep(self, state: tenacity.RetryCallState, cause: Cause) -> float:
        """After an outcome `cause` retries: how long to sleep before the next attempt, which
        it then prepares; raises (the last error, or RetryExhausted) when the stop strategy
        or the cause's attempts say to give up (or the budget, or an open breaker)."""
        spare = self.budget is None or self.budget.failed()  # before: the attempt failed
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
        if not spare:
            budget_stop(self.name, self.budget, state)  # type: ignore[arg-type]
        if self.breaker is not None:
            self.breaker.before_sleep(sleep, state.outcome)
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
