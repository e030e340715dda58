"""State renewed in a child process after `os.fork()` (gunicorn --preload, multiprocessing's
fork start method): a lock another thread held at the fork would never be released in the
child, and the calls waiting or in flight in the parent are not the child's."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Renewable(Protocol):
    def after_fork(self) -> None: ...


_renewed: weakref.WeakSet[Renewable] = weakref.WeakSet()


R = TypeVar("R", bound=Renewable)


class Book(Generic[R]):
    """Live counts by name (a registry's quotas, its policies), made on first use: in a
    forked child, the book's lock is new and every entry is renewed in place (callers keep
    them), counted from zero: the parent's counts are the parent's to report."""

    def __init__(self, new: Callable[[], R]) -> None:
        self._new = new
        self._lock = threading.Lock()
        self._entries: dict[str, R] = {}
        renew_after_fork(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        for entry in self._entries.values():
            entry.after_fork()

    def of(self, name: str) -> R:
        with self._lock:
            found = self._entries.get(name)
            if found is None:
                found = self._entries[name] = self._new()
            return found


def renew_after_fork(obj: Renewable) -> None:
    """Call `obj.after_fork()` in every child forked from now on."""
    _renewed.add(obj)


def _in_child() -> None:
    for obj in list(_renewed):
        obj.after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_in_child)
