"""What one admitted attempt holds, and the candidates it may be admitted through."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from callpolicy._options import Costing, PoolToken, reset_pool_key, set_pool_key
from callpolicy._quotas.memory import Group
from callpolicy._quotas.waiting import WaitQueue
from callpolicy._steps import Method, Steps, async_run, run
from callpolicy._text import Throttled, shown_value

_bad_costs = Throttled(60.0)


class Grant:
    """What one attempt holds: the takes of each group, and the pool member it got."""

    __slots__ = ("ends", "member", "plain", "pool", "queue", "takes", "weighted")

    def __init__(
        self,
        takes: list[tuple[Group, Any]],
        pool: str | None,
        member: str | None,
        queue: WaitQueue | None,
        weighted: bool,
    ) -> None:
        self.takes = takes
        self.pool = pool
        self.member = member
        self.queue = queue
        self.weighted = weighted
        self.ends = any(group.told_of_ends for group, _ in takes)
        # Nothing to do around the call: no end to tell, key to name, cost to correct.
        self.plain = not self.ends and member is None and not weighted

    def run(self, fn: Any, args: Any, kwargs: Any, costing: Costing | None) -> Any:
        """Call `fn` holding this grant: the pool key set, slots given back, cost corrected."""
        token = self.enter()
        try:
            result = fn(*args, **kwargs)
        finally:
            run(self.leave(token))
        run(self.settle(costing, result))
        return result

    async def async_run(self, fn: Any, args: Any, kwargs: Any, costing: Costing | None) -> Any:
        token = self.enter()
        try:
            result = await fn(*args, **kwargs)
        finally:
            await async_run(self.leave(token))
        await async_run(self.settle(costing, result))
        return result

    def enter(self) -> PoolToken | None:
        """The attempt starts: name its pool key for `callpolicy.pool_key()`."""
        return set_pool_key(self.pool, self.member) if self.pool and self.member else None

    def leave(self, token: PoolToken | None) -> Steps[None]:
        """The attempt ended: give back in-flight slots (waking who waits for them), and tell
        the buckets when it ended."""
        if token is not None:
            reset_pool_key(token)
        if not self.ends:
            return
        for group, taken in self.takes:
            if group.told_of_ends:
                yield Method(group, "release", taken)
                if group.has_slots and self.queue is not None:
                    self.queue.notify(group.names)

    def settle(self, costing: Costing | None, result: Any) -> Steps[None]:
        """Correct a weighted quota's estimated cost by `actual_cost(result)`."""
        actual = costing.actual if costing is not None and self.weighted else None
        if actual is None:
            return
        cost = _actual_cost(actual, result)
        if cost is not None:
            for group, taken in self.takes:
                if group.weighted:
                    yield Method(group, "adjust", taken, cost)


class Candidate:
    """One way to admit a call: a group per storage (and the pool member it stands for)."""

    def __init__(self, groups: Sequence[Group], pool: str | None, member: str | None) -> None:
        self.groups = tuple(groups)
        self.pool = pool
        self.member = member


PLAIN = Grant([], None, None, None, weighted=False)  # an admission with nothing to do after


def _actual_cost(actual: Any, result: Any) -> float | None:
    """`actual_cost(result)`, if it is a finite number >= 0; else None: the estimate stays,
    and a warning says why. The call itself succeeded: its result is returned whatever
    actual_cost does (raising included), and the call is never made again for it."""
    key = (getattr(actual, "__module__", None), getattr(actual, "__qualname__", None))
    try:
        cost = actual(result)
    except Exception as error:
        _bad_costs.warn(
            key,
            "actual_cost raised %s: %s; the estimated cost stays (said at most once a minute)",
            type(error).__name__,
            shown_value(error),
        )
        return None
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 <= cost < math.inf:
        return float(cost)
    _bad_costs.warn(
        key,
        "actual_cost returned %s, not a number >= 0: the estimated cost stays "
        "(said at most once a minute)",
        shown_value(cost),
    )
    return None
