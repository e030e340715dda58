"""A policy's way through its circuit breaker: what counts as a failed attempt, how long
one took, and `CircuitOpen` when the breaker refuses.

What fails: the breaker's own `on_exceptions` and `on_status` when it sets either (only
those), else what the policy retries on: an exception a retry cause matches (by class,
status or predicate), a returned value with a status the policy retries. Whether the
request could be repeated does not matter: the breaker judges the server, not the call.
Interrupts (KeyboardInterrupt, a cancelled task) are no outcome: a trial call is given back.

A remote breaker (shared through Redis: `remote`) may block on each of these: what it is told
is decided once (`told`, `given_back`: a step, see callpolicy._steps), done in the thread for
sync callers and awaited for async ones (`async_enter`, `async_ended`, `async_cancel`, and the
retries' steps). An in-memory breaker never blocks: async callers use the sync methods, and
its success path is inlined in `enter` and `returned`.
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
from callpolicy._steps import Method, Steps, async_run

# An attempt's ticket: [the generation it counts in, when it started]; once its outcome is
# recorded (or it is given back), the generation is DONE, so nothing is counted twice.
Ticket = list[Any]
DONE = -2


class BreakerState(Protocol):
    """A breaker's state, in this process (`LocalBreaker`) or shared through Redis."""

    state: str
    remote: bool  # its operations may block: async callers await `async_<name>`

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
        "remote",
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
        self.remote = breaker.remote  # async callers await its calls (see _steps.Method)
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
        return self._ticket(breaker.enter(now), now)

    async def async_enter(self) -> Ticket:
        """The same, a remote breaker's round trip awaited."""
        now = CLOCK.now()
        return self._ticket(await self.breaker.async_enter(now), now)

    def _ticket(self, generation: int | None, now: float) -> Ticket:
        if generation is None:
            raise CircuitOpen(self.policy, self.name, self.breaker.retry_in(now))
        return [generation, now]

    def entering(self, last: tenacity.Future | None, attempts: int) -> Steps[Ticket]:
        """Before a retry: its ticket, or CircuitOpen raised from the last outcome (after
        `attempts` attempts)."""
        try:
            ticket: Ticket = yield Method(self, "enter")
        except CircuitOpen as refused:
            _refuse(refused, last, attempts)
        return ticket

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

    def told(self, ticket: Ticket, error: BaseException | None, result: Any) -> Method | None:
        """What the breaker is told of an attempt's end (it raised `error`, else returned
        `result`), as a step: its outcome recorded, or no outcome at all: its trial call
        given back; None: nothing (told already, or counted in no generation). An error
        fails if the breaker judges it a failure; else it is no outcome (as resilience4j's
        ignored exceptions: an error the policy does not retry on says nothing of the
        server, and must not dilute a shared breaker's window; nor an interrupt, nor the
        CircuitOpen of a nested call). The ticket is done after it: told once."""
        generation, start = ticket
        if generation < 0:
            ticket[0] = DONE
            return None
        # done only once judged: the judging may run the user's code (a retry predicate, a
        # status property), and an interrupt there must leave the trial call to give back
        if error is not None and not (isinstance(error, Exception) and self._fails(error)):
            ticket[0] = DONE
            return Method(self.breaker, "cancel", generation)
        now = CLOCK.now()
        outcome = SLOW if now - start >= self.slow_call else 0
        if error is not None or (self.statuses and status_of(result) in self.statuses):
            outcome |= FAILED
        ticket[0] = DONE
        return Method(self.breaker, "record", generation, outcome, now)

    def given_back(self, ticket: Ticket) -> Method | None:
        """The attempt was not made (its quota refused it): its trial call given back, as a
        step; after its outcome was told, nothing (None)."""
        generation, ticket[0] = ticket[0], DONE
        return Method(self.breaker, "cancel", generation) if generation >= 0 else None

    def failed(self, ticket: Ticket, error: BaseException) -> None:
        """The attempt raised `error` (see `told`)."""
        told = self.told(ticket, error, None)
        if told is not None:
            told.sync()

    def returned(self, ticket: Ticket, result: Any) -> None:
        """The attempt returned `result` (see `told`)."""
        if not self.local:
            told = self.told(ticket, None, result)
            if told is not None:
                told.sync()
            return
        # An in-memory breaker: `told` inlined (the success path), as much of it as it needs
        generation, start = ticket
        if generation < 0:
            ticket[0] = DONE
            return  # counted already, or in no generation
        now = CLOCK.now()
        outcome = SLOW if now - start >= self.slow_call else 0
        if self.statuses and status_of(result) in self.statuses:
            outcome |= FAILED
        ticket[0] = DONE  # once judged, as in `told`
        breaker = self.breaker
        if not outcome and breaker.settled and generation == breaker.generation:
            next(breaker.fast_successes)  # LocalBreaker.record's first lines
        else:
            breaker.record(generation, outcome, now)

    def cancel(self, ticket: Ticket) -> None:
        given_back = self.given_back(ticket)
        if given_back is not None:
            given_back.sync()

    async def async_ended(self, ticket: Ticket, error: BaseException | None, result: Any) -> None:
        """`failed` or `returned`, a remote breaker's round trip awaited; in a coroutine
        being closed (`error`: GeneratorExit, maybe with no loop running), in the thread."""
        await async_run(self.ending(ticket, error, result))

    async def async_cancel(self, ticket: Ticket, why: BaseException) -> None:
        """`cancel`, awaited; in a coroutine being closed (`why`: GeneratorExit), not."""
        await async_run(self.giving_back(ticket, why))

    def ending(self, ticket: Ticket, error: BaseException | None, result: Any) -> Steps[None]:
        """An attempt's end told (see `told`), as steps: the retries'; in steps being closed
        (`error`: GeneratorExit), in the thread."""
        told = self.told(ticket, error, result)
        if told is not None:
            if isinstance(error, GeneratorExit):
                told.sync()
            else:
                yield told

    def giving_back(self, ticket: Ticket, why: BaseException) -> Steps[None]:
        """`cancel`, as steps; in steps being closed (`why`: GeneratorExit), in the thread."""
        given_back = self.given_back(ticket)
        if given_back is not None:
            if isinstance(why, GeneratorExit):
                given_back.sync()
            else:
                yield given_back

    def _fails(self, error: Exception) -> bool:
        judge = self.judge
        if judge is not None:
            return any(cause.matches_exception(error) for cause in judge.causes)
        if self.exceptions and isinstance(error, self.exceptions):
            return True
        return bool(self.statuses) and status_of(error) in self.statuses


def _refuse(refused: CircuitOpen, last: tenacity.Future | None, attempts: int) -> NoReturn:
    """Raise `refused` from the last outcome: its error, or a RetryExhausted holding the
    value the last attempt returned (nothing is lost)."""
    if last is None:
        raise refused
    if last.failed:
        raise refused from last.exception()
    raise refused from RetryExhausted(refused.policy, last.result(), attempts, "circuit open")
