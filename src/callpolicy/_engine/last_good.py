"""The last good result of a policy's calls, by their arguments: what `fallback.last_good`
serves when a call gives up.

Bounded: at most `max_entries` results, the least recently stored or served dropped first,
and none older than the maximum age is served (an old one is dropped when found). Each
entry keeps its key (by default the call's arguments, `self` included for a method) and its
result alive until it is dropped. Thread-safe: one lock around a dict, held for a few
dictionary operations. A key that cannot be made (unhashable arguments, a key function
that raised) means the call's result is not kept, said at most once a minute per policy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from callpolicy._clock import CLOCK
from callpolicy._engine.outcomes import describe_exception
from callpolicy._forks import renew_after_fork
from callpolicy._model import Fallback
from callpolicy._text import Throttled

_unkeyed = Throttled(60.0)


class LastGood:
    def __init__(self, policy: str, fallback: Fallback) -> None:
        assert fallback.last_good is not None
        self.policy = policy
        self.max_age = fallback.last_good
        self.max_entries = fallback.max_entries
        self.key_function = fallback.key
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def key(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Hashable | None:
        """The key of a call of `fn`'s result; None: it is not kept (said at most once a
        minute)."""
        if self.key_function is not None:
            try:
                key = self.key_function(*args, **kwargs)
                hash(key)
            except Exception as error:
                said = f"its key function raised {describe_exception(error)}"
                self._not_kept(type(error), said)
                return None
            return None if key is None else (fn, key)  # None: not to keep this one
        key = (fn, args, tuple(sorted(kwargs.items()))) if kwargs else (fn, args)
        try:
            hash(key)
        except TypeError as error:
            self._not_kept(None, f"its arguments are not hashable ({error}); name a key function")
            return None
        return key

    def _not_kept(self, error: type[BaseException] | None, why: str) -> None:
        """Said at most once a minute per policy and error type (None: unhashable)."""
        _unkeyed.warn(
            (self.policy, error),
            "%s: fallback.last_good keeps no result of this call: %s (said at most once a "
            "minute per policy)",
            self.policy,
            why,
            policy=self.policy,
        )

    def store(self, key: Hashable, result: Any) -> None:
        now = CLOCK.now()
        with self._lock:
            entries = self._entries
            entries[key] = (now, result)
            entries.move_to_end(key)
            if len(entries) > self.max_entries:
                entries.popitem(last=False)

    def recall(self, key: Hashable) -> tuple[Any, float] | None:
        """The result stored for `key` and its age in seconds, if it is young enough."""
        now = CLOCK.now()
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            stored, result = found
            age = now - stored
            if age > self.max_age:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return result, age

    def __len__(self) -> int:
        return len(self._entries)
