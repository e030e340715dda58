"""Quotas shared by every process and host using one Redis server ("redis://host:port/db").

One round trip admits a call through all its quotas of this storage: a Lua script (redis.lua)
checks and takes them atomically on the server's clock, so hosts with skewed clocks still
share one exact window. redis-py reloads the script by itself after a restart or SCRIPT
FLUSH. Keys are `{prefix}:<quota>:<part>`, escaped, under one hash tag (Redis Cluster), and
expire once idle. When the server cannot be reached within the timeout, each quota does what
its `on_unavailable` says: fail-closed (raise QuotaUnavailable), fail-open (admit) or local
(fall back to `local_limit` in this process); the warning is logged at most every 30 s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import quote

import attrs

from callpolicy._errors import QuotaUnavailable
from callpolicy._model import Quota, Storage
from callpolicy._quotas.memory import MemoryGroup, MemoryStorage, Refusal

try:
    import redis
    import redis.asyncio
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

logger = logging.getLogger("callpolicy")
_HERE = resources.files("callpolicy._quotas.redis")
SCRIPT = _HERE.joinpath("redis.lua").read_text(encoding="utf-8")
LONE_SCRIPT = _HERE.joinpath("redis_lone.lua").read_text(encoding="utf-8")
ALGORITHM_CODES = {"sliding-window": "sw", "token-bucket": "tb", "fixed-window": "fw"}
LEASE_US = 10 * 60 * 1_000_000  # an in-flight slot whose process died frees after 10 min
POLL = 0.02  # how often a call waiting for another process's in-flight slot looks again
WARN_EVERY = 30.0
POOL_SIZE = 64  # connections to one server per process (per event loop for async)
POOL_WAIT = 10.0  # the most a call waits for a free connection


class RedisStorage:
    """One Redis server (URL) and the quotas kept in it."""

    def __init__(self, storage: Storage, memory: MemoryStorage) -> None:
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
        self._scripts = (
            self.client.register_script(SCRIPT),
            self.client.register_script(LONE_SCRIPT),
        )
        self._async_options = (plain, options)
        # Per event loop; a closed loop's entry is dropped (its client holds the loop).
        self._async: dict[asyncio.AbstractEventLoop, Any] = {}
        # Changes whose reply was lost (a timeout, a cancelled task): the script may have run,
        # so they are sent again, first thing, on the next round trip. (group, change args)
        self.pending: list[tuple[RedisGroup, list[Any]]] = []
        self.memory = memory
        self._warned_at = -math.inf

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

    def run(self, keys: list[str], args: list[Any], lone: bool = False) -> list[int]:
        """Run redis.lua, or with `lone` redis_lone.lua (one unweighted sliding window)."""
        while self.pending:
            item = self._next_pending()
            if item is None:
                break
            try:
                self._scripts[0](keys=item[0].keys, args=item[1])
            except BaseException:
                self.pending.append(item)  # not sent: keep it for the next round trip
                raise
        result: list[int] = self._scripts[lone](keys=keys, args=args)
        return result

    async def arun(self, keys: list[str], args: list[Any], lone: bool = False) -> list[int]:
        scripts = self.async_scripts()
        while self.pending:
            item = self._next_pending()
            if item is None:
                break
            try:
                await scripts[0](keys=item[0].keys, args=item[1])
            except BaseException:
                self.pending.append(item)
                raise
        result: list[int] = await scripts[lone](keys=keys, args=args)
        return result

    def _next_pending(self) -> tuple[RedisGroup, list[Any]] | None:
        try:
            return self.pending.pop()
        except IndexError:  # another thread took the last one
            return None

    def unreachable(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            logger.warning(
                "quota storage %s unreachable (%s); quotas do what on_unavailable says "
                "(this warning repeats at most every %ds)",
                self.storage,
                error,
                WARN_EVERY,
                extra={"storage": str(self.storage)},
            )


@attrs.frozen
class RedisTaken:
    """An admission in Redis (`at` on the server's clock, us) or in the fallback group."""

    id: str
    at: int
    cost: float
    fallback: Any = None


UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) if redis else ()


class RedisGroup:
    remote = True

    def __init__(self, storage: RedisStorage, quotas: Sequence[Quota]) -> None:
        self.storage = storage
        self.quotas = list(quotas)
        self.names = frozenset(q.name for q in quotas)
        self.has_slots = any(q.concurrency is not None for q in quotas)
        self.weighted = any(q.weighted for q in quotas)
        self.max_wait = max(q.max_wait for q in quotas)
        self.keys = [storage.key(q, part) for q in quotas for part in ("a", "b")]
        modes = {q.on_unavailable for q in quotas}
        self.mode = "fail-closed" if "fail-closed" in modes else min(modes)
        local = [
            attrs.evolve(q, name=f"{q.name}(local)", rate=q.local_limit, storage=Storage())
            for q in quotas
            if q.on_unavailable == "local" and q.local_limit is not None
        ]
        self.fallback: MemoryGroup | None = storage.memory.group(local) if local else None
        # An unweighted admission's arguments never change but for its id: built once.
        self._admit_tail = self._args("admit", None, 1.0, [None] * len(self.quotas))[4:]
        # One unweighted sliding window, the common case, has a script of its own: less
        # work on the server (redis_lone.lua).
        self.lone = len(self.quotas) == 1 and self._admit_tail[0] == "sc"
        if self.lone:
            self.keys = self.keys[:1]  # redis_lone.lua reads only the set

    def _admit_args(self, cost: float) -> list[Any]:
        admission = f"{random.getrandbits(64):016x}"
        if self.lone:
            return [admission, self._admit_tail[1], self._admit_tail[2]]
        if not self.weighted:
            return ["admit", len(self.quotas), admission, 0, *self._admit_tail]
        return self._args("admit", None, cost, [None] * len(self.quotas))

    def _args(
        self, op: str, taken: RedisTaken | None, cost: float, new: Sequence[float | None]
    ) -> list[Any]:
        """Script arguments; `new` holds each quota's new cost (None: leave it as it is)."""
        args: list[Any] = [
            op,
            len(self.quotas),
            taken.id if taken else f"{random.getrandbits(64):016x}",
            taken.at if taken else 0,
        ]
        for quota, new_cost in zip(self.quotas, new, strict=True):
            own = cost if quota.weighted else 1
            kept = own if new_cost is None else new_cost
            if quota.concurrency is not None:
                args += ["cc", quota.concurrency, LEASE_US, 1, kept, 0]
                continue
            assert quota.rate is not None
            code = ALGORITHM_CODES[quota.algorithm]
            if code == "sw" and not quota.weighted:
                code = "sc"  # one entry per call: a leaner script path
            guard = quota.guard if quota.algorithm == "sliding-window" else 0.0
            period_us = round((quota.rate.period + guard) * 1e6)
            args += [code, quota.rate.calls, period_us, own, kept, 0]
        return args

    def _outcome(self, reply: list[int], args: list[Any], cost: float) -> RedisTaken | Refusal:
        if reply[0] == 1:
            return RedisTaken(args[0] if self.lone else args[2], int(reply[1]), cost)
        return self._refusal(reply)

    def _refusal(self, reply: list[int]) -> Refusal:
        wait_us, index = int(reply[1]), int(reply[2]) - 1
        quota = self.quotas[index]
        if wait_us == -2:
            return Refusal(quota, math.inf)
        return Refusal(quota, POLL if wait_us == -1 else wait_us / 1e6)

    def _unavailable(self, error: Exception, cost: float) -> RedisTaken | Refusal:
        self.storage.unreachable(error)
        if self.mode == "fail-closed":
            names = ", ".join(sorted(self.names))
            raise QuotaUnavailable(names, str(self.storage.storage), str(error)) from error
        if self.fallback is None:  # fail-open
            return RedisTaken("", 0, cost)
        taken = self.fallback.try_take(cost)
        return taken if isinstance(taken, Refusal) else RedisTaken("", 0, cost, taken)

    def take_one(self) -> Refusal | None:
        """The fast path: admit a cost of 1 (None), keeping no handle; else the refusal."""
        args = self._admit_args(1.0)
        try:
            reply = self.storage.run(self.keys, args, self.lone)
        except UNREACHABLE as error:
            self._maybe_taken(args, 1.0)
            outcome = self._unavailable(error, 1.0)
            return outcome if isinstance(outcome, Refusal) else None
        except BaseException:
            self._maybe_taken(args, 1.0)
            raise
        return None if reply[0] == 1 else self._refusal(reply)

    def try_take(self, cost: float) -> RedisTaken | Refusal:
        args = self._admit_args(cost)
        try:
            return self._outcome(self.storage.run(self.keys, args, self.lone), args, cost)
        except UNREACHABLE as error:
            self._maybe_taken(args, cost)
            return self._unavailable(error, cost)
        except BaseException:
            self._maybe_taken(args, cost)
            raise

    async def atry_take(self, cost: float) -> RedisTaken | Refusal:
        args = self._admit_args(cost)
        try:
            reply = await self.storage.arun(self.keys, args, self.lone)
            return self._outcome(reply, args, cost)
        except UNREACHABLE as error:
            self._maybe_taken(args, cost)
            return self._unavailable(error, cost)
        except BaseException:  # a cancelled task consumes nothing
            self._maybe_taken(args, cost)
            raise

    def _maybe_taken(self, args: list[Any], cost: float) -> None:
        """The admission's reply was lost: the script may have run. Give it back on the next
        round trip: harmless if it never ran (sorted-set removals by id). Token-bucket and
        fixed-window counts cannot tell, so they keep what they may have taken."""
        if all(code in ("sc", "sw", "cc") for code in self._admit_tail[::6]):
            taken = RedisTaken(args[0] if self.lone else args[2], 0, cost)
            change = self._change_args(taken, self._refunds(only_slots=False))
            if change is not None:
                self.storage.pending.append((self, change))

    def _change_args(self, taken: RedisTaken, new: Sequence[float | None]) -> list[Any] | None:
        return None if not taken.id else self._args("change", taken, taken.cost, new)

    def _change(self, taken: RedisTaken, new: Sequence[float | None]) -> None:
        args = self._change_args(taken, new)
        if args is None:
            return
        try:
            self.storage.run(self.keys, args)
        except UNREACHABLE as error:  # sent again on the next round trip
            self.storage.pending.append((self, args))
            self.storage.unreachable(error)

    async def _achange(self, taken: RedisTaken, new: Sequence[float | None]) -> None:
        args = self._change_args(taken, new)
        if args is None:
            return
        try:
            await self.storage.arun(self.keys, args)
        except UNREACHABLE as error:
            self.storage.pending.append((self, args))
            self.storage.unreachable(error)

    def _refunds(self, only_slots: bool) -> list[float | None]:
        """New costs giving back every quota (or only the in-flight slots)."""
        return [0 if q.concurrency is not None or not only_slots else None for q in self.quotas]

    def _adjusted(self, cost: float) -> list[float | None]:
        return [cost if q.weighted else None for q in self.quotas]

    def refund(self, taken: RedisTaken) -> None:
        if taken.fallback is not None and self.fallback is not None:
            self.fallback.refund(taken.fallback)
        self._change(taken, self._refunds(only_slots=False))

    async def arefund(self, taken: RedisTaken) -> None:
        if taken.fallback is not None and self.fallback is not None:
            self.fallback.refund(taken.fallback)
        await self._achange(taken, self._refunds(only_slots=False))

    def release(self, taken: RedisTaken) -> None:
        self._change(taken, self._refunds(only_slots=True))

    async def arelease(self, taken: RedisTaken) -> None:
        await self._achange(taken, self._refunds(only_slots=True))

    def adjust(self, taken: RedisTaken, cost: float) -> None:
        self._change(taken, self._adjusted(cost))

    async def aadjust(self, taken: RedisTaken, cost: float) -> None:
        await self._achange(taken, self._adjusted(cost))
