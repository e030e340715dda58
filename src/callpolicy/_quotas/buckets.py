"""The bucket counter (GCRA, the generic cell rate algorithm): leaky bucket, token bucket and
paced windows, in constant memory.

One number is kept: `tat`, the theoretical arrival time, when the calls admitted so far would
have drained if each took `interval` (per cost unit) in turn. A call may go when the calls
ahead of it have drained to within its `slack`:

    leaky bucket (nginx limit_req):   now >= tat - burst x interval           (burst extra calls)
    token bucket (Envoy, AWS):        now >= tat - (size - cost) x interval   (size at once)

and then `tat = max(tat, now) + cost x interval`. Both are the same meter; they differ in how
a server documents the burst. nginx's `rate=10r/s burst=5` is a leaky bucket of burst 5 and a
token bucket of size 6; in both, a call arrives at most `burst` calls ahead of the steady pace.

`guard` is timing slack: the server may see a call up to `guard` sooner, next to the calls
before it, than it was admitted (a thread switch, a network hop, its millisecond clock). It is
added to the wait, so with no burst room it spaces calls `interval + guard` apart; with room,
it keeps `guard` of the room unused, and the steady pace is the full rate.

An `anchored` bucket is also told when each call ends (`end`). The server counted the call
at some instant between its admission and its end, not necessarily at its admission: a call
whose sending was delayed (a busy CPU, a descheduled thread or server) and the next one sent
on time would reach the server closer together than one interval. So when a call ends, the
meter moves as if the call had been counted at its end: `tat` grows by
`max(0, end + cost x interval - tat_after)`, `tat_after` being the `tat` its admission left.
While calls queue (a backlog longer than the call took) that is 0 and costs nothing; with
no burst room, it spaces calls from the previous call's end.
"""

from __future__ import annotations

import math

from callpolicy._quotas.algorithms import EPS, Entry, admit_by_wait


class Metered(Entry):
    """An admission to a bucket, with the `tat` it left."""

    __slots__ = ("tat_after",)

    def __init__(self, at: float, cost: float, tat_after: float) -> None:
        super().__init__(at, cost)
        self.tat_after = tat_after


class Bucket:
    """A GCRA meter: `interval` seconds per cost unit, `burst` cost units of room, either
    beyond the call (leaky) or including it (`size`d, a token bucket)."""

    def __init__(
        self, interval: float, burst: float, guard: float, sized: bool, anchored: bool = True
    ) -> None:
        self.interval = interval
        self.burst = burst
        self.guard = guard
        self.sized = sized  # a token bucket: `burst` is its size, the call's cost included
        self.anchored = anchored  # told when calls end (see the module's docstring)
        self.tat = -math.inf

    def _slack(self, cost: float) -> float:
        room = self.burst - cost if self.sized else self.burst
        return room * self.interval - self.guard

    def wait(self, now: float, cost: float) -> float:
        if self.sized and cost > self.burst:
            return math.inf
        wait = self.tat - self._slack(cost) - now
        return 0.0 if wait <= EPS else wait

    def take(self, now: float, cost: float) -> Metered:
        self.tat = max(self.tat, now) + cost * self.interval
        return Metered(now, cost, self.tat)

    def end(self, entry: Entry, now: float) -> None:
        if self.anchored and isinstance(entry, Metered) and entry.live:
            self.tat += max(0.0, now + entry.cost * self.interval - entry.tat_after)
            entry.tat_after = math.inf  # ended once

    def admit(self, now: float, cost: float) -> Entry | float | None:
        return admit_by_wait(self, now, cost)

    def refund(self, entry: Entry) -> None:
        self.adjust(entry, 0.0)

    def adjust(self, entry: Entry, cost: float) -> None:
        if entry.live:
            shift = (cost - entry.cost) * self.interval
            self.tat += shift
            entry.cost = cost
            if isinstance(entry, Metered):
                entry.tat_after += shift
