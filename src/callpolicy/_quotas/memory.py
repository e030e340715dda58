"""Where quota state lives, chosen by URI: "memory://" (this process) or "redis://..." (every
process using the same server). A storage hands out `Group`s: the quotas of one call that
live in it, checked and taken together, all or none."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from callpolicy._clock import CLOCK
from callpolicy._forks import renew_after_fork
from callpolicy._model import BUCKETS, Quota
from callpolicy._quotas.algorithms import Counter, Entry, FixedWindow, InFlight, SlidingWindow
from callpolicy._quotas.buckets import Bucket
from callpolicy._quotas.learned import LearnedLimits

# What a counter's limit is made of: set from a fresh counter when a learned limit changes.
_LIMIT_PARTS = ("limit", "interval", "burst", "most")


class Refusal:
    """Why a call was not admitted: the quota that holds it back and for how long
    (`wait` None: until a call in flight ends; inf: never, the cost is above the limit).
    `poll`: with `wait` None, how often to look again (a call ending in another process
    wakes nobody here)."""

    __slots__ = ("poll", "quota", "wait")

    def __init__(self, quota: Quota, wait: float | None, poll: float | None = None) -> None:
        self.quota = quota
        self.wait = wait
        self.poll = poll

    def sooner_than(self, best: Refusal | None) -> Refusal:
        """Of this and another candidate's refusal, the one that may clear first (a timed
        wait over an open-ended one)."""
        if best is None or best.wait is None:
            return self if self.wait is not None or best is None else best
        if self.wait is not None and self.wait < best.wait:
            return self
        return best


class Group(Protocol):
    """Some quotas of one call, in one storage. A `remote` group (Redis) also has
    `async_try_take`, `async_refund`, `async_release` and `async_adjust`, awaited by async
    callers (see _steps.Method)."""

    names: frozenset[str]
    has_slots: bool  # holds in-flight slots, given back when the call ends
    told_of_ends: bool  # is told when the call ends (`release`): slots, anchored buckets
    weighted: bool  # takes the call's cost (not 1) from some quota
    max_wait: float
    remote: bool  # its state is behind I/O (Redis): async callers must await it

    def try_take(self, cost: float) -> Any | Refusal: ...
    def take_one(self) -> Refusal | None: ...
    def refund(self, taken: Any) -> None: ...
    def release(self, taken: Any) -> None: ...
    def adjust(self, taken: Any, cost: float) -> None: ...


class MemoryStorage:
    """Counters of one registry's in-process quotas, by name, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._counters: dict[str, tuple[tuple[Any, ...], Counter]] = {}
        self.learned = LearnedLimits(self.follow, self.hold)  # limits learned from responses
        renew_after_fork(self)

    def after_fork(self) -> None:
        """In a forked child: a new lock, and no call in flight (they are the parent's)."""
        self.lock = threading.Lock()
        for _, counter in self._counters.values():
            if isinstance(counter, InFlight):
                counter.busy = 0

    def counter(self, quota: Quota) -> Counter:
        """The counter of `quota`, kept across reloads while what it counts is unchanged
        (a new max_wait or on_unavailable keeps the calls already counted)."""
        counts = (
            quota.rate,
            quota.algorithm,
            quota.weighted,
            quota.guard,
            quota.concurrency,
            quota.burst,
            quota.spread,
            quota.learn,
            quota.adapt,
        )
        with self.lock:
            known = self._counters.get(quota.name)
            if known is None or known[0] != counts:
                fresh = make_counter(self.learned.current(quota))
                known = self._counters[quota.name] = (counts, fresh)
            return known[1]

    def follow(self, quota: Quota) -> None:
        """`quota`'s limit is now its `rate` (learned): its counter counts by it from the
        next admission on, keeping every call it already counted."""
        with self.lock:
            known = self._counters.get(quota.name)
            if known is not None:
                fresh = make_counter(quota)
                for part in _LIMIT_PARTS:
                    if hasattr(fresh, part):
                        setattr(known[1], part, getattr(fresh, part))

    def hold(self, name: str, until: float) -> None:
        """Quota `name` admits no call before `until` (a bucket: a window holds its calls
        by itself)."""
        with self.lock:
            known = self._counters.get(name)
            if known is not None and isinstance(known[1], Bucket):
                known[1].hold(until)

    def group(self, quotas: Sequence[Quota]) -> MemoryGroup:
        return MemoryGroup(self, quotas)


def anchored(quota: Quota) -> bool:
    """A bucket told when its calls end (see buckets.py); not a spread window: the windows
    it stands for counted calls when they arrived."""
    return quota.algorithm in BUCKETS


def make_counter(quota: Quota) -> Counter:
    if quota.concurrency is not None:
        return InFlight(quota.concurrency)
    assert quota.rate is not None
    calls, period, guard = float(quota.rate.calls), quota.rate.period, quota.guard
    if quota.algorithm in BUCKETS:
        sized = quota.algorithm == "token-bucket"
        return Bucket(period / calls, quota.bucket_room, guard, sized)
    if quota.spread:  # the window's calls evenly apart: its guard spread over them
        return Bucket((period + guard) / calls, 0, 0.0, sized=False, anchored=False, most=calls)
    if quota.algorithm == "fixed-window":
        return FixedWindow(calls, period + guard)
    return SlidingWindow(calls, period + guard)


Taken = list[tuple[Counter, Entry]]


class MemoryGroup:
    remote = False

    def __init__(self, storage: MemoryStorage, quotas: Sequence[Quota]) -> None:
        self.storage = storage  # its lock is renewed after a fork: read it each time
        self.items = [(q, storage.counter(q), q.weighted) for q in quotas]
        self.names = frozenset(q.name for q in quotas)
        self.has_slots = any(q.concurrency is not None for q in quotas)
        self.told_of_ends = any(q.concurrency is not None or anchored(q) for q in quotas)
        self.weighted = any(q.weighted for q in quotas)
        self.max_wait = max(q.max_wait for q in quotas)
        self.lone = self.items[0] if len(self.items) == 1 else None
        self.in_force = storage.learned.current  # a refusal names the limit in force

    def take_one(self) -> Refusal | None:
        """The fast path: take a cost of 1 if it fits now (None), with nothing to give back
        later; else the refusal."""
        lone = self.lone
        if lone is None:
            outcome = self.try_take(1.0)
            return outcome if isinstance(outcome, Refusal) else None
        with self.storage.lock:
            admitted = lone[1].admit(CLOCK.now(), 1.0)
        return None if isinstance(admitted, Entry) else Refusal(self.in_force(lone[0]), admitted)

    def try_take(self, cost: float) -> Taken | Refusal:
        lone = self.lone
        if lone is not None:  # one quota: check and take in one pass
            quota, counter, weighted = lone
            with self.storage.lock:
                outcome = counter.admit(CLOCK.now(), cost if weighted else 1.0)
            if isinstance(outcome, Entry):
                return [(counter, outcome)]
            return Refusal(self.in_force(quota), outcome)
        with self.storage.lock:
            now = CLOCK.now()
            refusal: Refusal | None = None
            for quota, counter, weighted in self.items:
                wait = counter.wait(now, cost if weighted else 1.0)
                if wait == 0.0:
                    continue
                # A timed wait outranks "until a call ends": waiting less would not help.
                if refusal is None or (
                    wait is not None and (refusal.wait is None or wait > refusal.wait)
                ):
                    refusal = Refusal(self.in_force(quota), wait)
            if refusal is not None:
                return refusal
            return [
                (counter, counter.take(now, cost if weighted else 1.0))
                for _, counter, weighted in self.items
            ]

    def refund(self, taken: Taken) -> None:
        with self.storage.lock:
            for counter, entry in taken:
                counter.refund(entry)

    def release(self, taken: Taken) -> None:
        with self.storage.lock:
            now = CLOCK.now()
            for counter, entry in taken:
                counter.end(entry, now)

    def adjust(self, taken: Taken, cost: float) -> None:
        with self.storage.lock:
            for (_, _, weighted), (counter, entry) in zip(self.items, taken, strict=True):
                if weighted:
                    counter.adjust(entry, cost)
