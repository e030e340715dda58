"""Call quotas: counters (algorithms), where they live (memory, redis/), the wait queue
(waiting) and admitting one attempt through all of a policy's quotas (admission, grant)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from callpolicy._model import Policy, Quota, Storage
from callpolicy._quotas.admission import Admission
from callpolicy._quotas.counters import Counters, QuotaCounters
from callpolicy._quotas.grant import Candidate, Grant
from callpolicy._quotas.learned import LearnedLimit
from callpolicy._quotas.memory import Group, MemoryStorage
from callpolicy._quotas.waiting import WaitQueue

if TYPE_CHECKING:
    from callpolicy._quotas.redis import RedisStorage

__all__ = ["Admission", "Grant", "LearnedLimit", "QuotaCounters", "QuotaStore"]


class QuotaStore:
    """All quota state of one registry: in-process counters, Redis storages by URL, and the
    queue of waiting calls. Kept across reloads, so unchanged quotas keep their state."""

    def __init__(self) -> None:
        self.memory = MemoryStorage()
        self.queue = WaitQueue()
        self.counters = Counters()  # what each quota did, for metrics
        self._redis: dict[Storage, object] = {}

    def admission(self, policy: Policy) -> Admission | None:
        """How `policy`'s attempts are admitted; None when it has no quota."""
        if not policy.quotas:
            return None
        pool = next((q for q in policy.quotas if q.pool), None)
        plain = [q for q in policy.quotas if not q.pool]
        members: tuple[Quota | None, ...] = pool.pool if pool is not None else (None,)
        candidates = []
        for member in members:
            # a member also named on its own is taken once
            quotas = [*plain, member] if member is not None and member not in plain else plain
            candidates.append(
                Candidate(
                    self._groups(quotas),
                    pool.name if pool is not None else None,
                    member.name if member is not None else None,
                )
            )
        names = frozenset().union(*(g.names for c in candidates for g in c.groups))
        return Admission(
            policy.name, policy.stop.attempts, candidates, self.queue, names, self.counters
        )

    def learning(self, policy: Policy) -> list[LearnedLimit]:
        """The state of each of `policy`'s quotas that learns its limit from responses, or
        adapts its rate to them."""
        return [self.memory.learned.of(q) for q in policy.quotas if q.changes_limit]

    def snapshot(self, names: Iterable[str]) -> dict[str, QuotaCounters]:
        """What each quota of `names` did in this process, the limit it learned or adapted
        to, and the congestion events that cut its adaptive rate."""
        names = list(names)
        counts = self.counters.snapshot(names)
        for name, rate in self.memory.learned.learned(names).items():
            counts[name] = attrs.evolve(counts[name], learned=rate)
        for name, cuts in self.memory.learned.cuts(names).items():
            counts[name] = attrs.evolve(counts[name], cuts=cuts)
        return counts

    def _groups(self, quotas: list[Quota]) -> list[Group]:
        by_storage: dict[Storage, list[Quota]] = {}
        for quota in quotas:
            by_storage.setdefault(quota.storage, []).append(quota)
        groups: list[Group] = []
        for storage, members in by_storage.items():
            if storage.is_memory:
                groups.append(self.memory.group(members))
            else:
                groups.extend(self._redis_storage(storage).groups(members))
        return groups

    def _redis_storage(self, storage: Storage) -> RedisStorage:
        from callpolicy._quotas.redis import RedisStorage  # noqa: PLC0415 (optional)

        found = self._redis.get(storage)
        if found is None:
            found = self._redis[storage] = RedisStorage(storage, self.memory, self.counters)
        assert isinstance(found, RedisStorage)
        return found
