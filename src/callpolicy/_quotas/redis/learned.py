"""Learned limits shared through Redis: a quota in Redis that learns its limit keeps it in a
small key next to its own (`{prefix:<quota>}:learned`, in its slot: "<calls> <what said it>",
expiring after LEARNED_TTL), so a process that has not seen a response yet counts by what the
others learned.

Each admission sends the limit in force to the script anyway (script.py), so processes that
learned the same limit count by it exactly; the key only spreads it sooner. A change learned
here is written on this process's next admission through the quota; the key is read at most
once a second per quota (a plain GET, on the admission's own round trips, sync or awaited).
A failing Redis or an odd value changes nothing but a warning: the quota's limit stays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callpolicy._clock import CLOCK
from callpolicy._model import Quota
from callpolicy._quotas.learned import LearnedLimit
from callpolicy._quotas.redis.errors import FAILED, passing, shown
from callpolicy._quotas.redis.script import Arguments
from callpolicy._steps import Step, Steps
from callpolicy._text import Throttled

if TYPE_CHECKING:
    from callpolicy._quotas.redis.storage import RedisStorage

READ_EVERY = 1.0  # seconds between reads of one quota's key, per process
LEARNED_TTL = 3600  # seconds a learned limit is kept unless written again
_MAX_SAID = 200  # characters of the header kept with the limit
_odd = Throttled(60.0)


class Command(Step):
    """One plain Redis command, on the storage's sync client or the event loop's."""

    __slots__ = ("args", "name", "options", "storage")

    def __init__(self, storage: RedisStorage, name: str, *args: Any, **options: Any) -> None:
        self.storage = storage
        self.name = name
        self.args = args
        self.options = options

    def sync(self) -> Any:
        client = self.storage.scripts[0].owner.get()  # made on first use (connect.py)
        return getattr(client, self.name)(*self.args, **self.options)

    async def async_(self) -> Any:
        client = self.storage.async_scripts()[0].client  # the loop's client
        return await getattr(client, self.name)(*self.args, **self.options)


class Sharing:
    """The learning quotas of one Redis group and their keys."""

    def __init__(self, storage: RedisStorage, quotas: list[Quota]) -> None:
        self.storage = storage
        self.quotas = quotas
        learned = storage.memory.learned
        self.limits = [
            (learned.of(q), storage.key(q, "learned")) for q in quotas if q.changes_limit
        ]
        self.versions = tuple(limit.version for limit, _ in self.limits)

    def follow(self) -> Steps[Arguments | None]:
        """The group's script arguments built again with the limits in force, if one
        changed (here, or in another process: see sync) since they were last built; else
        None. Compared after the I/O, so a call that waited on Redis never brings back the
        arguments of before a change another call has already followed."""
        yield from self.sync()
        versions = tuple(limit.version for limit, _ in self.limits)
        if versions == self.versions:
            return None
        self.versions = versions
        return Arguments([self.storage.memory.learned.current(q) for q in self.quotas])

    def sync(self) -> Steps[None]:
        """Write what this process learned, or read what others did (at most once a
        second per quota). Never raises a Redis error: the limit in force stays."""
        for limit, key in self.limits:
            now = CLOCK.now()
            if now - limit.read_at < READ_EVERY and (limit.unshared is None or limit.write_failed):
                continue  # a new limit is written at once; a failed write, once a second
            unshared = limit.take_unshared()
            limit.read_at = now
            try:
                if unshared is not None:
                    yield from self._write(key, *unshared)
                    limit.write_failed = False
                    continue
                raw = yield Command(self.storage, "get", key)
                if raw is None and limit.learned is not None and limit.said:
                    # expired: what this process learned is still the latest it knows
                    yield from self._write(key, limit.learned.calls, limit.said)
                    continue
            except FAILED as error:
                # an outage: written later; a refusal (NOPERM, WRONGTYPE...): given up
                if unshared is not None and limit.unshared is None and passing(error):
                    limit.unshared, limit.write_failed = unshared, True
                self._failed(limit, key, error)
                continue
            if raw is not None:
                self._adopt(limit, raw)

    def _failed(self, limit: LearnedLimit, key: str, error: BaseException) -> None:
        _odd.warn(
            (limit.quota.name, "shared"),
            "quota %s: its learned limit is not shared through %s (%s on %s); it counts by "
            "it here, and other processes learn it from their own responses (said at most "
            "once a minute)",
            limit.quota.name,
            self.storage.storage,
            shown(error, self.storage.storage.url),
            key,
            quota=limit.quota.name,
        )

    def _write(self, key: str, calls: int, said: str) -> Steps[None]:
        yield Command(self.storage, "set", key, f"{calls} {said}", ex=LEARNED_TTL)

    def _adopt(self, limit: LearnedLimit, raw: Any) -> None:
        text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
        calls, _, said = text.partition(" ")
        said = said[:_MAX_SAID]
        if not (calls.isascii() and calls.isdigit() and len(calls) <= 15 and said.isprintable()):
            _odd.warn(
                limit.quota.name,
                "quota %s: ignoring the learned limit %r found in %s (not one this library "
                "writes); keeping the limit in force (said at most once a minute)",
                limit.quota.name,
                text[:60],
                self.storage.storage,
                quota=limit.quota.name,
            )
            return
        # what the other process saw is its own to log: here it is only what it learned
        # (clamped to this quota's bounds, learn's and adapt's, by offer)
        where = f"learned by another process, through {self.storage.storage}"
        limit.offer(int(calls), where, shared=True)
