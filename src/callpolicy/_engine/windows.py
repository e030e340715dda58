"""A circuit breaker's sliding window of outcomes: the last N calls (`CountWindow`), or
those of the last T seconds (`TimeWindow`), each keeping running totals of calls, failures
and slow calls so reading them costs nothing. Not thread-safe: the breaker holds its lock.

As resilience4j's, the time window is kept in buckets: TIME_BUCKETS of T/TIME_BUCKETS each,
the oldest dropped whole, so it covers between 90% and 100% of T (memory stays bounded
however many calls a window holds).
"""

from __future__ import annotations

from typing import Protocol

from callpolicy._model import TIME_BUCKETS

FAILED = 1
SLOW = 2  # the bit above FAILED: `outcome >> 1` is 1 for a slow call


class Window(Protocol):
    calls: int
    failures: int
    slow: int

    def add(self, outcome: int, now: float) -> None: ...

    def expire(self, now: float) -> None: ...

    def clear(self) -> None: ...


class CountWindow:
    """The outcomes of the last `size` calls, in a ring of one byte each."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.clear()

    def clear(self) -> None:
        self.ring = bytearray(self.size)
        self.next = 0
        self.calls = self.failures = self.slow = 0

    def add(self, outcome: int, now: float) -> None:
        index, ring = self.next, self.ring
        if self.calls == self.size:  # full: the oldest leaves
            old = ring[index]
            if old:
                self.failures -= old & FAILED
                self.slow -= old >> 1
        else:
            self.calls += 1
        ring[index] = outcome
        if outcome:
            self.failures += outcome & FAILED
            self.slow += outcome >> 1
        index += 1
        self.next = 0 if index == self.size else index

    def add_successes(self, count: int) -> None:
        """`count` fast successes, in a row."""
        ring, size = self.ring, self.size
        if count >= size:  # they fill the ring
            ring[:] = bytes(size)
            self.next, self.calls, self.failures, self.slow = 0, size, 0, 0
            return
        index = self.next
        for _ in range(count):
            if self.calls == size:
                old = ring[index]
                if old:
                    self.failures -= old & FAILED
                    self.slow -= old >> 1
                    ring[index] = 0
            else:
                self.calls += 1
            index += 1
            if index == size:
                index = 0
        self.next = index

    def expire(self, now: float) -> None:
        pass  # a count window forgets nothing by time


class TimeWindow:
    """The outcomes of the last `seconds`, in TIME_BUCKETS buckets."""

    def __init__(self, seconds: float) -> None:
        self.width = seconds / TIME_BUCKETS
        self.clear()

    def clear(self) -> None:
        self.counts = [[0, 0, 0] for _ in range(TIME_BUCKETS)]  # calls, failures, slow
        self.head = -1  # the newest bucket's number (time // width)
        self.calls = self.failures = self.slow = 0

    def expire(self, now: float) -> None:
        """Drop the buckets older than the window at `now`."""
        newest = int(now // self.width)
        if newest <= self.head:
            return
        first = max(self.head + 1, newest - TIME_BUCKETS + 1)
        for number in range(first, newest + 1):
            bucket = self.counts[number % TIME_BUCKETS]
            self.calls -= bucket[0]
            self.failures -= bucket[1]
            self.slow -= bucket[2]
            bucket[0] = bucket[1] = bucket[2] = 0
        self.head = newest

    def add(self, outcome: int, now: float) -> None:
        self.expire(now)
        bucket = self.counts[self.head % TIME_BUCKETS]
        failed, slow = outcome & FAILED, (outcome & SLOW) >> 1
        bucket[0] += 1
        bucket[1] += failed
        bucket[2] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow
