"""Quotas shared by every process and host using one Redis server ("redis://host:port/db").

One round trip admits a call through all its quotas of this storage: a Lua script (redis.lua)
checks and takes them atomically on the server's clock, so hosts with skewed clocks still
share one exact window. redis-py reloads the script by itself after a restart or SCRIPT
FLUSH. Keys are `{prefix}:<quota>:<part>`, escaped, under one hash tag (Redis Cluster), and
expire once idle. When the server cannot be reached within the timeout, each quota does what
its `on_unavailable` says: fail-closed (raise QuotaUnavailable), fail-open (admit) or local
(fall back to `local_limit` in this process); the warning is logged at most every 30 s.
Every operation is written once, as steps (see callpolicy._steps); thin shells run them sync
or async.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import attrs

from callpolicy._errors import QuotaUnavailable
from callpolicy._forks import renew_after_fork
from callpolicy._model import Quota, Storage
from callpolicy._quotas.counters import Counters
from callpolicy._quotas.memory import MemoryGroup, MemoryStorage, Refusal, anchored
from callpolicy._quotas.redis.errors import FAILED, UNREACHABLE, passing
from callpolicy._quotas.redis.learned import Sharing
from callpolicy._quotas.redis.leases import Leases
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
    import redis.asyncio
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

logger = logging.getLogger("callpolicy")
WARN_EVERY = 30.0
POOL_SIZE = 64  # connections to one server per process (per event loop for async)
POOL_WAIT = 10.0  # the most a call waits for a free connection


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
    """One Redis server (URL) and the quotas kept in it."""

    def __init__(self, storage: Storage, memory: MemoryStorage, counters: Counters) -> None:
        if redis is None:
            raise ImportError(
                f"quota storage {storage} needs the redis client: pip install 'callpolicy[redis]'"
            )
        self.storage = storage
        self.prefix = storage.prefix
        self.timeout = storage.timeout
        plain = storage.url
        options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }
        # A full pool waits for a free connection (a busy server is not an unreachable one);
        # each connection's own calls stay bounded by the socket timeouts.
        pool = redis.BlockingConnectionPool.from_url(
            plain, max_connections=POOL_SIZE, timeout=POOL_WAIT, **options
        )
        self.client = redis.Redis(connection_pool=pool)
        self.scripts = (
            self.client.register_script(SCRIPT),
            self.client.register_script(LONE_SCRIPT),
        )
        self._async_options = (plain, options)
        # Per event loop; a closed loop's entry is dropped (its client holds the loop).
        self._async: dict[asyncio.AbstractEventLoop, Any] = {}
        renew_after_fork(self)
        # Changes whose reply was lost (a timeout, a cancelled task): the script may have run,
        # so they are sent again, first thing, on the next round trip. (group, change args)
        self.pending: list[tuple[RedisGroup, list[Any]]] = []
        self.memory = memory
        self._unreachable = Throttled(WARN_EVERY)
        self.leases = Leases(self)  # in-flight slots of this process's calls, renewed
        self.counters = counters  # admissions without Redis are counted here

    def after_fork(self) -> None:
        """In a forked child: the parent's event loops and their connections are not ours
        (redis-py's sync pool renews itself when it sees a new pid)."""
        self._async = {}

    def key(self, quota: Quota, part: str) -> str:
        return f"{{{self.prefix}}}:{quote(quota.name, safe='')}:{part}"

    def group(self, quotas: Sequence[Quota]) -> RedisGroup:
        return RedisGroup(self, quotas)

    def async_scripts(self) -> Any:
        """The scripts bound to a client of the running event loop (redis.asyncio clients
        belong to the loop that made them)."""
        loop = asyncio.get_running_loop()
        scripts = self._async.get(loop)
        if scripts is None:
            for old in [known for known in self._async if known.is_closed()]:
                del self._async[old]
            plain, options = self._async_options
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                plain, max_connections=POOL_SIZE, timeout=POOL_WAIT, **options
            )
            client = redis.asyncio.Redis(connection_pool=pool)
            scripts = self._async[loop] = (
                client.register_script(SCRIPT),
                client.register_script(LONE_SCRIPT),
            )
        return scripts

    def script(self, keys: list[str], args: list[Any], lone: bool = False) -> Steps[list[int]]:
        """Run redis.lua, or with `lone` redis_lone.lua (one unweighted sliding window),
        after the changes whose reply was lost."""
        while self.pending:
            item = self._next_pending()
            if item is None:
                break
            try:
                yield RunScript(self, item[0].keys, item[1], False)
            except FAILED as error:
                if not passing(error):  # a mistake, not an outage: sending it again won't help
                    self.unreachable(error)
                    continue
                self.pending.append(item)  # not sent: keep it for the next round trip
                raise
            except BaseException:
                self.pending.append(item)
                raise
        reply: list[int] = yield RunScript(self, keys, args, lone)
        return reply

    def _next_pending(self) -> tuple[RedisGroup, list[Any]] | None:
        try:
            return self.pending.pop()
        except IndexError:  # another thread took the last one
            return None

    def unreachable(self, error: BaseException) -> None:
        self._unreachable.warn(
            passing(error),  # an outage and a mistake are said apart, each once per 30 s
            "quota storage %s %s (%s); quotas do what on_unavailable says "
            "(this warning repeats at most every %ds)",
            self.storage,
            "unreachable" if passing(error) else "failing",
            error,
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
        learning = any(q.learn for q in quotas)
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
            )
            for q in quotas
            if q.on_unavailable == "local" and q.local_limit is not None
        ]
        self.fallback: MemoryGroup | None = storage.memory.group(local) if local else None

    # -- the operations ----------------------------------------------------------------------
    def take(self, cost: float) -> Steps[RedisTaken | Refusal]:
        if self.sharing is not None:  # limits learned here or by others count from now on
            self.arguments = yield from self.sharing.follow(self.arguments)
        args = self.arguments.admit(cost)
        try:
            reply = yield from self.storage.script(self.keys, args, self.lone)
        except FAILED as error:
            if isinstance(error, UNREACHABLE):  # the reply was lost: the script may have run
                self._maybe_taken(args, cost)
            if not passing(error):
                raise
            return self._unavailable(error, cost)
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
            yield from self.storage.script(self.keys, args)
        except FAILED as error:  # never changes the call's outcome
            if passing(error) and again:
                self.storage.pending.append((self, args))  # sent again on the next round trip
            self.storage.unreachable(error)

    def _unavailable(self, error: BaseException, cost: float) -> RedisTaken | Refusal:
        self.storage.unreachable(error)
        if self.mode == "fail-closed":
            names = ", ".join(sorted(self.names))
            raise QuotaUnavailable(names, str(self.storage.storage), str(error)) from error
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
            self.storage.pending.append((self, change))
