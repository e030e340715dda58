"""A process forked while other threads are inside a quota check, a wait or a call (the
gunicorn --preload pattern) has working quotas: no lock left held, no parent's waiter or
in-flight call counted."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import pytest

from callpolicy import Registry

RegistryOf = Callable[..., Registry]
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")

POLICY = """
[quotas.slots]
concurrency = 2
max_wait = "60s"

[quotas.rate]
limit = "1000000000/1s"
algorithm = "token-bucket"  # never runs out: the hammering threads never wait

[endpoints.e]
quotas = ["slots"]

[endpoints.hammer]  # a quota of its own (not queued behind svc.e), in the same storage
quotas = ["rate"]
"""


def _wait_for(pid: int, timeout: float) -> int | None:
    """The child's exit status, or None if it did not end in time (then it is killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _nothing() -> None:
    return None


def _child(registry: Registry) -> int:
    """In the child: two calls at once must get both slots (the parent's holders and its
    queued waiter are not the child's), with no lock left held by the parent's threads."""
    release = threading.Event()
    both = threading.Barrier(3, timeout=3)

    def inside() -> None:
        both.wait()
        release.wait(3)

    call = registry.policy("svc.e")(inside)
    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    both.wait()
    release.set()
    for thread in threads:
        thread.join(3)
    return 0


def _hammering(registry: Registry, stop: threading.Event) -> list[threading.Thread]:
    call = registry.policy("svc.hammer")(_nothing)

    def hammer() -> None:
        while not stop.is_set():
            call()

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    return threads


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
def test_a_child_forked_during_quota_checks_can_call(registry_of: RegistryOf) -> None:
    registry = registry_of(svc=POLICY)
    hold = threading.Event()
    holders = [threading.Thread(target=registry.policy("svc.e")(hold.wait)) for _ in range(2)]
    for thread in holders:
        thread.start()
    queue = registry.runner("svc.e").admission.queue  # type: ignore[union-attr]
    waiter = threading.Thread(target=registry.policy("svc.e")(_nothing))
    waiter.start()
    deadline = time.monotonic() + 5
    while not queue.waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    assert queue.waiting, "the waiter did not queue"
    statuses = []
    stop = threading.Event()
    try:
        for _ in range(40):
            hammers = _hammering(registry, stop)
            time.sleep(0.002)  # let them be inside quota checks at the fork
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(registry)
                finally:
                    os._exit(code)
            stop.set()
            for thread in hammers:
                thread.join()
            stop.clear()
            statuses.append(_wait_for(pid, timeout=5))
    finally:
        hold.set()
        for thread in [*holders, waiter]:
            thread.join()
    assert statuses == [0] * 40, f"children that hung or failed: {statuses}"


def test_forking_is_renewed_for_every_lock_holder() -> None:
    """The objects holding locks register for renewal (a new kind of lock holder must)."""
    from callpolicy import _forks  # noqa: PLC0415 (the unit under test)

    kinds = {type(obj).__name__ for obj in _forks._renewed}
    assert {
        "MemoryStorage",
        "WaitQueue",
        "Registry",
        "Throttled",
        "Counters",
        "StatsBook",
    } <= kinds, kinds
    assert sys.platform == "win32" or hasattr(os, "register_at_fork")
