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

from callpolicy import Registry
from callpolicy._engine.redis_breaker import RedisBreaker

if TYPE_CHECKING:
    from conftest import WritePolicies
    from local_redis import RedisServer

POLICY = """
[breakers.api]
window = 4
min_calls = 4
open_for = "{open_for}"
probes = {probes}
storage = "{url}?timeout=2s"

[endpoints.get]
breaker = "api"
retry.on_exceptions = ["ConnectionError"]
stop.attempts = 1
"""


def policy(url: str, open_for: str = "30s", probes: int = 1) -> str:
    return POLICY.format(url=url, open_for=open_for, probes=probes)


def down() -> None:
    raise ConnectionError("refused")


def breaker_of(registry: Registry) -> RedisBreaker:
    circuit = registry.runner("svc.get").breaker
    assert circuit is not None and isinstance(circuit.breaker, RedisBreaker)
    return circuit.breaker


def open_it(registry: Registry) -> None:
    for _ in range(4):
        with pytest.raises(ConnectionError):
            registry.policy("svc.get")(down)()


def test_a_coroutine_closed_in_its_first_attempt_gives_its_trial_call_back(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    registry = Registry(write_policies(svc=policy(redis_server.url, open_for="300ms")))
    open_it(registry)
    time.sleep(0.35)
    entered = []

    async def hang() -> str:
        entered.append(1)
        await asyncio.Future()  # never done
        return "never"

    async def start() -> Any:
        coro = registry.policy("svc.get")(hang)()
        while not entered:  # drive it by hand until the user's function runs
            yielded = coro.send(None)
            if entered:
                break
            if yielded is None:
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False
                await yielded
        return coro

    coro = asyncio.run(start())  # a trial call taken, the function suspended, loop gone
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
    registry = Registry(write_policies(svc=policy(redis_server.url, open_for="300ms")))
    open_it(registry)
    time.sleep(0.35)
    entered = []

    async def hang() -> str:
        entered.append(1)
        await asyncio.Future()
        return "never"

    async def main() -> BaseException | None:
        coro = registry.policy("svc.get")(hang)()
        while True:
            yielded = coro.send(None)
            if entered:
                break
            if yielded is None:
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False
                await yielded
        try:
            coro.close()
        except BaseException as exc:
            return exc
        return None

    error = asyncio.run(main())
    assert error is None, repr(error)
