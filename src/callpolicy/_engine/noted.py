"""What each attempt's outcome tells, before the retry condition judges it: the server's
pause and learned limits read it, the breaker counts it, the budget gets a token back when
it ends the call. A base of `Runner` (the attributes below are the runner's)."""

from __future__ import annotations

from typing import Any

from callpolicy._engine.announced import Learner
from callpolicy._engine.budget import LocalBudget
from callpolicy._engine.circuit import Circuit, Ticket
from callpolicy._engine.conditions import RetryCondition
from callpolicy._engine.pause import ServerPause
from callpolicy._engine.rules import Cause
from callpolicy._steps import Steps


class Noted:
    """The outcome bookkeeping of a `Runner`, shared by both flavours and the retries."""

    pause: ServerPause | None
    learner: Learner | None
    condition: RetryCondition
    checks_results: bool
    breaker: Circuit | None
    budget: LocalBudget | None

    def _retries_result(self, result: Any, ticket: Ticket | None = None) -> Cause | None:
        """The cause a returned value is retried by; None: it ends the call."""
        if ticket is not None:
            self.breaker.returned(ticket, result)  # type: ignore[union-attr]
        if self.pause is not None:
            self.pause.note(result)
        if self.learner is not None:
            self.learner.note(result)
        cause = self.condition.retries_result(result) if self.checks_results else None
        if cause is None and self.budget is not None:
            self.budget.succeeded()
        return cause

    def _retries_error(self, error: BaseException, ticket: Ticket | None = None) -> Cause | None:
        """The cause an attempt's error calls for another attempt by; interrupts never do."""
        if ticket is not None:
            self.breaker.failed(ticket, error)  # type: ignore[union-attr]
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

    def _cancel(self, ticket: Ticket | None) -> None:
        if ticket is not None:
            self.breaker.cancel(ticket)  # type: ignore[union-attr]

    def _ending(
        self, ticket: Ticket | None, error: BaseException | None, result: Any
    ) -> Steps[None]:
        """The breaker told of a retry's end, as steps (awaited for a remote breaker)."""
        if ticket is not None:
            yield from self.breaker.ending(ticket, error, result)  # type: ignore[union-attr]

    def _giving_back(self, ticket: Ticket | None, why: BaseException) -> Steps[None]:
        """A retry's trial call not made given back, as steps (`_cancel`)."""
        if ticket is not None:
            yield from self.breaker.giving_back(ticket, why)  # type: ignore[union-attr]
