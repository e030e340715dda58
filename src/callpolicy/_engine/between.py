"""Between two attempts: whether the call goes on, and how long it sleeps first.

After an attempt's outcome calls for another attempt (its `Cause`), tenacity's stop and
wait strategies decide from the call's `RetryCallState`; with retry rules, each cause counts
its own attempts and has its own wait. A call that goes on sleeps (counted, and said to the
log and hooks); one that stops raises its last error (or RetryExhausted), counted and said
to hooks as a give-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import tenacity

from callpolicy._engine.budget import LocalBudget, budget_stop
from callpolicy._engine.circuit import Circuit
from callpolicy._engine.conditions import RetryCondition
from callpolicy._engine.outcomes import (
    cannot_repeat,
    describe_exception,
    describe_result,
    give_up,
    sleep_event,
)
from callpolicy._engine.repeat import not_replayable
from callpolicy._engine.rules import Cause
from callpolicy._events import GaveUp, emit, listening, wants
from callpolicy._stats import Tally

# RetryCallState wants a Retrying to point at; ours is never iterated.
_STATE_OWNER = tenacity.Retrying()


class Between:
    """The decisions between attempts of one policy's calls (built once per runner)."""

    def __init__(
        self,
        name: str,
        max_attempts: int,
        deadline: float | None,
        condition: RetryCondition,
        wait: tenacity.wait.wait_base,
        stop: tenacity.stop.stop_base,
        tally: Tally,
        ruled: bool,
        said_by_server: bool,
        breaker: Circuit | None = None,
        budget: LocalBudget | None = None,
    ) -> None:
        self.name = name
        self.max_attempts = max_attempts
        self.deadline = deadline
        self.condition = condition
        self.wait = wait
        self.stop = stop
        self.tally = tally
        self.ruled = ruled  # else one cause: the call's attempts are its
        self.said_by_server = said_by_server
        self.breaker = breaker
        self.budget = budget

    def new_state(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], start: float
    ) -> tenacity.RetryCallState:
        """The state of a call's retries, its first attempt started at `start`."""
        state = tenacity.RetryCallState(_STATE_OWNER, fn, args, kwargs)
        state.start_time = start  # on CLOCK's timeline, read by DeadlineStop
        if self.ruled:
            state.callpolicy_counts = [0] * len(self.condition.causes)  # type: ignore[attr-defined]
        return state

    def next_sleep(self, state: tenacity.RetryCallState, cause: Cause) -> float:
        """After an outcome `cause` retries: how long to sleep before the next attempt, which
        it then prepares; raises (the last error, or RetryExhausted) when the stop strategy
        or the cause's attempts say to give up (or the budget, or an open breaker)."""
        spare = self.budget is None or self.budget.failed()  # first: the attempt failed
        if self.ruled:
            count = self._rule_count(state, cause)
            sleep = self._rule_wait(state, cause, count)
        else:  # one cause, whose attempts are the call's
            count, sleep = state.attempt_number, float(self.wait(state))
        state.upcoming_sleep = sleep
        if math.isinf(sleep) or self.stop(state):  # inf: a server hint above its cap
            self.gives_up(state, "hint above its cap" if math.isinf(sleep) else "stop")
            give_up(self.name, self.max_attempts, self.deadline, state)
        why = not_replayable(state.args, state.kwargs)
        if why is not None:
            self.gives_up(state, "not repeatable")
            cannot_repeat(self.name, state, why)
        if not spare:
            self.gives_up(state, "budget")
            budget_stop(self.name, self.budget, state)  # type: ignore[arg-type]
        refused = None if self.breaker is None else self.breaker.open_past(sleep)
        if refused is not None:  # fail now, not after a sleep the breaker would refuse
            self.gives_up(state, "circuit open")
            self.breaker.refuse(refused, state.outcome, state.attempt_number)  # type: ignore[union-attr]
        state.idle_for += sleep
        self.tally.slept(sleep)
        if listening():  # describing the cause costs more than the rest of a retry
            said = self._said(state) if self.said_by_server else None
            emit(sleep_event(self.name, self.max_attempts, cause, count, state, said))
        state.prepare_for_next_attempt()
        return sleep

    def gives_up(
        self, state: tenacity.RetryCallState, reason: str, last: tenacity.Future | None = None
    ) -> None:
        """Counted, and said to hooks: the call stops retrying the outcome `state` holds
        (`last`: the last attempt's, when `state` is already past it)."""
        self.tally.give_up()
        if wants("give_up"):
            outcome = state.outcome if last is None else last
            attempt = state.attempt_number if last is None else state.attempt_number - 1
            emit(GaveUp(self.name, attempt, reason, _described(outcome)))

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
            self.gives_up(state, "stop" if rule is None else f"rule {rule.name}")
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


def _described(outcome: tenacity.Future | None) -> str:
    if outcome is None:
        return "no outcome"
    error = outcome.exception()
    return describe_result(outcome.result()) if error is None else describe_exception(error)
