"""The weighted sliding window in memory and in Redis: the same admissions and waits (Redis
finds a wait through its cumulative-cost index, in O(log n); a refund made earlier may only
shorten its wait), calls of cost 0 take no entry, and a window holds a bounded number."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import pytest
import redis

from callpolicy import QuotaExceeded, Registry
from callpolicy._quotas import algorithms
from callpolicy._quotas.redis import script

if TYPE_CHECKING:
    from local_redis import RedisServer

RegistryOf = Callable[..., Registry]
SLACK = 0.25  # s: the two clocks of one admission (this process's, Redis's) differ this much
# (each wait is 60 s + the window's 20 ms guard from its entry)


def noop() -> None:
    return None


def toml(storage: str, limit: str = "100/1m") -> str:
    return f"""
    [quotas.tokens]
    limit = "{limit}"
    weighted = true
    max_wait = "0s"
    storage = "{storage}"
    [endpoints.e]
    quotas = ["tokens"]
    """


class Twins:
    """One weighted quota in memory and the same in Redis, called alike."""

    def __init__(self, registry_of: RegistryOf, url: str, limit: str = "100/1m") -> None:
        self.hosts = [registry_of(mem=toml("memory://", limit)), registry_of(red=toml(url, limit))]

    def call(self, cost: float, actual: float | None = None) -> list[float]:
        """Both outcomes: 0.0 admitted, else the refusal's wait (s)."""
        outcomes = []
        for host, name in zip(self.hosts, ("mem.e", "red.e"), strict=True):
            options: dict[str, Any] = {"cost": cost}
            if actual is not None:
                options["actual_cost"] = lambda _result, used=actual: used
            try:
                host.policy(name, **options)(lambda: None)()
                outcomes.append(0.0)
            except QuotaExceeded as refused:
                outcomes.append(refused.wait)
        return outcomes


def entries(client: redis.Redis, quota: str = "red.tokens") -> list[tuple[str, float]]:
    found = client.zrange(f"{{callpolicy:{quota}}}:w", 0, -1, withscores=True)
    return cast("list[tuple[str, float]]", found)


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)


def test_memory_and_redis_admit_alike_and_wait_for_the_same_entry(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    twins = Twins(registry_of, redis_server.url)
    for cost in (30, 20, 10, 25, 15):
        assert twins.call(cost) == [0.0, 0.0]
    memory, shared = twins.call(40)  # 140 > 100: waits for 30 + 20 to leave
    assert 59 - SLACK < memory < 60.1
    assert abs(memory - shared) < SLACK
    memory, shared = twins.call(5)  # waits for the first entry only
    assert abs(memory - shared) < SLACK
    with pytest.raises(QuotaExceeded) as never:
        twins.hosts[1].policy("red.e", cost=101)(lambda: None)()
    assert never.value.reason == "cost"


def test_refunds_and_corrections_keep_admission_exact_and_redis_waits_never_longer(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    twins = Twins(registry_of, redis_server.url, limit="1000/1m")
    rng = random.Random(10)
    admitted = 0
    for _ in range(300):
        cost = rng.choice([0, 1, 5, 20, 60, 150])
        actual = rng.choice([None, None, 0, cost // 2, cost * 2, 0.5])
        memory, shared = twins.call(cost, actual)
        assert (memory == 0.0) == (shared == 0.0), (cost, actual, memory, shared)
        if memory:  # the index may find an earlier entry after refunds: shorter, not longer
            assert 0 < shared <= memory + SLACK
        admitted += memory == 0.0
    assert 20 < admitted < 300


def test_a_call_of_cost_zero_takes_no_entry_until_it_costs_something(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    twins = Twins(registry_of, redis_server.url)
    for _ in range(50):
        assert twins.call(0) == [0.0, 0.0]
    assert entries(client) == []
    assert twins.call(0, actual=70) == [0.0, 0.0]  # counted from its admission
    assert [member.rsplit(":", 1)[1] for member, _ in entries(client)] == ["70"]
    memory, shared = twins.call(40)
    assert memory > 59 - SLACK and abs(memory - shared) < SLACK


def test_a_weighted_window_holds_at_most_its_entry_cap_in_memory_and_redis(
    registry_of: RegistryOf, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(algorithms, "MAX_SLIDING_WINDOW", 3)
    monkeypatch.setattr(script, "MAX_SLIDING_WINDOW", 3)
    twins = Twins(registry_of, redis_server.url)
    assert [twins.call(0.5) for _ in range(3)] == [[0.0, 0.0]] * 3
    memory, shared = twins.call(0.5)  # 1.5 of 100 taken, but 3 entries already
    assert 59 - SLACK < memory < 60.1
    assert abs(memory - shared) < SLACK
    assert twins.call(0) == [0.0, 0.0]  # a call of cost 0 takes no entry


def test_the_memory_window_lists_a_call_of_cost_zero_in_time_order_once_it_costs() -> None:
    window = algorithms.SlidingWindow(100, 60.0)
    free = window.take(1.0, 0.0)
    later = window.take(2.0, 10.0)
    assert list(window.entries) == [later] and window.total == 10
    window.adjust(free, 30.0)
    assert list(window.entries) == [free, later] and window.total == 40
    window.refund(free)
    assert window.total == 10
    assert window.wait(61.5, 95.0) == pytest.approx(0.5)  # `later` leaves at 62


def test_entries_that_left_are_taken_off_the_total_even_when_the_call_is_refused(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(red=toml(redis_server.url))
    registry.policy("red.e", cost=50)(noop)()
    seconds, micros = client.time()
    two_minutes_ago = seconds * 1_000_000 + micros - 120_000_000
    key = "{callpolicy:red.tokens}"
    client.zadd(f"{key}:w", {"old:40": two_minutes_ago})  # as if admitted then: it has left
    client.zadd(f"{key}:c", {"old:40": 0})
    client.hincrbyfloat(f"{key}:t", "total", 40)
    with pytest.raises(QuotaExceeded):
        registry.policy("red.e", cost=60)(noop)()  # 50 + 60 > 100, once the 40 are gone
    assert float(cast("str", client.hget(f"{key}:t", "total"))) == 50
    registry.policy("red.e", cost=50)(noop)()  # 50 + 50 fit


def test_entries_that_left_together_are_taken_off_a_thousand_a_call(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    """No call reads more than 1,000 of them: the rest stay in the total (the window admits
    less for a moment, never more) and a refusal's wait is the shortest, so the caller asks
    again at once and each call takes 1,000 more off."""
    registry = registry_of(red=toml(redis_server.url))
    registry.policy("red.e", cost=1)(noop)()  # makes the keys
    client.delete(
        "{callpolicy:red.tokens}:w", "{callpolicy:red.tokens}:c", "{callpolicy:red.tokens}:t"
    )
    seconds, micros = client.time()
    then = seconds * 1_000_000 + micros - 120_000_000  # two minutes ago: all have left
    key = "{callpolicy:red.tokens}"
    members = {f"old{n:05d}:0.04": then + n for n in range(2500)}
    client.zadd(f"{key}:w", members)
    client.zadd(f"{key}:c", {m: (n + 1) * 0.04 for n, m in enumerate(members)})
    client.hset(f"{key}:t", mapping={"total": 100, "cum": 100, "debt": 0, "until": 0, "last": 0})
    with pytest.raises(QuotaExceeded) as refused:
        registry.policy("red.e", cost=60)(noop)()  # 60 of the 100 still counted
    assert refused.value.wait < 0.01  # ask again at once
    assert client.zcard(f"{key}:w") == 1500
    registry.policy("red.e", cost=60)(noop)()  # 1,000 more off: 20 + 60 fit
    assert float(cast("str", client.hget(f"{key}:t", "total"))) == pytest.approx(80)
    assert client.zcard(f"{key}:w") == 501
