"""A policy's way through its circuit breaker: what counts as a failed attempt, how long
one took, and `CircuitOpen` when the breaker refuses.

What fails: the breaker's own `on_exceptions` and `on_status` when it sets either (only
those), else what the policy retries on: an exception a retry cause matches (by class,
status or predicate), a returned value with a status the policy retries. Whether the
request could be repeated does not matter: the breaker judges the server, not the call.
Interrupts (KeyboardInterrupt, a cancelled task) are no outcome: a trial call is given back.
"""

from __future__ import annotations

from typing import Any, NoReturn, Protocol

import tenacity

from callpolicy._clock import CLOCK
from callpolicy._engine.breaker import CLOSED, OPEN, LocalBreaker
from callpolicy._engine.conditions import RetryCondition
from callpolicy._engine.http import status_of
from callpolicy._engine.windows import FAILED, SLOW
from callpolicy._errors import CircuitOpen, RetryExhausted
from callpolicy._model import Breaker

# An attempt's ticket: [the generation it counts in, when it started]; once its outcome is
# recorded (or it is given back), the generation is DONE, so nothing is counted twice.
Ticket = list[Any]
DONE = -2


class BreakerState(Protocol):
    """A breaker's state, in this process (`LocalBreaker`) or shared through Redis."""

    state: str

    def enter(self, now: float) -> int | None: ...

    def retry_in(self, now: float) -> float: ...

    def record(self, generation: int, outcome: int, now: float) -> None: ...

    def cancel(self, generation: int) -> None: ...


class Circuit:
    """One policy's use of a breaker (a named breaker is shared by several policies, each
    judging its own outcomes)."""

    __slots__ = (
        "breaker",
        "exceptions",
        "judge",
        "local",
        "name",
        "policy",
        "slow_call",
        "statuses",
    )

    def __init__(
        self, policy: str, model: Breaker, breaker: BreakerState, condition: RetryCondition
    ) -> None:
        self.policy = policy
        self.name = model.name
        self.breaker: Any = breaker
        self.local = isinstance(breaker, LocalBreaker)  # its fast paths are inlined here
        self.slow_call = model.slow_call
        self.judge = None if model.judged else condition
        self.exceptions = model.on_exceptions
        self.statuses = model.on_status if model.judged else condition.statuses

    def enter(self) -> Ticket:
        """Before an attempt (and its quotas): its ticket, or CircuitOpen."""
        breaker = self.breaker
        if self.local and breaker.state is CLOSED:  # LocalBreaker.enter's first line
            return [breaker.generation, 0.0]  # its start: set when the call is made
        now = CLOCK.now()
        generation = breaker.enter(now)
        if generation is None:
            raise CircuitOpen(self.policy, self.name, self.breaker.retry_in(now))
        return [generation, now]

    def enter_retry(self, last: tenacity.Future | None, attempts: int) -> Ticket:
        """Before a retry: its ticket, or CircuitOpen raised from the last outcome (after
        `attempts` attempts)."""
        try:
            return self.enter()
        except CircuitOpen as refused:
            _refuse(refused, last, attempts)

    def open_past(self, sleep: float) -> CircuitOpen | None:
        """The refusal a retry after `sleep` seconds would meet (the breaker open, and
        still open then); None: it may go."""
        breaker = self.breaker
        if breaker.state == OPEN:
            retry_in = breaker.retry_in(CLOCK.now())
            if retry_in > sleep:
                return CircuitOpen(self.policy, self.name, retry_in)
        return None

    def refuse(self, refused: CircuitOpen, last: tenacity.Future | None, attempts: int) -> NoReturn:
        _refuse(refused, last, attempts)

    def failed(self, ticket: Ticket, error: BaseException) -> None:
        """The attempt raised `error`: a failure if the breaker judges it one; else no
        outcome at all (as resilience4j's ignored exceptions: an error the policy does not
        retry on says nothing of the server, and must not dilute a shared breaker's window;
        nor an interrupt, nor the CircuitOpen of a nested call)."""
        if isinstance(error, Exception) and self._fails(error):
            self._record(ticket, FAILED)
        else:
            self.cancel(ticket)

    def returned(self, ticket: Ticket, result: Any) -> None:
        """The attempt returned `result`."""
        generation, start = ticket
        if generation < 0:
            ticket[0] = DONE
            return  # counted already, or in no generation
        now = CLOCK.now()
        outcome = SLOW if now - start >= self.slow_call else 0
        if self.statuses and status_of(result) in self.statuses:
            outcome |= FAILED
        ticket[0] = DONE  # (after the user's status property: an error there gives it back)
        breaker = self.breaker
        if self.local and not outcome and breaker.settled and generation == breaker.generation:
            next(breaker.fast_successes)  # LocalBreaker.record's first lines
        else:
            breaker.record(generation, outcome, now)

    def cancel(self, ticket: Ticket) -> None:
        """The attempt was not made (its quota refused it), or ended without an outcome;
        after its outcome was recorded, nothing."""
        generation, ticket[0] = ticket[0], DONE
        if generation >= 0:
            self.breaker.cancel(generation)

    def _fails(self, error: Exception) -> bool:
        judge = self.judge
        if judge is not None:
            return any(cause.matches_exception(error) for cause in judge.causes)
        if self.exceptions and isinstance(error, self.exceptions):
            return True
        return bool(self.statuses) and status_of(error) in self.statuses

    def _record(self, ticket: Ticket, outcome: int) -> None:
        now, (generation, start) = CLOCK.now(), ticket
        if now - start >= self.slow_call:
            outcome |= SLOW
        ticket[0] = DONE
        if generation >= 0:
            self.breaker.record(generation, outcome, now)


def _refuse(refused: CircuitOpen, last: tenacity.Future | None, attempts: int) -> NoReturn:
    """Raise `refused` from the last outcome: its error, or a RetryExhausted holding the
    value the last attempt returned (nothing is lost)."""
    if last is None:
        raise refused
    if last.failed:
        raise refused from last.exception()
    raise refused from RetryExhausted(refused.policy, last.result(), attempts, "circuit open")
