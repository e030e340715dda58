"""State renewed in a child process after `os.fork()` (gunicorn --preload, multiprocessing's
fork start method): a lock another thread held at the fork would never be released in the
child, and the calls waiting or in flight in the parent are not the child's."""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class Renewable(Protocol):
    def after_fork(self) -> None: ...


_renewed: weakref.WeakSet[Renewable] = weakref.WeakSet()


def renew_after_fork(obj: Renewable) -> None:
    """Call `obj.after_fork()` in every child forked from now on."""
    _renewed.add(obj)


def _in_child() -> None:
    for obj in list(_renewed):
        obj.after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_in_child)
