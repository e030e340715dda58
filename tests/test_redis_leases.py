"""In-flight slots in Redis are leases renewed while their calls run (the quota's `lease`):
a call longer than its lease keeps its slot, sync or async, and a crashed worker's slot comes
back within about its lease. Timing is asserted with generous polling, never tightly."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from callpolicy import QuotaExceeded, Registry
from callpolicy._quotas.redis.leases import Leases

if TYPE_CHECKING:
    from conftest import WritePolicies
    from local_redis import RedisServer

RegistryOf = Callable[..., Registry]
HOLDER = Path(__file__).with_name("redis_holder.py")
KEY = "{callpolicy:svc.slot}:a"
LEASE = 1.0  # short, so a test sees it lapse; renewed every third of it


def slot_toml(url: str, lease: str = "1s") -> str:
    return f"""
    [quotas.slot]
    concurrency = 1
    storage = "{url}"
    lease = "{lease}"
    max_wait = "0s"
    [endpoints.e]
    quotas = ["slot"]
    """


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    yield connection
    connection.close()


def admitted(call: Callable[[], object]) -> bool:
    try:
        call()
    except QuotaExceeded:
        return False
    return True


def leases_of(registry: Registry) -> Leases:
    admission = registry.runner("svc.e").admission
    assert admission is not None
    leases = admission.candidates[0].groups[0].storage.leases  # type: ignore[attr-defined]
    assert isinstance(leases, Leases)
    return leases


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_call_running_three_leases_keeps_its_slot(
    flavour: str, registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    holder, other = (
        registry_of(svc=slot_toml(redis_server.url)),
        registry_of(svc=slot_toml(redis_server.url)),
    )
    release = threading.Event()
    started = threading.Event()

    def hold_sync() -> None:
        started.set()
        release.wait(30)

    async def hold_async() -> None:
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.02)

    if flavour == "sync":
        call = holder.policy("svc.e")(hold_sync)
        thread = threading.Thread(target=call)
    else:
        acall = holder.policy("svc.e")(hold_async)
        thread = threading.Thread(target=asyncio.run, args=(acall(),))
    thread.start()
    try:
        assert started.wait(10)
        noop = other.policy("svc.e")(lambda: None)
        end = time.monotonic() + 3 * LEASE + 0.5
        tries = 0
        while time.monotonic() < end:  # another host never gets the only slot
            assert not admitted(noop)
            tries += 1
            time.sleep(0.1)
        assert tries >= 10
        assert client.zcard(KEY) == 1
    finally:
        release.set()
        thread.join(10)
    assert admitted(noop)  # given back when the call ended
    leases = leases_of(holder)
    assert leases.held() == 0
    until(lambda: leases._thread is None, 5, "the renewing thread did not stop once idle")


def test_a_crashed_workers_slot_comes_back_within_about_its_lease(
    write_policies: WritePolicies, redis_server: RedisServer, client: redis.Redis
) -> None:
    policy_dir = write_policies(svc=slot_toml(redis_server.url))
    worker = subprocess.Popen(
        [sys.executable, str(HOLDER), str(policy_dir), "svc.e"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "holding"
        registry = Registry(policy_dir)
        noop = registry.policy("svc.e")(lambda: None)
        end = time.monotonic() + 2.5 * LEASE
        while time.monotonic() < end:  # alive: its lease is renewed
            assert not admitted(noop)
            time.sleep(0.1)
        worker.kill()  # SIGKILL: the call never ends, its slot is never given back
        worker.wait()
        killed = time.monotonic()
        until(lambda: admitted(noop), 15, "the dead worker's slot never came back")
        # Not before its last lease ran out (generous: the lease minus a renewal interval).
        assert time.monotonic() - killed >= LEASE * 2 / 3 - 0.1
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_renewals_failing_while_redis_is_down_never_change_the_calls_outcome(
    registry_of: RegistryOf, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(svc=slot_toml(redis_server.url + "?timeout=100ms"))

    @registry.policy("svc.e")
    def call() -> str:
        redis_server.stop()
        time.sleep(LEASE)  # renewals come due and fail
        return "done"

    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        assert call() == "done"
    assert "not renewed" in caplog.text
    assert leases_of(registry).held() == 0


def test_a_forked_child_renews_none_of_its_parents_slots(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = registry_of(svc=slot_toml(redis_server.url))
    leases = leases_of(registry)

    @registry.policy("svc.e")
    def call() -> int:
        held = leases.held()
        leases.after_fork()  # as in a child forked now (see tests/test_fork.py)
        return held

    assert call() == 1
    assert leases.held() == 0


def test_explain_says_where_a_slot_lives_and_its_lease(registry_of: RegistryOf) -> None:
    from callpolicy._explain import describe_quota  # noqa: PLC0415

    registry = registry_of(svc=slot_toml("redis://127.0.0.1:6379/0", lease="10s"))
    [quota] = registry.get("svc.e").quotas
    assert describe_quota(quota) == (
        "svc.slot (1 in flight, redis://127.0.0.1:6379/0, fail-closed when unreachable, "
        "lease 10s, max_wait 0s)"
    )


def test_a_slot_that_lapsed_before_its_renewal_is_not_taken_back_and_a_warning_says_so(
    registry_of: RegistryOf,
    redis_server: RedisServer,
    client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = registry_of(svc=slot_toml(redis_server.url))

    @registry.policy("svc.e")
    def call() -> int:
        client.delete(KEY)  # as if Redis had been away past the lease, and another call came
        until(lambda: leases_of(registry).held() == 0, 10, "the lapsed slot is still renewed")
        return int(client.zcard(KEY))

    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        assert call() == 0  # not taken back: another call may hold it now
    assert "1 in-flight slot(s) of svc.slot gone before renewal" in caplog.text


def live(client: redis.Redis, key: str = KEY) -> int:
    """The slots of `key` whose lease has not ended, by Redis's clock."""
    seconds, micros = client.time()
    return int(client.zcount(key, f"({seconds * 1_000_000 + micros}", "+inf"))


def two_slots_toml(url: str) -> str:
    return f"""
    [quotas.a]
    concurrency = 5
    storage = "{url}"
    lease = "1s"
    max_wait = "0s"
    [quotas.b]
    concurrency = 1
    storage = "{url}"
    lease = "1s"
    max_wait = "0s"
    [endpoints.e]
    quotas = ["a", "b"]
    """


def test_a_slot_gone_in_one_quota_leaves_the_others_renewed(
    registry_of: RegistryOf,
    redis_server: RedisServer,
    client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = registry_of(svc=two_slots_toml(redis_server.url))

    @registry.policy("svc.e")
    def call() -> int:
        client.delete("{callpolicy:svc.a}:a")  # a's slot lost (evicted, say); b's is not
        time.sleep(2.5)  # two and a half leases: b's lapses unless it is renewed
        return live(client, "{callpolicy:svc.b}:a")

    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        assert call() == 1
    assert "1 in-flight slot(s) of svc.a gone before renewal" in caplog.text
    assert "svc.b gone" not in caplog.text


def test_renewals_go_on_when_a_logging_handler_raises(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    class Raising(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if "gone before renewal" in record.getMessage():
                raise RuntimeError("a broken handler")
            return True

    raising = Raising()
    logger = logging.getLogger("callpolicy")
    logger.addFilter(raising)
    try:
        registry = registry_of(svc=slot_toml(redis_server.url))

        @registry.policy("svc.e")
        def lose() -> None:
            client.delete(KEY)
            until(lambda: leases_of(registry).held() == 0, 10, "the lost slot is still renewed")

        lose()

        @registry.policy("svc.e")
        def long_call() -> int:
            time.sleep(2.5)
            return live(client)

        assert long_call() == 1  # renewed by a thread that is still there, or a new one
    finally:
        logger.removeFilter(raising)


def test_a_quota_named_twice_through_a_pool_is_one_slot(
    registry_of: RegistryOf,
    redis_server: RedisServer,
    client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = registry_of(
        svc=slot_toml(redis_server.url).replace('quotas = ["slot"]', 'quotas = ["slot", "keys"]')
        + '\n[quotas.keys]\npool = ["slot"]\n'
    )

    @registry.policy("svc.e")
    def call() -> int:
        time.sleep(2.5)
        return live(client)

    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        assert call() == 1
    assert "gone before renewal" not in caplog.text
