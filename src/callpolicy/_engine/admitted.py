"""A retry's way in, through the layers inside the retry loop in their order: the circuit
breaker (`CircuitOpen`, raised from the last error), the server's pause, the quotas (one that
cannot admit the attempt in time ends the call with its last error). A trial call the
breaker gave is given back when the attempt does not go."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tenacity

from callpolicy._clock import CLOCK
from callpolicy._engine.circuit import Ticket
from callpolicy._engine.outcomes import no_quota_for_retry
from callpolicy._engine.traced import attempt_refused
from callpolicy._errors import CircuitOpen, QuotaExceeded
from callpolicy._events import Trace
from callpolicy._options import Costing
from callpolicy._quotas import Grant
from callpolicy._steps import Method, Sleep, Steps

if TYPE_CHECKING:
    from callpolicy._engine.runner import Runner


def admitted(
    runner: Runner,
    state: tenacity.RetryCallState,
    last: tenacity.Future | None,
    deadline_at: float | None,
    costing: Costing | None,
    trace: Trace | None,
) -> Steps[tuple[Ticket | None, Grant | None]]:
    """The next attempt's breaker ticket and quota grant (None: the policy has none)."""
    attempt, admission, pause, breaker = (
        state.attempt_number,
        runner.admission,
        runner.pause,
        runner.breaker,
    )
    try:
        ticket = None if breaker is None else (yield from breaker.entering(last, attempt - 1))
    except CircuitOpen as refused:  # opened while this call slept
        attempt_refused(trace, refused)
        runner.between.gives_up(state, "circuit open", last)
        raise
    try:
        left = 0.0 if pause is None else pause.left(attempt, deadline_at)
        if left:
            yield Sleep(left)
        grant: Grant | None = None
        if admission is not None:
            call = (costing, state.args, state.kwargs)
            grant = yield Method(admission, "admit", attempt, deadline_at, call)
        if ticket is not None:  # a slow call is timed from here, past the waits
            ticket[1] = CLOCK.now()
        return ticket, grant
    except QuotaExceeded as refused:
        yield from runner._giving_back(ticket, refused)
        attempt_refused(trace, refused)
        runner.between.gives_up(state, "quota", last)
        no_quota_for_retry(runner.name, refused, last, state)
    except BaseException as error:
        yield from runner._giving_back(ticket, error)
        raise
