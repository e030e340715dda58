"""Admitting one attempt through all the quotas of its policy, waiting as they allow.

The quotas of a call are grouped by storage; each group is checked and taken atomically, and
when a later group refuses, the earlier ones are given back: a call takes all or none. A
policy that draws from a key pool has one candidate set per pool member, tried in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from callpolicy._clock import CLOCK
from callpolicy._errors import QuotaExceeded, QuotaUnavailable
from callpolicy._events import QuotaRefused, SleepEvent, emit, wants
from callpolicy._explain import quota_cause
from callpolicy._model import Quota
from callpolicy._options import CallArgs, CallOptions, Costing, current_options
from callpolicy._quotas.counters import LOCAL, Counters
from callpolicy._quotas.grant import PLAIN, Candidate, Grant
from callpolicy._quotas.memory import Group, Refusal
from callpolicy._quotas.waiting import Waited, WaitQueue
from callpolicy._steps import Method, Sleep, Steps, Wait, async_run, run


class Admission:
    """Admits the attempts of one policy."""

    remote = True  # admission may wait: async callers await async_admit (see _steps.Method)

    def __init__(
        self,
        policy: str,
        max_attempts: int,
        candidates: Sequence[Candidate],
        queue: WaitQueue,
        names: frozenset[str],
        counters: Counters,
    ) -> None:
        self.policy = policy
        self.max_attempts = max_attempts
        self.candidates = tuple(candidates)
        self.queue = queue
        self.names = names
        self.weighted = any(g.weighted for c in candidates for g in c.groups)
        self._waiting = queue.waiting
        self.counters = counters  # and each candidate's admission counts, taken without a lock
        self._ticks = [
            counters.ticker(n for g in c.groups for n in g.names) for c in self.candidates
        ]
        self._fast_tick = self._ticks[0]
        only = self.candidates[0]
        # The common case, taken without reading options or building a Grant: one candidate,
        # one storage, nothing told of the call's end, no pool key, no weighted quota.
        self.fast_group = (
            only.groups[0]
            if len(self.candidates) == 1
            and len(only.groups) == 1
            and not only.groups[0].told_of_ends
            and not self.weighted
            and only.member is None
            else None
        )

    # -- one attempt -----------------------------------------------------------------------
    def admit(self, attempt: int, deadline_at: float | None, call: CallArgs) -> Grant:
        """Wait for (or refuse) admission of attempt `attempt` under the call's options."""
        first = self._fast(True)  # (positional: the hot path)
        if first is PLAIN:
            return PLAIN
        steps = self.acquire(attempt, deadline_at, *self._request(call), first, False)
        return run(self._counted(steps, attempt))

    async def async_admit(self, attempt: int, deadline_at: float | None, call: CallArgs) -> Grant:
        first = self._fast(False)
        if first is PLAIN:
            return PLAIN
        steps = self.acquire(attempt, deadline_at, *self._request(call), first, True)
        return await async_run(self._counted(steps, attempt))

    def _request(self, call: CallArgs) -> tuple[float, CallOptions]:
        """The call's cost and options. (The cost function is the user's: called here, not
        in the steps, so any error it raises passes unchanged.)"""
        options = current_options()
        return (_cost(options.cost, *call) if self.weighted else 1.0), options

    def _fast(self, may_block: bool) -> Grant | Refusal | None:
        """The common case, taken without reading options or building a Grant: PLAIN when
        admitted, else the refusal; None when it does not apply (a storage behind I/O for a
        caller that may not block, or calls already waiting)."""
        group = self.fast_group
        if group is None or self._waiting or (group.remote and not may_block):
            return None
        try:
            refusal = group.take_one()
        except QuotaUnavailable as error:
            self.counters.add(group.names, "failed_closed")
            raise self._named(error) from error.__cause__
        if refusal is not None:
            return refusal
        self._fast_tick()
        return PLAIN

    # -- one try, all or none ----------------------------------------------------------------
    def try_once(self, cost: float) -> Steps[Grant | Refusal]:
        best: Refusal | None = None
        for candidate, tick in zip(self.candidates, self._ticks, strict=True):
            takes: list[tuple[Group, Any]] = []
            for group in candidate.groups:
                try:
                    taken = yield Method(group, "try_take", cost)
                except BaseException as error:  # QuotaUnavailable, a cancellation: keep nothing
                    if isinstance(error, QuotaUnavailable):
                        self.counters.add(group.names, "failed_closed")
                    yield from self._give_back(takes)
                    raise self._named(error) from error.__cause__
                if isinstance(taken, Refusal):
                    yield from self._give_back(takes)
                    best = taken.sooner_than(best)
                    break
                takes.append((group, taken))
            else:
                tick()
                return Grant(takes, candidate.pool, candidate.member, self.queue, self.weighted)
        assert best is not None
        return best

    # -- waiting ---------------------------------------------------------------------------
    def acquire(
        self,
        attempt: int,
        deadline_at: float | None,
        cost: float,
        options: CallOptions,
        first: Grant | Refusal | None,
        is_async: bool,
    ) -> Steps[Grant]:
        """Admission in order, waiting as the quotas allow. `first`: the refusal of a try
        just made (do not ask the storage twice)."""
        assert not isinstance(first, Grant)
        self._no_queue_for_non_blocking(first, options.blocking)
        if first is None and not self.queue.busy(self.names):
            outcome = yield from self.try_once(cost)
            if isinstance(outcome, Grant):
                return outcome
            first = outcome
        if first is not None:
            self._check(first, 0.0, deadline_at, options.blocking)
        ticket = self.queue.join(self.names, options.priority, is_async)
        started = CLOCK.now()
        held = Waited()  # said once, when over: its real length and what it waited for
        try:
            while True:
                if self.queue.is_head(ticket):
                    # The refusal just had is as fresh as a new try: sleep on it first.
                    # (A refusal "until a call ends" is not: a release may have come before
                    # this ticket joined the queue and so woke nobody.)
                    if first is not None and first.wait is not None:
                        outcome = first
                    else:
                        outcome = yield from self.try_once(cost)
                    first = None
                    if isinstance(outcome, Grant):
                        held.admitted = True
                        return outcome
                    waited = CLOCK.now() - started
                    budget = self._check(outcome, waited, deadline_at, options.blocking)
                    if outcome.wait is not None:
                        held.begin(outcome.quota, "quota")
                        yield Sleep(outcome.wait)
                        continue
                    held.begin(outcome.quota, "slot")
                    timeout = min(budget, outcome.poll or budget)
                    slot: Quota | None = outcome.quota
                else:
                    first = None  # stale by the time this call is a head
                    budget = self._budget(None, CLOCK.now() - started, deadline_at)
                    held.begin(None, "turn")
                    timeout, slot = budget, None
                if not (yield Wait(ticket.wait, ticket.async_wait, timeout)) and timeout >= budget:
                    self._out_of_time(budget, slot)
        finally:
            self.queue.leave(ticket)
            self._said(held, attempt)

    def _counted(self, steps: Steps[Grant], attempt: int) -> Steps[Grant]:
        """`steps`, counting a refusal for the quotas it names (an event for hooks)."""
        try:
            return (yield from steps)
        except QuotaExceeded as error:
            if not isinstance(error, QuotaUnavailable):  # counted where Redis failed
                self.counters.add(self._refusers(error.quota), "refused")
            if wants("quota_refused"):
                emit(QuotaRefused(self.policy, attempt, error.quota, error.reason))
            raise

    def _refusers(self, named: str) -> list[str]:
        """The quotas a QuotaExceeded names: one (a fallback's "x(local)" is x), or several
        joined by ", "."""
        names = [named] if named.removesuffix(LOCAL) in self.names else named.split(", ")
        return [name for name in names if name.removesuffix(LOCAL) in self.names]

    def _no_queue_for_non_blocking(self, first: Refusal | None, blocking: bool) -> None:
        """A call that may not wait does not queue behind calls already waiting."""
        if not blocking and first is None and self.queue.busy(self.names):
            names = ", ".join(sorted(self.names))
            raise QuotaExceeded(self.policy, names, math.inf, 0.0, "non-blocking")

    def _give_back(self, takes: list[tuple[Group, Any]]) -> Steps[None]:
        """Refund a partial admission, and wake who waits for the slots it held."""
        for group, taken in takes:
            yield Method(group, "refund", taken)
            if group.has_slots:
                self.queue.notify(group.names)

    def _named(self, error: BaseException) -> BaseException:
        """`error` naming this policy, when it is a QuotaUnavailable raised by a storage."""
        if isinstance(error, QuotaUnavailable) and not error.policy:
            return QuotaUnavailable(error.quota, error.storage, error.detail, self.policy)
        return error

    # -- bounds ----------------------------------------------------------------------------
    def _budget(self, quota: Quota | None, waited: float, deadline_at: float | None) -> float:
        """Seconds this call may still wait: the quota's max_wait, then the deadline."""
        limit = self._max_wait(quota) - waited
        if deadline_at is not None:
            limit = min(limit, deadline_at - CLOCK.now())
        return max(limit, 0.0)

    def _max_wait(self, quota: Quota | None) -> float:
        if quota is not None:
            return quota.max_wait
        return max(g.max_wait for c in self.candidates for g in c.groups)

    def _check(
        self, refusal: Refusal, waited: float, deadline_at: float | None, blocking: bool
    ) -> float:
        """Raise QuotaExceeded if the refusal's wait does not fit; else the budget left."""
        quota, wait = refusal.quota, refusal.wait
        if wait is not None and math.isinf(wait):
            raise QuotaExceeded(self.policy, quota.name, wait, quota.max_wait, "cost")
        if not blocking:
            never = math.inf if wait is None else wait
            raise QuotaExceeded(self.policy, quota.name, never, 0.0, "non-blocking")
        left_max = quota.max_wait - waited
        if wait is not None and wait > left_max:
            raise QuotaExceeded(self.policy, quota.name, wait, max(left_max, 0.0), "max_wait")
        if deadline_at is not None:
            left = deadline_at - CLOCK.now()
            if wait is not None and wait > left:
                raise QuotaExceeded(self.policy, quota.name, wait, max(left, 0.0), "deadline")
        return self._budget(quota, waited, deadline_at)

    def _out_of_time(self, budget: float, quota: Quota | None) -> None:
        """Out of time waiting for `quota`'s slot, or (None) for its turn among the calls of
        all its quotas: named so, and so counted."""
        names = quota.name if quota is not None else ", ".join(sorted(self.names))
        raise QuotaExceeded(self.policy, names, math.inf, budget, "max_wait")

    def _event(self, held: Waited, seconds: float, attempt: int) -> SleepEvent:
        quota = held.quota
        if quota is None:  # waited for its turn on all of them
            cause, name = f"quota {', '.join(sorted(self.names))}", None
        else:
            cause, name = quota_cause(quota), quota.name
        return SleepEvent(
            self.policy,
            attempt,
            self.max_attempts,
            "quota",
            seconds,
            cause,
            held.trigger,
            name,
            gave_up=not held.admitted,
        )

    def _said(self, held: Waited, attempt: int) -> None:
        """The wait is over (admitted, or giving up): say once how long it lasted, and for
        what. (A bucket told of a call's end may add a few ms to a wait: one line still.)"""
        if held.since is not None:
            seconds = CLOCK.now() - held.since
            waited = [held.quota.name] if held.quota is not None else self.names
            self.counters.add(waited, "waited", seconds)
            emit(self._event(held, seconds, attempt))
            held.since = None


def _cost(chosen: float | None, costing: Costing | None, args: Any, kwargs: Any) -> float:
    """The call's cost: a call_options(cost=...) block, else the decorator's cost=."""
    if chosen is not None:
        return float(chosen)
    if costing is None or costing.cost is None:
        return 1.0
    cost = costing.cost(*args, **kwargs) if callable(costing.cost) else costing.cost
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost < math.inf:
        raise ValueError(f"a call's cost must be a finite number >= 0 (got {cost!r})")
    return float(cost)
