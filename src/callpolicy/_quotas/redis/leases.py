"""In-flight slots in Redis are leases (a quota's `lease`, 30 s by default), renewed while
their calls run: a crashed worker's slot comes back within its lease, and a call longer than
the lease keeps its slot.

One daemon thread per storage renews, every third of the shortest lease held, every slot
this process holds in it: one script round trip per group of quotas (sync and async calls
alike: the thread uses the storage's sync client). It starts with the first slot taken and
stops when it finds none held. A renewal that fails (Redis unreachable) is logged at most
every 30 s and tried again at the next tick; it never changes a call's outcome. A slot whose
lease lapsed before it was renewed (Redis away longer than the lease) is not taken back:
another call may hold it now.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from callpolicy._forks import renew_after_fork
from callpolicy._model import Quota
from callpolicy._quotas.redis.script import Arguments
from callpolicy._text import Throttled, format_seconds

WARN_EVERY = 30.0
CHUNK = 1_000  # ids per round trip: a process holding more slots sends several


class Owner(Protocol):
    """The storage (RedisStorage): its server, and its scripts on the sync client."""

    @property
    def storage(self) -> Any: ...
    @property
    def scripts(self) -> Sequence[Any]: ...


class Leased(Protocol):
    """A group of quotas (RedisGroup), some of them in-flight slots when `has_slots`."""

    keys: list[str]
    names: frozenset[str]
    quotas: list[Quota]
    has_slots: bool
    arguments: Arguments


def lease_of(group: Leased) -> float:
    """The shortest lease of a group's slots, in seconds."""
    return min(q.lease for q in group.quotas if q.concurrency is not None)


class Leases:
    """The slots one storage's calls hold, by group, and the thread renewing them."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self.where = str(owner.storage)
        self._warned = Throttled(WARN_EVERY)
        self._start()
        renew_after_fork(self)

    def _start(self) -> None:
        self._lock = threading.Condition(threading.Lock())
        self._held: dict[Leased, set[str]] = {}
        self._thread: threading.Thread | None = None
        self._every = 0.0  # the running thread's tick

    def after_fork(self) -> None:
        """In a forked child: the parent's calls and thread are not ours."""
        self._start()

    def hold(self, group: Leased, admission: str) -> None:
        """Keep renewing the slots of `admission` until `drop`."""
        if not group.has_slots:
            return
        every = lease_of(group) / 3
        with self._lock:
            self._held.setdefault(group, set()).add(admission)
            if self._thread is None:
                self._every = every
                thread = threading.Thread(target=self._run, name="callpolicy-leases", daemon=True)
                thread.start()  # if it cannot start, the next hold tries again
                self._thread = thread
            elif every < self._every:
                self._lock.notify()  # a shorter lease: tick sooner

    def drop(self, group: Leased, admission: str) -> None:
        if not group.has_slots:
            return
        with self._lock:
            held = self._held.get(group)
            if held is not None:
                held.discard(admission)
                if not held:
                    del self._held[group]

    def held(self) -> int:
        """How many slots are held (and renewed) now."""
        with self._lock:
            return sum(len(ids) for ids in self._held.values())

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._held:
                        self._every = min(lease_of(group) for group in self._held) / 3
                        self._lock.wait(self._every)
                    if not self._held:  # idle: a later hold starts a new thread
                        self._thread = None
                        return
                    batch = [(group, sorted(ids)) for group, ids in self._held.items()]
                for group, ids in batch:
                    for start in range(0, len(ids), CHUNK):
                        try:
                            self._renew(group, ids[start : start + CHUNK])
                        except Exception:  # a hook, a logging handler: never stops renewals
                            continue
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None  # however it ended, a later hold starts another

    def _renew(self, group: Leased, ids: list[str]) -> None:
        try:
            reply = self.owner.scripts[0](keys=group.keys, args=group.arguments.renewal(ids))
        except Exception as error:  # never the call's business: tried again next tick
            self._warned.warn(
                "failed",
                "quota storage %s: in-flight slots of %s not renewed (%s); trying again every "
                "%s (this warning repeats at most every %ds)",
                self.where,
                ", ".join(sorted(group.names)),
                error,
                format_seconds(round(lease_of(group) / 3, 3)),
                WARN_EVERY,
                storage=self.where,
            )
            return
        lost: dict[str, set[int]] = {}  # id: the indexes of the quotas whose slot lapsed
        for item in reply[2:]:
            index, _, id_ = _text(item).partition(":")
            lost.setdefault(id_, set()).add(int(index) - 1)
        slots = {i for i, q in enumerate(group.quotas) if q.concurrency is not None}
        with self._lock:  # a call that ended meanwhile gave its slot back: not lapsed
            held = self._held.get(group, set())
            lost = {id_: quotas for id_, quotas in lost.items() if id_ in held}
            # renewed no more once every slot of it is gone; its call ends as usual
            held.difference_update(id_ for id_, quotas in lost.items() if quotas >= slots)
            if not held:
                self._held.pop(group, None)
        if lost:
            names = sorted({group.quotas[i].name for quotas in lost.values() for i in quotas})
            self._warned.warn(
                "lapsed",
                "quota storage %s: %d in-flight slot(s) of %s gone before renewal (Redis away "
                "longer than the lease %s, restarted without its data, or the key evicted); "
                "other calls may take them",
                self.where,
                sum(len(quotas) for quotas in lost.values()),
                ", ".join(names),
                format_seconds(lease_of(group)),
                storage=self.where,
            )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
