"""A Redis breaker's async callers closed or run from many threads: a coroutine closed in its
first attempt (its loop running, or gone) gives its trial call back without an error, and
threads each running event loops of their own share the breaker's per-loop clients safely.
(Found by the review of the async breaker.)"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
from test_breaker_redis_async import breaker_of, down, policy

from callpolicy import Registry

if TYPE_CHECKING:
    from conftest import WritePolicies
    from local_redis import RedisServer


def half_open(write_policies: WritePolicies, redis_server: RedisServer) -> Registry:
    """A registry whose breaker (one trial call) is open, and may probe now."""
    registry = Registry(write_policies(svc=policy(redis_server.url, "300ms", probes=1)))
    for _ in range(4):
        with pytest.raises(ConnectionError):
            registry.policy("svc.get")(down)()
    time.sleep(0.35)
    return registry


async def in_trial(registry: Registry) -> Any:
    """A call's coroutine, driven by hand until the user's function runs (its trial call
    taken) and suspended there for ever."""
    entered = []

    async def hang() -> str:
        entered.append(1)
        await asyncio.Future()  # never done
        return "never"

    coro = registry.policy("svc.get")(hang)()
    while not entered:
        yielded = coro.send(None)
        if entered:
            break
        if yielded is None:
            await asyncio.sleep(0)
        else:
            yielded._asyncio_future_blocking = False
            await yielded
    return coro


def test_a_coroutine_closed_in_its_first_attempt_gives_its_trial_call_back(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    registry = half_open(write_policies, redis_server)
    coro = asyncio.run(in_trial(registry))  # a trial call taken, the call suspended, loop gone
    error = None
    try:
        coro.close()  # as when a pending task is garbage-collected after its loop ended
    except BaseException as exc:
        error = exc
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    state = client.hgetall(breaker_of(registry).keys[0])
    client.close()
    assert error is None, repr(error)
    assert state["taken"] == "0", state


def test_loop_scripts_from_many_threads(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    registry = Registry(write_policies(svc=policy(redis_server.url)))
    breaker = breaker_of(registry)
    errors: list[BaseException] = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    async def once() -> None:
        breaker.loop_scripts.get()

    def worker() -> None:
        for _ in range(300):
            try:
                asyncio.run(once())
            except BaseException as exc:
                errors.append(exc)

    try:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, {repr(e) for e in errors}


def test_a_coroutine_closed_in_a_running_loop_closes_cleanly(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    registry = half_open(write_policies, redis_server)

    async def main() -> BaseException | None:
        coro = await in_trial(registry)
        try:
            coro.close()
        except BaseException as exc:
            return exc
        return None

    error = asyncio.run(main())
    assert error is None, repr(error)
