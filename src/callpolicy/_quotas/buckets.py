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
whose sending was delayed (a busy CPU, a descheduled thread, a new connection) and the next
ones sent on time would reach the server closer together than their intervals. So when a
call ends, the meter is moved to at least where the calls admitted since it would have
left it, had it been counted at its end (or `late` after its admission, if it lasted longer):

    tat = max(tat, min(end, admitted + late) + cost admitted since it x interval)
    late = LATE + room x interval      (room: burst, or size - cost)

While calls queue that changes nothing; with no burst room, the next call goes one
interval after the previous one ended. A call still in flight is taken as counted by its
admission and the guard; `late` bounds what a long call costs the calls overlapping it.
With burst room, a full bucket is not moved by a call late by less than its room (the
server's count is linear there: a late call only changes the order), so `late` grows by
the room: after an idle spell, a first call stalled that long is still covered.
"""

from __future__ import annotations

import math

from callpolicy._quotas.algorithms import EPS, Entry, admit_by_wait

# A call that ended is taken as counted at its end, or this long (plus the bucket's room)
# after its admission if it lasted longer: a send is late by a stall or a new connection,
# not by a long call's length.
LATE = 0.05


class Metered(Entry):
    """An admission to a bucket, with the cost the bucket had admitted before it."""

    __slots__ = ("before",)

    def __init__(self, at: float, cost: float, before: float) -> None:
        super().__init__(at, cost)
        self.before = before


class Bucket:
    """A GCRA meter: `interval` seconds per cost unit, `burst` cost units of room, either
    beyond the call (leaky) or including it (`size`d, a token bucket); a cost above
    `most` never fits."""

    def __init__(
        self,
        interval: float,
        burst: float,
        guard: float,
        sized: bool,
        anchored: bool = True,
        most: float | None = None,
    ) -> None:
        self.interval = interval
        self.burst = burst
        self.guard = guard
        self.sized = sized  # a token bucket: `burst` is its size, the call's cost included
        self.anchored = anchored  # told when calls end (see the module's docstring)
        # The largest cost: a token bucket's size; a leaky bucket's burst and the call.
        self.most = most if most is not None else (burst if sized else burst + 1)
        self.tat = -math.inf
        self.admitted = 0.0  # the cost admitted so far

    def _room(self, cost: float) -> float:
        """The cost units that may go beyond the steady pace with a call of `cost`."""
        return self.burst - cost if self.sized else self.burst

    def _slack(self, cost: float) -> float:
        return self._room(cost) * self.interval - self.guard

    def wait(self, now: float, cost: float) -> float:
        if cost > self.most:
            return math.inf
        wait = self.tat - self._slack(cost) - now
        return 0.0 if wait <= EPS else wait

    def take(self, now: float, cost: float) -> Metered:
        self.tat = max(self.tat, now) + cost * self.interval
        entry = Metered(now, cost, self.admitted)
        self.admitted += cost
        return entry

    def end(self, entry: Entry, now: float) -> None:
        if self.anchored and isinstance(entry, Metered) and entry.live:
            since = self.admitted - entry.before
            late = LATE + max(self._room(entry.cost), 0.0) * self.interval
            self.tat = max(self.tat, min(now, entry.at + late) + since * self.interval)

    def admit(self, now: float, cost: float) -> Entry | float | None:
        return admit_by_wait(self, now, cost)

    def hold(self, until: float) -> None:
        """No call before `until` (an adaptive rate's cut: the server's window is full)."""
        self.tat = max(self.tat, until + self._slack(1.0))

    def refund(self, entry: Entry) -> None:
        self.adjust(entry, 0.0)

    def adjust(self, entry: Entry, cost: float) -> None:
        if entry.live:
            self.tat += (cost - entry.cost) * self.interval
            self.admitted += cost - entry.cost
            entry.cost = cost
