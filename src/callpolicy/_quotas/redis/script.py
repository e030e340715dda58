"""The Lua scripts' arguments and replies, named in one place (see redis.lua, redis_lone.lua).

redis.lua: ARGV = op ("admit" | "change" | "end" | "batch"), n quotas, admission id (a
batch: how many changes follow), taken at (us), then six
per quota: algorithm code, limit (a bucket's burst), period (us; a bucket's interval per cost
unit; the lease for "cc"), cost, new cost, guard (us, buckets; a weighted window's most entries).
Op "renew" then lists the ids whose in-flight slots are leased again, and replies
{1, now_us, "i:id" for each slot of quota i (1-based) that had lapsed}.
redis_lone.lua (one unweighted sliding window): ARGV = admission id, limit, period (us).
Replies: {1, now_us} admitted (or changed); {0, wait_us, index}: refused by quota `index`
(1-based), wait_us -1 = until a call in flight ends, -2 = never (cost above the limit).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from importlib import resources
from typing import Any

import attrs

from callpolicy._model import BUCKETS, MAX_SLIDING_WINDOW, Quota
from callpolicy._quotas.memory import Refusal

_HERE = resources.files("callpolicy._quotas.redis")
SCRIPT = _HERE.joinpath("redis.lua").read_text(encoding="utf-8")
LONE_SCRIPT = _HERE.joinpath("redis_lone.lua").read_text(encoding="utf-8")
ALGORITHM_CODES = {
    "sliding-window": "sw",
    "fixed-window": "fw",
    "leaky-bucket": "lb",
    "token-bucket": "tb",
}
# The key parts of each code: a sorted set of calls ("a"; "b" unused), a weighted window's
# sets by time and by running cost and its hash ("w", "c", "t"; redis.lua), a fixed window's
# hash ("f"), a bucket's ("g"): a quota whose algorithm changes never meets its old keys.
KEY_PARTS = {"sc": ("a", "b"), "sw": ("w", "c", "t"), "cc": ("a", "b"), "fw": ("f", "f")}
BUCKET_PARTS = ("g", "g")
SLIDING_CALLS = "sc"  # an unweighted sliding window: one entry per call, a leaner path
SLOTS = "cc"
# Codes whose admissions are members of a sorted set, so a change by id is harmless if the
# admission never happened.
GIVEN_BACK_BY_ID = frozenset({SLIDING_CALLS, "sw", SLOTS})
POLL = 0.02  # how often a call waiting for another process's in-flight slot looks again
ADMITTED, UNTIL_A_CALL_ENDS, NEVER = 1, -1, -2
PER_QUOTA = 6


@attrs.frozen
class RedisTaken:
    """An admission in Redis (`at` on the server's clock, us) or in the fallback group."""

    id: str
    at: int
    cost: float
    fallback: Any = None
    befores: tuple[int, ...] = ()  # the cost each bucket had admitted before it


def new_id() -> str:
    return f"{random.getrandbits(64):016x}"


class Arguments:
    """The script arguments of one group of quotas."""

    def __init__(self, quotas: Sequence[Quota]) -> None:
        self.quotas = list(quotas)
        self.weighted = any(q.weighted for q in quotas)
        # An unweighted admission's arguments never change but for its id: built once.
        self.tail = self.build("admit", None, 1.0, [None] * len(self.quotas))[4:]
        self.codes = self.tail[::PER_QUOTA]
        # One unweighted sliding window, the common case, has a script of its own.
        self.lone = len(self.quotas) == 1 and self.codes[0] == SLIDING_CALLS

    def admit(self, cost: float) -> list[Any]:
        admission = new_id()
        if self.lone:
            return [admission, self.tail[1], self.tail[2]]
        if not self.weighted:
            return ["admit", len(self.quotas), admission, 0, *self.tail]
        return self.build("admit", None, cost, [None] * len(self.quotas))

    def key_parts(self) -> list[tuple[Quota, str]]:
        """The quota and key part of each of the script's keys, two or three per quota."""
        return [
            (quota, part)
            for quota, code in zip(self.quotas, self.codes, strict=True)
            for part in KEY_PARTS.get(code, BUCKET_PARTS)
        ]

    def admission_id(self, args: list[Any]) -> str:
        return str(args[0] if self.lone else args[2])

    def change(self, taken: RedisTaken, new: Sequence[float | None]) -> list[Any]:
        """Set each quota's cost of `taken` to `new` (None: leave it; 0: give it back)."""
        return self.build("change", taken, taken.cost, new)

    def build(
        self, op: str, taken: RedisTaken | None, cost: float, new: Sequence[float | None]
    ) -> list[Any]:
        args: list[Any] = [op, len(self.quotas), taken.id if taken else new_id(), 0]
        if taken:
            args[3] = taken.at
        for quota, new_cost in zip(self.quotas, new, strict=True):
            own = cost if quota.weighted else 1
            kept = own if new_cost is None else new_cost
            if quota.concurrency is not None:
                args += [SLOTS, quota.concurrency, round(quota.lease * 1e6), 1, kept, 0]
                continue
            code, limit, period = _rate_arguments(quota)
            guard = MAX_SLIDING_WINDOW if code == "sw" else _guard_us(quota)
            args += [code, limit, period, own, kept, guard]
        return args

    def end(self, taken: RedisTaken) -> list[Any]:
        """The call of `taken` ended: slots back, leaky and token buckets moved (redis.lua)."""
        befores = taken.befores or (0,) * len(self.quotas)
        return self.build("end", taken, taken.cost, befores)

    def renewal(self, ids: Sequence[str]) -> list[Any]:
        """Lease again the in-flight slots of the admissions `ids` (see leases.py)."""
        return [*self.build("renew", None, 1.0, [None] * len(self.quotas)), *ids]

    def batch(self, changes: Sequence[Sequence[Any]]) -> list[Any]:
        """Changes and ends applied in one script call, in order (pending.py keeps them)."""
        args: list[Any] = ["batch", len(self.quotas), len(changes), 0, *self.tail]
        for change in changes:
            args += change
        return args

    def refunds(self, only_slots: bool) -> list[float | None]:
        """New costs giving back every quota (or only the in-flight slots)."""
        return [0 if q.concurrency is not None or not only_slots else None for q in self.quotas]

    def adjusted(self, cost: float) -> list[float | None]:
        return [cost if q.weighted else None for q in self.quotas]

    def refusal(self, reply: list[int]) -> Refusal:
        wait_us, index = int(reply[1]), int(reply[2]) - 1
        quota = self.quotas[index]
        if wait_us == NEVER:
            return Refusal(quota, math.inf)
        if wait_us == UNTIL_A_CALL_ENDS:
            return Refusal(quota, None, poll=POLL)
        return Refusal(quota, wait_us / 1e6)


def _rate_arguments(quota: Quota) -> tuple[str, float, float]:
    """(code, limit, period in us) of a rate quota, as its in-memory counter (memory.py)."""
    assert quota.rate is not None
    calls, period = quota.rate.calls, quota.rate.period
    if quota.algorithm in BUCKETS:
        return ALGORITHM_CODES[quota.algorithm], quota.bucket_room, period / calls * 1e6
    if quota.spread:  # the window's calls evenly apart: its guard spread over them
        return "sp", calls, (period + quota.guard) / calls * 1e6
    code = ALGORITHM_CODES[quota.algorithm]
    if code == "sw" and not quota.weighted:
        code = SLIDING_CALLS
    return code, calls, round((period + quota.guard) * 1e6)


def _guard_us(quota: Quota) -> float:
    return quota.guard * 1e6 if quota.algorithm in BUCKETS else 0.0
