"""In-memory quota counters: sliding window, fixed window, in-flight slots (buckets are in
buckets.py).

Each answers `wait(now, cost)` (0.0: the cost fits now; > 0: seconds until it could; inf:
never, the cost exceeds the limit; None: only when a call in flight ends) and, separately,
`take(now, cost)`, so a storage can check several quotas and take all or none. A taken
`Entry` can be given back (`refund`) or corrected once its real cost is known (`adjust`).
Callers hold the storage's lock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from callpolicy._model import MAX_SLIDING_WINDOW

# Boundaries are compared to the nanosecond: float time sums such as 0.001 + 0.999 miss the
# exact instant by an ulp, and a wait computed to the boundary must be enough.
EPS = 1e-9


class Entry:
    """One admitted call's share of one counter (`listed`: kept in a sliding window's entries;
    a call of cost 0 is not, until its cost is corrected above 0)."""

    __slots__ = ("at", "cost", "listed", "live")

    def __init__(self, at: float, cost: float, listed: bool = True) -> None:
        self.at = at
        self.cost = cost
        self.live = True
        self.listed = listed


class Counter(Protocol):
    def wait(self, now: float, cost: float) -> float | None: ...
    def take(self, now: float, cost: float) -> Entry: ...
    def admit(self, now: float, cost: float) -> Entry | float | None: ...
    def refund(self, entry: Entry) -> None: ...
    def adjust(self, entry: Entry, cost: float) -> None: ...
    def end(self, entry: Entry, now: float) -> None: ...


class SlidingWindow:
    """Exact: the calls (cost) admitted in any window (t - period, t] never exceed the limit.

    Keeps one entry per admitted call of cost > 0 still inside the window, at most `most`
    (MAX_SLIDING_WINDOW): a call that would list more waits for the oldest to leave, as in
    Redis (redis.lua "sw"), so calls of tiny costs cannot grow it without bound.
    """

    def __init__(self, limit: float, period: float, most: int | None = None) -> None:
        self.limit = limit
        self.period = period
        self.most = MAX_SLIDING_WINDOW if most is None else most
        self.entries: deque[Entry] = deque()
        self.total = 0.0

    def _expire(self, now: float) -> None:
        cutoff = now - self.period + EPS
        entries = self.entries
        while entries and entries[0].at <= cutoff:
            gone = entries.popleft()
            gone.live = False
            self.total -= gone.cost

    def wait(self, now: float, cost: float) -> float:
        self._expire(now)
        full = cost > 0 and len(self.entries) >= self.most
        if self.total + cost <= self.limit and not full:
            return 0.0
        if cost > self.limit:
            return math.inf
        wait = 0.0
        if full:  # wait for the oldest to leave
            wait = self.entries[len(self.entries) - self.most].at + self.period - now
        excess = self.total + cost - self.limit
        freed = 0.0
        for entry in self.entries if excess > 0 else ():
            freed += entry.cost
            if freed >= excess:
                wait = max(wait, entry.at + self.period - now)
                break
        return max(wait, 1e-9)

    def take(self, now: float, cost: float) -> Entry:
        entry = Entry(now, cost, listed=cost > 0)
        if entry.listed:
            self.entries.append(entry)
        self.total += cost
        return entry

    def admit(self, now: float, cost: float) -> Entry | float:
        """take() if the cost fits now, else wait(): one pass for a lone quota (the hot
        path: a cost of 1 or more cannot list more entries than the limit allows)."""
        entries = self.entries  # _expire, inlined on the hot path
        cutoff = now - self.period + EPS
        while entries and entries[0].at <= cutoff:
            gone = entries.popleft()
            gone.live = False
            self.total -= gone.cost
        if self.total + cost <= self.limit:
            if cost >= 1:
                entry = Entry(now, cost)
                entries.append(entry)
                self.total += cost
                return entry
            if cost == 0 or len(self.entries) < self.most:
                return self.take(now, cost)
        return self.wait(now, cost)

    def refund(self, entry: Entry) -> None:
        self.adjust(entry, 0.0)

    def adjust(self, entry: Entry, cost: float) -> None:
        if not entry.live:  # an expired entry no longer counts
            return
        if not entry.listed and cost > 0:  # a call of cost 0 counts from its admission
            entries = self.entries
            at = len(entries)
            while at and entries[at - 1].at > entry.at:
                at -= 1
            entries.insert(at, entry)
            entry.listed = True
        self.total += cost - entry.cost
        entry.cost = cost

    def end(self, entry: Entry, now: float) -> None:
        return None  # a window counted the call when it was admitted


class FixedWindow:
    """ratelimit's algorithm: a window of one period opens at the first call after the
    previous one closed and admits `limit`. Two adjacent windows may admit 2 x limit within
    less than one period."""

    def __init__(self, limit: float, period: float) -> None:
        self.limit = limit
        self.period = period
        self.start = -math.inf
        self.count = 0.0

    def wait(self, now: float, cost: float) -> float:
        if cost > self.limit:
            return math.inf
        if now - self.start >= self.period - EPS or self.count + cost <= self.limit:
            return 0.0
        return max(self.start + self.period - now, 1e-9)

    def take(self, now: float, cost: float) -> Entry:
        if now - self.start >= self.period - EPS:
            self.start, self.count = now, 0.0
        self.count += cost
        return Entry(self.start, cost)

    def admit(self, now: float, cost: float) -> Entry | float | None:
        return admit_by_wait(self, now, cost)

    def refund(self, entry: Entry) -> None:
        self.adjust(entry, 0.0)

    def adjust(self, entry: Entry, cost: float) -> None:
        if entry.live and entry.at == self.start:  # a closed window's count is gone
            self.count += cost - entry.cost
            entry.cost = cost

    def end(self, entry: Entry, now: float) -> None:
        return None  # a window counted the call when it was admitted


def admit_by_wait(counter: Counter, now: float, cost: float) -> Entry | float | None:
    """take() if wait() says the cost fits now, else the wait."""
    wait = counter.wait(now, cost)
    return counter.take(now, cost) if wait == 0.0 else wait


class InFlight:
    """At most `limit` calls at once; a slot is given back when its call ends (`refund`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0

    def wait(self, now: float, cost: float) -> float | None:
        return 0.0 if self.busy < self.limit else None

    def take(self, now: float, cost: float) -> Entry:
        self.busy += 1
        return Entry(now, 1.0)

    def admit(self, now: float, cost: float) -> Entry | float | None:
        return admit_by_wait(self, now, cost)

    def refund(self, entry: Entry) -> None:
        if entry.live:
            self.busy = max(self.busy - 1, 0)  # 0 after a fork: a parent's call ending here
            entry.live = False

    def adjust(self, entry: Entry, cost: float) -> None:
        return None  # a slot is a slot, whatever the call cost

    def end(self, entry: Entry, now: float) -> None:
        self.refund(entry)
