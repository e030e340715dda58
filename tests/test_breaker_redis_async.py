"""Async callers of a circuit breaker shared through a real Redis server await its script
calls (redis.asyncio) instead of blocking the event loop: they open, probe and close together
with sync callers and other processes; a ticker task keeps running while Redis is paused
under a call; a task cancelled while it awaits Redis leaves no trial call taken and no outcome
recorded twice; an unreachable Redis lets attempts through uncounted, warned once."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import redis

from callpolicy import CircuitOpen, Registry
from callpolicy._engine.breaker import CLOSED, OPEN
from callpolicy._engine.redis_breaker import RedisBreaker

if TYPE_CHECKING:
    from conftest import WritePolicies
    from local_redis import RedisServer
    from local_redis_cluster import LocalCluster

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
PAUSE_MS = 600  # CLIENT PAUSE: Redis answers no command of any client this long


def policy(url: str, open_for: str = "30s", probes: int = 2) -> str:
    return POLICY.format(url=url, open_for=open_for, probes=probes)


async def adown() -> None:
    await asyncio.sleep(0)
    raise ConnectionError("refused")


async def aok() -> str:
    await asyncio.sleep(0)
    return "ok"


def down() -> None:
    raise ConnectionError("refused")


def breaker_of(registry: Registry) -> RedisBreaker:
    circuit = registry.runner("svc.get").breaker
    assert circuit is not None and isinstance(circuit.breaker, RedisBreaker)
    return circuit.breaker


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "callpolicy"]


def pause_redis(url: str) -> None:
    """Every client of the server waits PAUSE_MS for its next command's reply."""
    client = redis.Redis.from_url(url)
    client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")  # type: ignore[no-untyped-call]
    client.close()


async def test_async_and_sync_callers_open_probe_and_close_together(
    write_policies: WritePolicies, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_policies(svc=policy(redis_server.url, open_for="1s", probes=2))
    tasks, sync = Registry(folder), Registry(folder)
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await tasks.policy("svc.get")(adown)()
        for _ in range(2):
            with pytest.raises(ConnectionError):
                sync.policy("svc.get")(down)()
        with pytest.raises(CircuitOpen):
            sync.policy("svc.get")(down)()
        with pytest.raises(CircuitOpen) as raised:
            await Registry(folder).policy("svc.get")(aok)()  # asks Redis: open
        assert 0.5 < raised.value.retry_in <= 1.0
        await asyncio.sleep(1.1)  # past open_for, and past what `tasks` was last told
        assert await tasks.policy("svc.get")(aok)() == "ok"  # trial call 1 of 2, async
        assert sync.policy("svc.get")(lambda: "ok")() == "ok"  # 2 of 2, sync: closed
        assert await tasks.policy("svc.get")(aok)() == "ok"
    assert breaker_of(tasks).state == CLOSED and breaker_of(sync).state == CLOSED
    assert messages(caplog) == [
        "circuit breaker svc.api open: 4 of 4 calls failed (100% >= failure_ratio 0.5) over the "
        "last 4 calls; probing again in 1s",
        "circuit breaker svc.api half-open: open_for 1s passed; letting 2 trial calls",
        "circuit breaker svc.api closed: 2 trial calls succeeded",
    ]


ASYNC_CHILD = """
import asyncio, sys, callpolicy
async def call():
    print("called")
get = callpolicy.Registry(sys.argv[1]).policy("svc.get")(call)
try:
    asyncio.run(get())
except callpolicy.CircuitOpen as e:
    print(type(e).__name__, e)
"""


async def test_another_process_awaiting_the_breaker_sees_it_open(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    folder = write_policies(svc=policy(redis_server.url))
    registry = Registry(folder)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            await registry.policy("svc.get")(adown)()
    done = subprocess.run(
        [sys.executable, "-c", ASYNC_CHILD, str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith(
        "CircuitOpen svc.get: circuit breaker svc.api is open and probes again in 2"
    ), done.stdout + done.stderr
    assert "called" not in done.stdout


async def ticks_during(call: asyncio.Future[str]) -> int:
    """How many times a ticker task ran (every 10 ms) until `call` ended."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await call
    finally:
        task.cancel()
    return ticks


@pytest.mark.parametrize("awaited", [True, False])
async def test_the_event_loop_runs_while_redis_is_paused_under_a_call(
    write_policies: WritePolicies,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    awaited: bool,
) -> None:
    registry = Registry(write_policies(svc=policy(redis_server.url)))
    get = registry.policy("svc.get")(aok)
    assert await get() == "ok"  # connected
    breaker_of(registry).told = float("-inf")  # the next attempt asks Redis before it goes
    circuit = registry.runner("svc.get").breaker
    assert circuit is not None and circuit.remote
    if not awaited:  # the control: the calls made in the loop's thread block it
        monkeypatch.setattr(circuit, "remote", False)
    pause_redis(redis_server.url)
    call = asyncio.ensure_future(get())
    ticks = await ticks_during(call)
    assert call.result() == "ok"
    if awaited:
        assert ticks >= 10  # about PAUSE_MS / 10 ms: the ticker ran while Redis was paused
    else:
        assert ticks <= 1
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert client.hget(breaker_of(registry).keys[0], "calls") == "2"
    client.close()


async def open_then_past(registry: Registry, url: str) -> redis.Redis:
    for _ in range(4):
        with pytest.raises(ConnectionError):
            await registry.policy("svc.get")(adown)()
    await asyncio.sleep(0.3)  # past open_for: the next attempt asks Redis for a trial call
    return redis.Redis.from_url(url, decode_responses=True)


async def settled(client: redis.Redis, key: str, field: str, value: str) -> object:
    """The field once it reads `value` (polled while the loop runs, 5 s at most)."""
    found: object = None
    for _ in range(100):
        found = client.hget(key, field)
        if found == value:
            break
        await asyncio.sleep(0.05)
    return found


async def test_a_task_cancelled_awaiting_its_trial_call_gives_it_back(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    registry = Registry(write_policies(svc=policy(redis_server.url, "200ms", probes=1)))
    client = await open_then_past(registry, redis_server.url)
    called = []

    async def call() -> str:
        called.append(1)
        return "ok"

    pause_redis(redis_server.url)
    task = asyncio.ensure_future(registry.policy("svc.get")(call)())
    await asyncio.sleep(0.1)  # awaiting ENTER, which runs once Redis is back
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    key = breaker_of(registry).keys[0]
    await asyncio.sleep(PAUSE_MS / 1000)
    assert await settled(client, key, "taken", "0") == "0"  # taken, then given back
    assert client.hget(key, "state") == "2" and not called  # half-open, the call not made
    assert await registry.policy("svc.get")(call)() == "ok"  # the only trial call: closed
    assert client.hget(key, "state") == "0" and called == [1]
    client.close()


async def test_a_task_cancelled_awaiting_its_outcome_has_it_recorded_once(
    write_policies: WritePolicies, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(write_policies(svc=policy(redis_server.url, "200ms", probes=1)))
    client = await open_then_past(registry, redis_server.url)

    called = asyncio.Event()

    async def trial() -> str:
        pause_redis(redis_server.url)  # its outcome's round trip waits
        called.set()
        return "ok"

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        task = asyncio.ensure_future(registry.policy("svc.get")(trial)())
        await called.wait()  # the task now awaits RECORD
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        key = breaker_of(registry).keys[0]
        await asyncio.sleep(PAUSE_MS / 1000)
        assert await settled(client, key, "state", "0") == "0"  # the trial call's success
        await asyncio.sleep(0.1)
    assert messages(caplog) == [
        "circuit breaker svc.api half-open: open_for 200ms passed; letting 1 trial call",
        "circuit breaker svc.api closed: 1 trial call succeeded",  # recorded once, told here
    ]
    assert breaker_of(registry).state == CLOSED
    assert client.hget(key, "calls") == "0"  # a fresh window: nothing counted twice
    client.close()


async def test_an_unreachable_redis_lets_async_attempts_through_warning_once(
    write_policies: WritePolicies,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    registry = Registry(write_policies(svc=policy(url)))
    get = registry.policy("svc.get")(adown)
    breaker, asked = breaker_of(registry), []
    scripts = breaker.loop_scripts.get

    def counted() -> Any:
        asked.append(1)
        return scripts()

    monkeypatch.setattr(breaker.loop_scripts, "get", counted)
    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        for _ in range(6):
            with pytest.raises(ConnectionError):
                await get()  # never CircuitOpen: nothing is counted
    lines = [r.getMessage() for r in caplog.records if "circuit breaker" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"circuit breaker svc.api: storage redis://***@127.0.0.1:{port}")
    assert "s3cret" not in caplog.text
    assert len(asked) == 1  # not asked again for DOWN_FOR seconds


async def test_async_callers_share_a_breaker_through_a_cluster(
    write_policies: WritePolicies, redis_cluster: LocalCluster
) -> None:
    redis_cluster.flush()
    folder = write_policies(svc=policy(redis_cluster.url))
    tasks, sync = Registry(folder), Registry(folder)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            await tasks.policy("svc.get")(adown)()
    assert breaker_of(tasks).state == OPEN
    with pytest.raises(CircuitOpen):
        sync.policy("svc.get")(lambda: "ok")()


async def test_async_retries_tell_each_attempt_to_the_breaker_once(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    text = policy(redis_server.url).replace("window = 4", "window = 10")
    text = text.replace("stop.attempts = 1", 'stop.attempts = 3\nwait.strategy = "none"')
    registry = Registry(write_policies(svc=text))
    outcomes = iter([ConnectionError("refused"), ConnectionError("refused"), None])

    async def flaky() -> str:
        await asyncio.sleep(0)
        error = next(outcomes)
        if error is not None:
            raise error
        return "ok"

    breaker_of(registry).told = float("-inf")
    assert await registry.policy("svc.get")(flaky)() == "ok"
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    state = client.hgetall(breaker_of(registry).keys[0])
    assert (state["calls"], state["failures"]) == ("3", "2")
    client.close()
