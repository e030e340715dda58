"""Learned limits shared through a real Redis (the `redis_server` fixture): a registry (a
"host") that has seen no response counts by what another learned, read at most once a second
per quota; an odd value in the key changes nothing but a warning."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
import redis
from test_learned_limits import answer, caller

from callpolicy import FakeClock, Rate, Registry

if TYPE_CHECKING:
    from local_redis import RedisServer

RegistryOf = Callable[..., Registry]
KEY = "{callpolicy:svc.api}:learned"


def shared(registry_of: RegistryOf, url: str) -> tuple[Registry, Registry]:
    text = f"""
        [quotas.api]
        limit = "20/1s"
        storage = "{url}"
        learn = {{ from = "x-ratelimit", floor = "5/1s", ceiling = "50/1s" }}

        [endpoints.get]
        quotas = ["api"]
        """
    return registry_of(svc=text), registry_of(svc=text)


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    connection.flushall()
    return connection


def test_another_host_counts_by_what_one_learned(
    registry_of: RegistryOf,
    redis_server: RedisServer,
    client: redis.Redis,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    one, other = shared(registry_of, redis_server.url)
    learns, reads = caller(one), caller(other)
    learns({"X_RateLimit_Limit": "12"})  # learned here...
    learns()  # ...and written on the next admission
    assert client.get(KEY) == "12 X-RateLimit-Limit: 12"
    assert 3000 < client.ttl(KEY) <= 3600
    reads()
    assert other.quota_counters()["svc.api"].learned == Rate(12, 1.0)
    client.set(KEY, "30 X-RateLimit-Limit: 30")
    reads()  # read less than a second ago: not again
    assert other.quota_counters()["svc.api"].learned == Rate(12, 1.0)
    clock.advance(1.0)
    reads()
    assert other.quota_counters()["svc.api"].learned == Rate(30, 1.0)
    lines = [r.getMessage() for r in caplog.records if ": limit " in r.getMessage()]
    where = f"learned by another process, through {redis_server.url}"
    assert lines == [
        "quota svc.api: limit 20/1s -> 12/1s (X-RateLimit-Limit: 12)",
        # what announced it there is the other process's to log: here, only where it came from
        f"quota svc.api: limit 20/1s -> 12/1s ({where})",
        f"quota svc.api: limit 12/1s -> 30/1s ({where})",
    ]


def test_a_shared_limit_is_held_within_learn_and_adapt_bounds(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis, clock: FakeClock
) -> None:
    text = f"""
        [quotas.api]
        limit = "20/1s"
        storage = "{redis_server.url}"
        learn = {{ from = "x-ratelimit", floor = "5/1s", ceiling = "500/1s" }}
        adapt = {{ floor = "10/1s", ceiling = "50/1s" }}

        [endpoints.get]
        quotas = ["api"]
        """
    registry = registry_of(svc=text)
    reads = caller(registry)
    for value, held in (("400 X-RateLimit-Limit: 400", 50), ("6 HTTP 429: cut", 10)):
        client.set(KEY, value)  # within learn's bounds, outside adapt's
        clock.advance(1.0)
        reads()  # never raises into the call
        reads()  # (on every admission)
        assert registry.quota_counters()["svc.api"].learned == Rate(held, 1.0)


@pytest.mark.parametrize("value", ["lots", "-5 x", "10\x00 x", "\uff19 x", "1" * 16])
def test_an_odd_shared_value_is_ignored(
    registry_of: RegistryOf,
    redis_server: RedisServer,
    client: redis.Redis,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    fresh_throttles: None,
    value: str,
) -> None:
    client.set(KEY, value)
    _, other = shared(registry_of, redis_server.url)
    reads = caller(other)
    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        reads()
    assert other.quota_counters()["svc.api"].learned is None
    assert "ignoring the learned limit" in caplog.records[-1].getMessage()


def test_async_calls_share_the_learned_limit(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis, clock: FakeClock
) -> None:
    one, other = shared(registry_of, redis_server.url)

    @one.policy("svc.get")
    async def learns(headers: dict[str, str]) -> SimpleNamespace:
        return answer(**headers)

    @other.policy("svc.get")
    async def reads() -> None:
        return None

    async def main() -> None:
        await learns({"X_RateLimit_Limit": "7"})
        await learns({})  # written on this admission, awaited
        await reads()  # read on this one

    asyncio.run(main())
    assert client.get(KEY) == "7 X-RateLimit-Limit: 7"
    assert other.quota_counters()["svc.api"].learned == Rate(7, 1.0)


def test_calls_racing_a_change_never_bring_back_the_old_limit(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    """Two tasks at once after a change: the one that wrote the change to Redis (waiting on
    it) must not put back the arguments of before, which the other had already replaced.
    The quota then admits the learned 10 in a second, not the declared 20."""
    registry = registry_of(
        svc=f"""
        [quotas.api]
        limit = "20/1h"
        storage = "{redis_server.url}"
        max_wait = "0s"
        learn = {{ from = "x-ratelimit", floor = "5/1h", ceiling = "50/1h" }}
        [endpoints.get]
        quotas = ["api"]
        """
    )

    @registry.policy("svc.get")
    async def get(headers: dict[str, str]) -> SimpleNamespace:
        return answer(**headers)

    async def main() -> int:
        await get({"X_RateLimit_Limit": "10"})  # learned: 10 from now on
        admitted = 1
        for _ in range(15):
            outcomes = await asyncio.gather(
                get({"X_RateLimit_Limit": "10"}),
                get({"X_RateLimit_Limit": "10"}),
                return_exceptions=True,
            )
            admitted += sum(not isinstance(o, BaseException) for o in outcomes)
        return admitted

    assert asyncio.run(main()) == 10
