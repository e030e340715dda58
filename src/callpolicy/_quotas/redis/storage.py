"""Quotas shared by every process and host using one Redis: a server, a Sentinel group's
primary or a Cluster (clients: connect.py).

One round trip admits a call through all its quotas of this storage (in a Cluster, one per
quota, see `groups`): a Lua script (redis.lua) checks and takes them atomically on the
server's clock, so hosts with skewed clocks still share one exact window. redis-py reloads
the script by itself after a restart or SCRIPT FLUSH. Keys are `{prefix:<quota>}:<part>`,
escaped, a hash tag per quota, and expire once idle. When Redis fails (unreachable within
the timeout, read-only after a failover, any error: errors.py), each quota does what its
`on_unavailable` says: fail-closed (raise QuotaUnavailable), fail-open (admit) or local
(fall back to `local_limit` in this process); the warning is logged at most every 30 s.
Every operation is written once, as steps (see callpolicy._steps); thin shells run them sync
or async.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import attrs

from callpolicy._errors import QuotaUnavailable
from callpolicy._model import CLUSTER, Quota, Storage, redis_address
from callpolicy._quotas.counters import Counters
from callpolicy._quotas.memory import MemoryGroup, MemoryStorage, Refusal, anchored
from callpolicy._quotas.redis.connect import LoopScripts, sync_scripts
from callpolicy._quotas.redis.errors import FAILED, UNREACHABLE, passing, shown
from callpolicy._quotas.redis.learned import Sharing
from callpolicy._quotas.redis.leases import Leases
from callpolicy._quotas.redis.pending import Pending, never_sent
from callpolicy._quotas.redis.script import (
    ADMITTED,
    GIVEN_BACK_BY_ID,
    LONE_SCRIPT,
    SCRIPT,
    Arguments,
    RedisTaken,
)
from callpolicy._quotas.redis.shells import Shells
from callpolicy._steps import Step, Steps
from callpolicy._text import Throttled

try:
    import redis
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

logger = logging.getLogger("callpolicy")
WARN_EVERY = 30.0


class RunScript(Step):
    """One script round trip, on the storage's sync client or the event loop's."""

    __slots__ = ("args", "keys", "lone", "storage")

    def __init__(self, storage: RedisStorage, keys: list[str], args: list[Any], lone: bool):
        self.storage = storage
        self.keys = keys
        self.args = args
        self.lone = lone

    def sync(self) -> list[int]:
        reply: list[int] = self.storage.scripts[self.lone](keys=self.keys, args=self.args)
        return reply

    async def async_(self) -> list[int]:
        scripts = self.storage.async_scripts()
        reply: list[int] = await scripts[self.lone](keys=self.keys, args=self.args)
        return reply


class RedisStorage:
    """One Redis (URL: a server, a Sentinel group or a Cluster) and the quotas kept in it."""

    def __init__(self, storage: Storage, memory: MemoryStorage, counters: Counters) -> None:
        if redis is None:
            raise ImportError(
                f"quota storage {storage} needs the redis client: pip install 'callpolicy[redis]'"
            )
        self.storage = storage
        self.prefix = storage.prefix
        self.timeout = storage.timeout
        self.cluster = redis_address(storage.url).topology == CLUSTER
        self.scripts = sync_scripts(storage, SCRIPT, LONE_SCRIPT)
        self.loop_scripts = LoopScripts(storage, SCRIPT, LONE_SCRIPT)
        # Changes whose reply was lost (a timeout, a cancelled task) or that failed: sent
        # first thing on the next round trip, one script per group (pending.py).
        self.pending = Pending()
        self.memory = memory
        self._unreachable = Throttled(WARN_EVERY)
        self.leases = Leases(self)  # in-flight slots of this process's calls, renewed
        self.counters = counters  # admissions without Redis are counted here

    def key(self, quota: Quota, part: str) -> str:
        """`{prefix:<quota>}:<part>`: a quota's keys share a hash tag (one Cluster slot)."""
        return f"{{{self.prefix}:{quote(quota.name, safe='')}}}:{part}"

    def groups(self, quotas: Sequence[Quota]) -> list[RedisGroup]:
        """One group (one script call) for all, or in a Cluster one per quota: each group's
        keys must share a slot. The admission takes groups in turn, all or none."""
        if self.cluster:
            return [RedisGroup(self, [quota]) for quota in quotas]
        return [RedisGroup(self, quotas)]

    def async_scripts(self) -> Any:
        """The scripts bound to a client of the running event loop (see LoopScripts)."""
        return self.loop_scripts.get()

    def script(self, group: RedisGroup, args: list[Any], lone: bool = False) -> Steps[list[int]]:
        """Run redis.lua, or with `lone` redis_lone.lua (one unweighted sliding window), for
        `group`, after its changes whose reply was lost."""
        yield from self.catch_up(group)
        reply: list[int] = yield RunScript(self, group.keys, args, lone)
        return reply

    def catch_up(self, group: RedisGroup) -> Steps[None]:
        """Send `group`'s pending changes, in one round trip. Only its own: another group's
        (on a Cluster node that is down, say) never holds this one up."""
        changes = self.pending.take(group)
        if changes is None:
            return
        try:
            yield RunScript(self, group.keys, group.arguments.batch(changes), False)
        except FAILED as error:
            if not passing(error):  # a mistake, not an outage: sending it again won't help
                self.unreachable(error)
                return
            # kept for the next round trip (as far as safe, if they may have been applied)
            self.pending.restore(group, changes, maybe_applied=not never_sent(error))
            raise
        except BaseException:  # cancelled: the script may have run
            self.pending.restore(group, changes, maybe_applied=True)
            raise

    def unreachable(self, error: BaseException) -> None:
        self._unreachable.warn(
            passing(error),  # an outage and a mistake are said apart, each once per 30 s
            "quota storage %s %s (%s); quotas do what on_unavailable says "
            "(this warning repeats at most every %ds)",
            self.storage,
            "unreachable" if passing(error) else "failing",
            shown(error, self.storage.url),
            WARN_EVERY,
            storage=str(self.storage),
        )


class RedisGroup(Shells):
    remote = True

    def __init__(self, storage: RedisStorage, quotas: Sequence[Quota]) -> None:
        self.storage = storage
        self.quotas = list(quotas)
        self.names = frozenset(q.name for q in quotas)
        self.has_slots = any(q.concurrency is not None for q in quotas)
        self.told_of_ends = any(q.concurrency is not None or anchored(q) for q in quotas)
        self.weighted = any(q.weighted for q in quotas)
        self.max_wait = max(q.max_wait for q in quotas)
        learning = any(q.changes_limit for q in quotas)
        self.sharing = Sharing(storage, self.quotas) if learning else None
        self.arguments = Arguments([storage.memory.learned.current(q) for q in quotas])
        self.lone = self.arguments.lone
        self.keys = [storage.key(q, part) for q, part in self.arguments.key_parts()]
        if self.lone:
            self.keys = self.keys[:1]  # redis_lone.lua reads only the set
        modes = {q.on_unavailable for q in quotas}
        self.mode = "fail-closed" if "fail-closed" in modes else min(modes)
        local = [
            # this process's share: a bucket's burst is the whole's, so it takes the default
            attrs.evolve(
                q,
                name=f"{q.name}(local)",
                rate=q.local_limit,
                storage=Storage(),
                burst=None,
                learn=None,
                adapt=None,
            )
            for q in quotas
            if q.on_unavailable == "local" and q.local_limit is not None
        ]
        self.fallback: MemoryGroup | None = storage.memory.group(local) if local else None

    # -- the operations ----------------------------------------------------------------------
    def take(self, cost: float) -> Steps[RedisTaken | Refusal]:
        if self.sharing is not None:  # limits learned here or by others count from now on
            renewed = yield from self.sharing.follow()
            if renewed is not None:
                self.arguments = renewed
        args = self.arguments.admit(cost)
        try:
            yield from self.storage.catch_up(self)  # fails before this admission is sent
        except FAILED as error:
            return self._unavailable(error, cost)
        try:
            reply = yield from self.storage.script(self, args, self.lone)
        except FAILED as error:
            if isinstance(error, UNREACHABLE) and not never_sent(error):  # the reply was lost
                self._maybe_taken(args, cost)
            return self._unavailable(error, cost)  # an outage or a mistake (errors.py)
        except BaseException:  # a cancelled task consumes nothing
            self._maybe_taken(args, cost)
            raise
        if reply[0] == ADMITTED:
            befores = tuple(int(before) for before in reply[2:])
            self.storage.leases.hold(self, self.arguments.admission_id(args))
            return RedisTaken(self.arguments.admission_id(args), int(reply[1]), cost, None, befores)
        return self.arguments.refusal(reply)

    def give_back(self, taken: RedisTaken) -> Steps[None]:
        self.storage.leases.drop(self, taken.id)
        if taken.fallback is not None and self.fallback is not None:
            self.fallback.refund(taken.fallback)
        yield from self.change(taken, self.arguments.refunds(only_slots=False))

    def change(self, taken: RedisTaken, new: Sequence[float | None]) -> Steps[None]:
        if taken.id:  # else admitted without Redis (fail-open, local)
            yield from self._send(self.arguments.change(taken, new))

    def ended(self, taken: RedisTaken) -> Steps[None]:
        self.storage.leases.drop(self, taken.id)
        if taken.fallback is not None and self.fallback is not None:
            self.fallback.release(taken.fallback)
        if taken.id:  # a lost end of a call without slots is not worth sending again
            yield from self._send(self.arguments.end(taken), again=self.has_slots)

    def _send(self, args: list[Any], again: bool = True) -> Steps[None]:
        try:
            yield from self.storage.script(self, args)
        except FAILED as error:  # never changes the call's outcome
            if passing(error) and again:  # sent again on the next round trip, as far as safe
                self.storage.pending.add(self, args, maybe_applied=not never_sent(error))
            self.storage.unreachable(error)

    def _unavailable(self, error: BaseException, cost: float) -> RedisTaken | Refusal:
        self.storage.unreachable(error)
        if self.mode == "fail-closed":
            names = ", ".join(sorted(self.names))
            detail = shown(error, self.storage.storage.url)
            raise QuotaUnavailable(names, str(self.storage.storage), detail) from error
        if self.fallback is None:  # fail-open
            self.storage.counters.without_redis(self.quotas)
            return RedisTaken("", 0, cost)
        taken = self.fallback.try_take(cost)
        if not isinstance(taken, Refusal):
            self.storage.counters.without_redis(self.quotas)
        return taken if isinstance(taken, Refusal) else RedisTaken("", 0, cost, taken)

    def _maybe_taken(self, args: list[Any], cost: float) -> None:
        """The admission's reply was lost: the script may have run. Give it back on the next
        round trip: harmless if it never ran (sorted-set removals by id). Token-bucket and
        fixed-window counts cannot tell, so they keep what they may have taken."""
        if all(code in GIVEN_BACK_BY_ID for code in self.arguments.codes):
            taken = RedisTaken(self.arguments.admission_id(args), 0, cost)
            change = self.arguments.change(taken, self.arguments.refunds(only_slots=False))
            self.storage.pending.add(self, change)
