"""Limits quotas learned from responses (`learn`): one state per quota, shared by every
policy naming it, in this process.

A learned limit replaces the quota's declared one for every later admission: in-memory
counters are told at once (`follow`, under the storage's lock), Redis groups build their
script arguments from `current` (each admission sends the limit, so what was admitted stays
counted). A change is logged once, with what caused it; an announcement that changes nothing
logs nothing. A change learned here is shared through Redis when the quota is (`unshared`).
A quota that adapts its rate (`adapt`, adaptive.py) changes it here too, on each answer.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable

import attrs

from callpolicy._clock import CLOCK
from callpolicy._forks import renew_after_fork
from callpolicy._model import Quota, Rate
from callpolicy._quotas.adaptive import AdaptiveRate

logger = logging.getLogger("callpolicy")
# A limit flapping between announcements (servers behind one name that disagree): at most
# LOG_MOST lines per LOG_EVERY seconds, then the next line counts the changes in between.
LOG_EVERY = 10.0
LOG_MOST = 5
_MAX_SAID = 200  # characters of what announced a limit, in a log line or in Redis
Hold = Callable[[str, float], None]  # (quota name, until): no call of the quota before then


def limit_bounds(quota: Quota) -> tuple[int, int]:
    """The calls per period a quota's limit may change to: within learn's bounds and adapt's
    (their intersection, which holds the declared limit: the model checks it)."""
    bounded = [b for b in (quota.learn, quota.adapt) if b is not None]
    low = max(b.floor.calls for b in bounded)
    high = min(b.ceiling.calls for b in bounded)
    return low, max(low, high)


def same_learning(a: Quota, b: Quota) -> bool:
    """Whether a learned limit of `a` holds for `b` (a reload that changed only max_wait,
    on_unavailable...): the same limit, algorithm and bounds."""
    fields = ("rate", "learn", "adapt", "algorithm", "burst", "weighted", "spread", "storage")
    return all(getattr(a, name) == getattr(b, name) for name in fields)


class LearnedLimit:
    """What one quota learned: `current` is the quota in force (the declared one, or it with
    the learned rate); `version` counts the changes."""

    def __init__(
        self, quota: Quota, follow: Callable[[Quota], None], hold: Hold | None = None
    ) -> None:
        assert quota.changes_limit and quota.rate is not None
        self.quota = quota
        self.learn = quota.learn
        self.bounds = limit_bounds(quota)
        self.period = quota.rate.period
        self.adaptive = None
        if quota.adapt is not None:
            measures = quota.storage.is_memory  # in Redis, others' answers are not seen here
            self.adaptive = AdaptiveRate(
                quota.adapt, quota.rate.calls, self.period, CLOCK.now(), measures, self.bounds
            )
        self._adapting = threading.Lock()  # one answer at a time changes the adaptive rate
        self._quiet_at = -math.inf  # when a probe (adapt) was last logged
        self.current = quota
        self.learned: Rate | None = None
        self.version = 0
        self.unshared: tuple[int, str] | None = None  # learned here, not yet sent to Redis
        self.said = ""  # what announced the limit in force (a header, or another process)
        self.read_at = -math.inf  # when the limit was last read from Redis (redis/learned.py)
        self.write_failed = False  # the last write to Redis failed: tried once a second
        self._logged: list[float] = []  # when the last lines were written (at most LOG_MOST)
        self._unlogged = 0  # changes since the last line (a flapping limit)
        self._follow = follow
        self._hold = hold
        self._lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._adapting = threading.Lock()

    @property
    def cuts(self) -> int:
        """Congestion events that cut the adaptive rate, in this process."""
        return self.adaptive.cuts if self.adaptive is not None else 0

    def answered(self, status: int | None, announced: bool, latency: float | None = None) -> None:
        """An answer of `status` (None: no HTTP answer, which says nothing of the rate) came
        back, `latency` seconds after its request was sent (if known); `announced`: it
        announced a limit (already offered). Adapts the rate."""
        adaptive, adapt = self.adaptive, self.quota.adapt
        if adaptive is None or adapt is None or status is None:
            return
        with self._adapting:
            rate = self.current.rate
            assert rate is not None
            now = CLOCK.now()
            sent = now - latency if latency is not None else None
            change = adaptive.answer(now, status, rate.calls, announced, sent)
            if change is not None:
                calls, why, probe = change
                changed = self.offer(calls, why, quiet=probe)
                if changed and not probe and adaptive.held > now and self._hold is not None:
                    self._hold(self.quota.name, adaptive.held)  # the server's window is full

    def offer(self, calls: int, said: str, shared: bool = False, quiet: bool = False) -> bool:
        """A response (or, `shared`, another process through Redis) announced `calls` per
        period, by `said`: the limit in force becomes that, within the bounds that apply
        (learn's and adapt's, both). True if it changed. A `quiet` change (an adaptive rate's
        probe) is logged at most once per LOG_EVERY, the others counted in its line. Never
        raises into the call that brought the answer."""
        said = " ".join(said.split())[:_MAX_SAID]  # one line, as Redis keeps it
        low, high = self.bounds
        kept = min(max(calls, low), high)
        bound = ""
        if kept != calls:  # the server's limit is outside the bounds: say which holds
            bound = f"; the {'floor' if kept == low else 'ceiling'} is {Rate(kept, self.period)}"
        with self._lock:
            old = self.current.rate
            assert old is not None
            if kept == old.calls:
                return False
            self.current = attrs.evolve(self.quota, rate=Rate(kept, self.period))
            self.learned = self.current.rate
            self.version += 1
            self.said = said if not shared else ""
            if not shared:
                self.unshared = (kept, said)
            self._follow(self.current)
            now = CLOCK.now()
            self._logged = [at for at in self._logged if now - at < LOG_EVERY]
            if quiet and now - self._quiet_at < LOG_EVERY:
                self._unlogged += 1  # said with the next line
                return True
            if quiet:
                self._quiet_at = now
            if len(self._logged) >= LOG_MOST:
                self._unlogged += 1  # said with the next line
                return True
            more = (
                f"; {self._unlogged} more change(s) since the last line" if self._unlogged else ""
            )
            self._logged.append(now)
            self._unlogged = 0
            logger.info(
                "quota %s: limit %s -> %s (%s%s%s)",
                self.quota.name,
                old,
                self.current.rate,
                said,
                bound,
                more,
                extra={"quota": self.quota.name, "header": said.partition(":")[0]},
            )
        return True

    def adopt(self, quota: Quota) -> None:
        """The same quota after a reload (`same_learning`): what it learned still holds."""
        with self._lock:
            self.quota = quota
            self.current = quota if self.learned is None else attrs.evolve(quota, rate=self.learned)

    def take_unshared(self) -> tuple[int, str] | None:
        with self._lock:
            found, self.unshared = self.unshared, None
            return found


class LearnedLimits:
    """The learned limits of one registry's quotas, by name; kept across reloads while the
    quota is unchanged. `follow(quota)` tells in-memory counters of a quota's new limit."""

    def __init__(self, follow: Callable[[Quota], None], hold: Hold | None = None) -> None:
        self._follow = follow
        self._hold = hold
        self._limits: dict[str, LearnedLimit] = {}
        self._lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def of(self, quota: Quota) -> LearnedLimit:
        """The state of `quota`, which learns; a changed quota starts again from its limit."""
        with self._lock:
            known = self._limits.get(quota.name)
            if known is not None and known.quota == quota:
                return known
            if known is not None and same_learning(known.quota, quota):
                known.adopt(quota)
                return known
            fresh = self._limits[quota.name] = LearnedLimit(quota, self._follow, self._hold)
        if known is not None and known.learned is not None:
            self._follow(quota)  # outside the lock: follow takes the storage's
        return fresh

    def current(self, quota: Quota) -> Quota:
        """`quota` with the limit in force (learned, or its own)."""
        known = self._limits.get(quota.name) if quota.changes_limit else None
        if known is None or not same_learning(known.quota, quota):
            return quota
        return (
            known.current if known.quota == quota else attrs.evolve(quota, rate=known.current.rate)
        )

    def learned(self, names: Iterable[str]) -> dict[str, Rate]:
        """The limits learned so far, by quota name, of those of `names` that learned one."""
        found = {name: self._limits.get(name) for name in names}
        return {name: known.learned for name, known in found.items() if known and known.learned}

    def cuts(self, names: Iterable[str]) -> dict[str, int]:
        """The congestion events that cut an adaptive rate, by quota name, of those of
        `names` that had any."""
        found = {name: self._limits.get(name) for name in names}
        return {name: known.cuts for name, known in found.items() if known and known.cuts}
