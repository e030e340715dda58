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

# Boundaries are compared to the nanosecond: float time sums such as 0.001 + 0.999 miss the
# exact instant by an ulp, and a wait computed to the boundary must be enough.
EPS = 1e-9


class Entry:
    """One admitted call's share of one counter."""

    __slots__ = ("at", "cost", "live")

    def __init__(self, at: float, cost: float) -> None:
        self.at = at
        self.cost = cost
        self.live = True


class Counter(Protocol):
    def wait(self, now: float, cost: float) -> float | None: ...
    def take(self, now: float, cost: float) -> Entry: ...
    def admit(self, now: float, cost: float) -> Entry | float | None: ...
    def refund(self, entry: Entry) -> None: ...
    def adjust(self, entry: Entry, cost: float) -> None: ...
    def end(self, entry: Entry, now: float) -> None: ...


class SlidingWindow:
    """Exact: the calls (cost) admitted in any window (t - period, t] never exceed the limit.

    Keeps one entry per admitted call still inside the window.
    """

    def __init__(self, limit: float, period: float) -> None:
        self.limit = limit
        self.period = period
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
        if self.total + cost <= self.limit:
            return 0.0
        if cost > self.limit:
            return math.inf
        excess = self.total + cost - self.limit
        freed = 0.0
        for entry in self.entries:
            freed += entry.cost
            if freed >= excess:
                return max(entry.at + self.period - now, 1e-9)
        return self.period  # unreachable: the entries hold the whole total

    def take(self, now: float, cost: float) -> Entry:
        entry = Entry(now, cost)
        self.entries.append(entry)
        self.total += cost
        return entry

    def admit(self, now: float, cost: float) -> Entry | float:
        """take() if the cost fits now, else wait(): one pass for a lone quota."""
        self._expire(now)
        if self.total + cost <= self.limit:
            entry = Entry(now, cost)
            self.entries.append(entry)
            self.total += cost
            return entry
        return self.wait(now, cost)

    def refund(self, entry: Entry) -> None:
        self.adjust(entry, 0.0)

    def adjust(self, entry: Entry, cost: float) -> None:
        if entry.live:  # an expired entry no longer counts
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
