"""The queue of calls waiting for quota: served in order, higher priority first.

A call that finds its quotas full joins the queue with a rank (-priority, arrival). Only a
*head* (no better-ranked waiter shares one of its quotas) may try again; the others wait to
be woken. So a late call never jumps ahead of an earlier one, and the best-ranked waiter of
a quota is always a head: waiting on several quotas cannot deadlock. Threads wait on a
`threading.Event`, tasks on an `asyncio.Event` set through their loop, so both may share it.
`Waited` is one call's wait: since when, and for what.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Iterable

from callpolicy._clock import CLOCK
from callpolicy._events import SleepTrigger
from callpolicy._forks import renew_after_fork
from callpolicy._model import Quota


class Ticket:
    """One waiting call."""

    __slots__ = ("_loop", "async_event", "event", "names", "rank")

    def __init__(self, rank: tuple[int, int], names: frozenset[str], is_async: bool) -> None:
        self.rank = rank
        self.names = names
        self.event: threading.Event | None = None
        self.async_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if is_async:
            self._loop = asyncio.get_running_loop()
            self.async_event = asyncio.Event()
        else:
            self.event = threading.Event()

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
        elif self._loop is not None and self.async_event is not None:
            # A closed loop raises RuntimeError: nobody waits there any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.async_event.set)

    def wait(self, timeout: float) -> bool:
        """Block until woken or `timeout` seconds pass; True if woken."""
        assert self.event is not None
        woken = self.event.wait(timeout)
        self.event.clear()
        return woken

    async def async_wait(self, timeout: float) -> bool:
        assert self.async_event is not None
        try:
            await asyncio.wait_for(self.async_event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            self.async_event.clear()
        return True


class WaitQueue:
    """Waiting calls of one registry, across all its quotas."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tickets: list[Ticket] = []  # sorted by rank
        self.waiting: dict[str, int] = {}  # quota name -> waiters
        self._arrivals = itertools.count()
        renew_after_fork(self)

    def after_fork(self) -> None:
        """In a forked child: a new lock, and nobody waiting (the waiters are the parent's
        threads). `waiting` is cleared in place: admissions hold it."""
        self._lock = threading.Lock()
        self._tickets.clear()
        self.waiting.clear()

    def busy(self, names: Iterable[str]) -> bool:
        """Whether a call already waits on one of these quotas (then a newcomer queues too)."""
        waiting = self.waiting
        return bool(waiting) and any(waiting.get(name) for name in names)

    def join(self, names: frozenset[str], priority: int, is_async: bool) -> Ticket:
        ticket = Ticket((-priority, next(self._arrivals)), names, is_async)
        with self._lock:
            index = len(self._tickets)
            while index and self._tickets[index - 1].rank > ticket.rank:
                index -= 1
            self._tickets.insert(index, ticket)
            for name in names:
                self.waiting[name] = self.waiting.get(name, 0) + 1
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """`ticket` was admitted or gave up: wake whoever became a head."""
        with self._lock:
            self._tickets.remove(ticket)
            for name in ticket.names:
                left = self.waiting[name] - 1
                if left:
                    self.waiting[name] = left
                else:
                    del self.waiting[name]
            self._wake_heads(ticket.names)

    def is_head(self, ticket: Ticket) -> bool:
        with self._lock:
            for other in self._tickets:
                if other is ticket:
                    return True
                if not other.names.isdisjoint(ticket.names):
                    return False
            return True

    def notify(self, names: frozenset[str]) -> None:
        """Capacity came back on `names` (a call in flight ended): wake their heads."""
        if self.busy(names):
            with self._lock:
                self._wake_heads(names)

    def _wake_heads(self, names: frozenset[str]) -> None:
        seen: set[str] = set()
        for ticket in self._tickets:
            if seen.isdisjoint(ticket.names) and not ticket.names.isdisjoint(names):
                ticket.wake()
            seen |= ticket.names


_RANK = {"turn": 0, "slot": 1, "quota": 2}


class Waited:
    """A call's wait for admission: since when, and for what: a quota's time ("quota"), a
    call in flight to end ("slot"), or the calls queued ahead ("turn"), in that rank."""

    __slots__ = ("admitted", "quota", "since", "trigger")

    def __init__(self) -> None:
        self.admitted = False
        self.since: float | None = None
        self.quota: Quota | None = None
        self.trigger: SleepTrigger = "turn"

    def begin(self, quota: Quota | None, trigger: SleepTrigger) -> None:
        if self.since is None:
            self.since = CLOCK.now()
        if self.quota is None or _RANK[trigger] >= _RANK[self.trigger]:
            self.quota, self.trigger = quota or self.quota, trigger
