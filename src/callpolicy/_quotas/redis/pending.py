"""Changes to Redis whose outcome is unknown, kept to be sent again: bounded, merged per group
of keys and per admission, and caught up in one round trip per group.

What is kept. A call's change that may not have been applied (the reply of an admission of a
sorted-set quota was lost, so it may hold a place; a give-back, cost correction or end that
failed) is kept under its group (its quotas' keys) and its admission id, in order, never as
one entry per failed call of a storage:

* Nothing for a request that never left: redis-py raises "Error ... connecting to ...",
  "Timeout connecting to server" or "No connection available" before writing a byte
  (`never_sent`). An admission that failed so took nothing, so nothing is given back. This
  holds because the storage's connections do not retry a command by themselves (a pool made
  by `from_url` has retries off; a Cluster's client is made with none, connect.py): a retry
  after a lost reply could fail at connect and hide the first send.
* At most MOST_IDS admissions per group, MOST_CHANGES changes each. Past that, the oldest
  give-back is forgotten and counted in `lost`: the admission then stays counted in Redis
  until it leaves its window (or its slot's lease ends), which errs towards fewer admissions,
  never more. Only when none of the LOOK oldest is a give-back is another change forgotten (a
  cost increase, or a bucket told of a call's end): that one errs the other way, by that
  call's difference.

Catching up: `take(group)` hands over every change of one group at once, before that
group's next round trip (another group's, on a Cluster node that is down, never holds it
up), applied in order by one script call (redis.lua "batch"). Replaying a change that did
apply is harmless for the sorted sets (removals and renames by id) and for ends; a bucket's
or fixed window's give-back would give back twice, so a change that may have been applied
(its reply lost, its task cancelled) is kept only as far as it is `resendable`. Kept by the
group's keys: a group built anew (a reload) finds what its predecessor left. Thread-safe (a
lock held for dict operations only), so async-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from itertools import islice
from typing import Any, Protocol

from callpolicy._quotas.redis.errors import UNREACHABLE

try:
    import redis
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]
from callpolicy._quotas.redis.script import PER_QUOTA, Arguments

MOST_IDS = 1024  # admissions kept per group: its catch-up script takes ~2 ms of Redis, once
MOST_CHANGES = 4  # per admission: a correction, a give-back, an end, and one more
LOOK = 16  # the oldest admissions searched for a give-back to forget
NOT_SENT = (" connecting to ", "No connection available")
BUCKET_CODES = frozenset({"lb", "tb"})
# Counts a change moves by its difference (not by admission id): applied twice, a give-back
# would give back twice.
COUNTED_CODES = frozenset({"lb", "tb", "fw", "sp"})

Change = tuple[Any, ...]  # (op, id, at, then cost and new cost of each quota)


class Owner(Protocol):
    """A group of quotas: its changes are sent with its keys and arguments."""

    keys: list[str]
    arguments: Arguments


def never_sent(error: BaseException) -> bool:
    """Whether a Redis error was raised before the request was written (at connect, or by
    a password refused while connecting)."""
    if redis is not None and isinstance(error, redis.exceptions.AuthenticationError):
        return True
    return isinstance(error, UNREACHABLE) and any(text in str(error) for text in NOT_SENT)


def compact(args: Sequence[Any]) -> Change:
    """What a change's script arguments (script.Arguments.build) hold beyond its group's."""
    quotas = int(args[1])
    kept: list[Any] = [args[0], args[2], args[3]]
    for i in range(quotas):
        base = 4 + i * PER_QUOTA
        kept += [args[base + 3], args[base + 4]]
    return tuple(kept)


def forgettable(change: Change, codes: Sequence[str]) -> bool:
    """Whether forgetting `change` can only make Redis count more: it gives back (or ends a
    call holding slots only), never adds."""
    if change[0] == "end":
        return not BUCKET_CODES.intersection(codes)
    pairs = change[3:]
    return all(float(new) <= float(cost) for cost, new in zip(pairs[::2], pairs[1::2], strict=True))


def resendable(change: Change, codes: Sequence[str]) -> Change | None:
    """What of a change that may have been applied (its reply lost) can be sent again:
    all but what it gives back to a count moved by its difference (applied twice, that would
    admit more than the limit; left out, the count errs towards fewer). None: nothing."""
    if change[0] == "end":  # an end moves a bucket to a bound (a max): applied twice, once
        return change
    pairs = list(change[3:])
    for i, code in enumerate(codes):
        if code in COUNTED_CODES and float(pairs[2 * i + 1]) < float(pairs[2 * i]):
            pairs[2 * i + 1] = pairs[2 * i]  # that quota's give-back is not sent again
    if all(float(new) == float(cost) for cost, new in zip(pairs[::2], pairs[1::2], strict=True)):
        return None
    return (*change[:3], *pairs)


class Kept:
    """One admission's changes, oldest first."""

    __slots__ = ("changes", "forgettable")

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.forgettable = True


class Pending:
    """The changes of every group of one storage that are still to be sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # by the group's keys, so that a group built anew (a reload) finds what its
        # predecessor left: the group last seen, and its changes by admission id
        self.groups: dict[tuple[str, ...], tuple[Owner, OrderedDict[str, Kept]]] = {}
        self.lost = 0  # changes forgotten past the bounds, or not safe to send again

    def __len__(self) -> int:
        """How many changes are kept."""
        with self.lock:
            return sum(len(k.changes) for _, ids in self.groups.values() for k in ids.values())

    def __bool__(self) -> bool:
        return bool(self.groups)

    def add(self, group: Owner, args: Sequence[Any], maybe_applied: bool = False) -> None:
        """Keep a change (its script arguments) to send on the next round trip; one that
        `maybe_applied` (its reply was lost), only as far as it is `resendable`."""
        change: Change | None = compact(args)
        if maybe_applied:
            change = resendable(compact(args), group.arguments.codes)
        with self.lock:
            if change is None:
                self.lost += 1
                return
            self._keep(group, self._ids(group), change)

    def _ids(self, group: Owner) -> OrderedDict[str, Kept]:
        key = tuple(group.keys)
        found = self.groups.get(key)
        ids = found[1] if found is not None else OrderedDict()
        self.groups[key] = (group, ids)
        return ids

    def _keep(self, group: Owner, ids: OrderedDict[str, Kept], change: Change) -> None:
        kept = ids.get(change[1])
        if kept is None:
            if len(ids) >= MOST_IDS:
                self._forget(ids)
            kept = ids[change[1]] = Kept()
        kept.changes.append(change)
        kept.forgettable &= forgettable(change, group.arguments.codes)
        if len(kept.changes) > MOST_CHANGES:
            del kept.changes[0]
            self.lost += 1

    def _forget(self, ids: OrderedDict[str, Kept]) -> None:
        oldest = next(iter(ids))
        for admission, kept in islice(ids.items(), LOOK):
            if kept.forgettable:
                oldest = admission
                break
        self.lost += len(ids.pop(oldest).changes)

    def take(self, group: Owner) -> list[Change] | None:
        """Every change of `group` (or of a group with its keys), oldest first, now the
        caller's to send (or None)."""
        with self.lock:
            found = self.groups.pop(tuple(group.keys), None)
            if found is None:
                return None
        return [change for kept in found[1].values() for change in kept.changes]

    def restore(self, group: Owner, changes: list[Change], maybe_applied: bool = False) -> None:
        """Changes taken but not sent: kept again, before those added since; if they
        `maybe_applied` (the reply was lost, the task cancelled), as far as `resendable`."""
        codes = group.arguments.codes
        with self.lock:
            found = self.groups.pop(tuple(group.keys), None)
            later = found[1] if found is not None else OrderedDict()
            ids = self._ids(group)
            for change in changes:
                safe = resendable(change, codes) if maybe_applied else change
                if safe is None:
                    self.lost += 1
                else:
                    self._keep(group, ids, safe)
            for kept in later.values():
                for change in kept.changes:
                    self._keep(group, ids, change)
