"""What each quota did in this process, counted for metrics (`Registry.quota_counters()`).

Per registry, per quota name, since the process started (a forked child starts from zero):
every admitted attempt is counted without a lock (`itertools.count`, whose step is one C
call: atomic under the GIL); the rarer events (refusals, waits, Redis away) under a lock.
Kept across reloads, like the quotas' own counts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import attrs

from callpolicy._forks import Book
from callpolicy._model import Quota, Rate
from callpolicy._stats import peek_count

LOCAL = "(local)"  # the suffix of a `local_limit` fallback's quota (redis/storage.py)


@attrs.frozen
class QuotaCounters:
    """One quota's counts in this process (each an attempt of a call; retries count too).

    `admitted`: attempts the quota admitted, `failed_open` and `local` included;
    `refused`: attempts refused with `QuotaExceeded` (its max_wait or the policy's deadline
    would pass, the cost is above the limit, the call may not wait), a `local_limit` refusal
    included; `failed_closed`: refused with `QuotaUnavailable` (Redis unreachable under
    `fail-closed`), not in `refused`; `waited`: attempts that waited for it, admitted or not,
    and `waited_seconds` in all; `failed_open`: admitted uncounted while Redis was
    unreachable (`fail-open`); `local`: admitted by `local_limit` while it was.
    `learned`: the limit in force, once learned from headers (`learn`) or adapted to
    refusals (`adapt`); None while it is the declared one. `cuts`: congestion events that cut
    an adaptive rate (several refusals within one period of a cut are one event).
    """

    admitted: int = 0
    refused: int = 0
    waited: int = 0
    waited_seconds: float = 0.0
    failed_open: int = 0
    failed_closed: int = 0
    local: int = 0
    learned: Rate | None = None
    cuts: int = 0


_RARE = ("refused", "waited", "waited_seconds", "failed_open", "failed_closed", "local")


class Counts:
    """One quota's live counts. `tick()` counts an admission."""

    __slots__ = ("_admitted", "_base", "tick", *_RARE)
    refused: int
    waited: int
    waited_seconds: float
    failed_open: int
    failed_closed: int
    local: int

    def __init__(self) -> None:
        self._admitted = itertools.count()
        self.tick = self._admitted.__next__  # kept by callers: never replaced
        self._base = 0
        self.reset()

    def after_fork(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._base = self.admitted_so_far()
        for field in _RARE:
            setattr(self, field, 0)

    def admitted_so_far(self) -> int:
        # The count's next value, read without taking one (repr: "count(5)").
        return peek_count(self._admitted)

    def snapshot(self) -> QuotaCounters:
        rare = {field: getattr(self, field) for field in _RARE}
        return QuotaCounters(admitted=self.admitted_so_far() - self._base, **rare)


class Counters(Book[Counts]):
    """The counts of one registry's quotas, by name."""

    def __init__(self) -> None:
        super().__init__(Counts)

    def of(self, name: str) -> Counts:
        """The counts of quota `name` (a `local_limit` fallback's are its quota's)."""
        return super().of(name.removesuffix(LOCAL))

    def ticker(self, names: Iterable[str]) -> Callable[[], object]:
        """One call counting an admission by each quota of `names`, lock-free."""
        ticks = tuple(self.of(name).tick for name in names)
        if len(ticks) == 1:
            return ticks[0]  # the common case: one C call
        return lambda: [tick() for tick in ticks]

    def add(self, names: Iterable[str], field: str, seconds: float = 0.0) -> None:
        """Count one `field` event ("refused", "waited"...) for each quota of `names`."""
        counted = [self.of(name) for name in names]
        with self._lock:
            for counts in counted:
                setattr(counts, field, getattr(counts, field) + 1)
                if seconds:
                    counts.waited_seconds += seconds

    def without_redis(self, quotas: Sequence[Quota]) -> None:
        """An attempt admitted while Redis was unreachable: by `local_limit` or uncounted."""
        self.add([q.name for q in quotas if q.on_unavailable == "local"], "local")
        self.add([q.name for q in quotas if q.on_unavailable != "local"], "failed_open")

    def snapshot(self, names: Iterable[str]) -> dict[str, QuotaCounters]:
        """The counts of each quota of `names` (zeros for one not used yet), by name."""
        return {name: self.of(name).snapshot() for name in sorted(names)}
