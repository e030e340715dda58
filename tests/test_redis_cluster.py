"""Quotas in a real Redis Cluster of three masters (the `redis_cluster` fixture): any node
will do, quotas spread over the shards (a hash tag per quota), counts stay exact, and a call
whose quotas sit on several slots takes all of them or none."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

import pytest
import redis
from test_redis_quotas import (
    closed_port,
    noop,
    outcome,
    tagged,
    tasks_at_once,
    threads_at_once,
)

from callpolicy import QuotaExceeded, QuotaUnavailable, Registry

if TYPE_CHECKING:
    from local_redis_cluster import LocalCluster

RegistryOf = Callable[..., Registry]


@pytest.fixture
def cluster(redis_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The session's cluster, emptied for this test."""
    redis_cluster.flush()
    yield redis_cluster


def keys_by_node(cluster: LocalCluster) -> dict[int, list[str]]:
    found = {}
    for index in range(len(cluster.nodes)):
        client = cluster.client(index)
        found[index] = sorted(cast("list[str]", client.keys("*")))
        client.close()
    return {index: keys for index, keys in found.items() if keys}


def entries(cluster: LocalCluster, key: str) -> int:
    """The members of a sliding window's sorted set, read on the node owning its slot."""
    client = cluster.client(cluster.owner(key))
    try:
        return int(client.zcard(key))
    finally:
        client.close()


def on_distinct_nodes(cluster: LocalCluster, count: int) -> list[str]:
    """`count` quota names of the file "svc" whose keys sit on different nodes."""
    chosen: dict[int, str] = {}
    for index in range(200):
        name = f"q{index}"
        chosen.setdefault(cluster.owner(tagged(f"svc.{name}", "a")), name)
        if len(chosen) >= count:
            break
    return list(chosen.values())[:count]


@pytest.mark.parametrize("node", [0, 1, 2])
def test_a_storage_naming_any_one_node_of_the_cluster_counts_in_the_cluster(
    registry_of: RegistryOf, cluster: LocalCluster, node: int
) -> None:
    """Two of three nodes do not own the quota's slot: the client follows MOVED."""
    url = f"redis+cluster://127.0.0.1:{cluster.nodes[node].port}"
    toml = f"""
    [quotas.q]
    limit = "3/1min"
    storage = "{url}"
    max_wait = "0s"
    [endpoints.e]
    quotas = ["q"]
    """
    call = registry_of(svc=toml).policy("svc.e")(noop)
    assert [outcome(call) for _ in range(4)] == ["ok", "ok", "ok", "refused"]
    assert entries(cluster, tagged("svc.q", "a")) == 3


def test_a_plain_url_to_a_node_not_owning_the_slot_fails_as_on_unavailable_says(
    registry_of: RegistryOf, cluster: LocalCluster
) -> None:
    """redis:// does not follow MOVED: the MovedError is an outage, never raised as is."""
    key = tagged("svc.q", "a")
    other = next(i for i in range(len(cluster.nodes)) if i != cluster.owner(key))
    toml = f"""
    [quotas.q]
    limit = "3/1min"
    storage = "redis://127.0.0.1:{cluster.nodes[other].port}/0"
    [endpoints.e]
    quotas = ["q"]
    """
    call = registry_of(svc=toml).policy("svc.e")(noop)
    with pytest.raises(QuotaUnavailable) as down:
        call()
    assert isinstance(down.value.__cause__, redis.exceptions.MovedError)


def test_quotas_spread_over_the_shards_each_keeping_its_keys_on_one_node(
    registry_of: RegistryOf, cluster: LocalCluster
) -> None:
    names = [f"q{index}" for index in range(12)]
    toml = "".join(
        f'[quotas.{name}]\nlimit = "5/1min"\nstorage = "{cluster.url}"\n'
        f'[endpoints.{name}]\nquotas = ["{name}"]\n'
        for name in names
    )
    registry = registry_of(svc=toml)
    for name in names:
        assert outcome(registry.policy(f"svc.{name}")(noop)) == "ok"
    placed = keys_by_node(cluster)
    assert len(placed) == 3  # twelve quotas: every shard holds some
    for node, keys in placed.items():
        for key in keys:
            assert cluster.owner(key) == node
    assert sorted(k for keys in placed.values() for k in keys) == sorted(
        tagged(f"svc.{name}", "a") for name in names
    )


CLUSTER_WINDOW = """
[quotas.q]
limit = "10/1min"
storage = "{url}?timeout=2s"
max_wait = "0s"
[endpoints.e]
quotas = ["q"]
"""


def test_threads_at_once_get_exactly_the_limit_of_a_cluster_window(
    registry_of: RegistryOf, cluster: LocalCluster
) -> None:
    registry = registry_of(svc=CLUSTER_WINDOW.format(url=cluster.url))
    outcomes = threads_at_once(registry.policy("svc.e")(noop), 40)
    assert outcomes == {"ok": 10, "refused": 30}
    assert entries(cluster, tagged("svc.q", "a")) == 10


async def test_tasks_at_once_get_exactly_the_limit_of_a_cluster_window(
    registry_of: RegistryOf, cluster: LocalCluster
) -> None:
    registry = registry_of(svc=CLUSTER_WINDOW.format(url=cluster.url))

    async def call() -> None:
        await asyncio.sleep(0)

    outcomes = await tasks_at_once(registry.policy("svc.e")(call), 40)
    assert outcomes == {"ok": 10, "refused": 30}
    assert entries(cluster, tagged("svc.q", "a")) == 10


@pytest.mark.parametrize("is_async", [False, True])
def test_a_call_refused_by_its_second_quota_gives_the_first_back_on_another_shard(
    registry_of: RegistryOf, cluster: LocalCluster, is_async: bool
) -> None:
    first, second = on_distinct_nodes(cluster, 2)
    toml = f"""
    [quotas.{first}]
    limit = "5/1min"
    storage = "{cluster.url}"
    max_wait = "0s"
    [quotas.{second}]
    limit = "1/1min"
    storage = "{cluster.url}"
    max_wait = "0s"
    [endpoints.e]
    quotas = ["{first}", "{second}"]
    """
    policy = registry_of(svc=toml).policy("svc.e")
    one, two = tagged(f"svc.{first}", "a"), tagged(f"svc.{second}", "a")
    assert cluster.owner(one) != cluster.owner(two)

    async def call() -> None:
        await asyncio.sleep(0)

    def attempt() -> None:
        if is_async:
            asyncio.run(policy(call)())
        else:
            policy(noop)()

    attempt()
    assert (entries(cluster, one), entries(cluster, two)) == (1, 1)
    with pytest.raises(QuotaExceeded) as refused:
        attempt()
    assert refused.value.quota == f"svc.{second}"
    assert (entries(cluster, one), entries(cluster, two)) == (1, 1)  # the first given back


def test_a_cluster_url_with_a_node_down_still_starts_from_another(
    registry_of: RegistryOf, cluster: LocalCluster
) -> None:
    """The URL's first node does not listen: the client learns the cluster from the next."""
    url = cluster.url.replace("redis+cluster://", f"redis+cluster://127.0.0.1:{closed_port()},")
    toml = f"""
    [quotas.q]
    limit = "2/1min"
    storage = "{url}"
    max_wait = "0s"
    [endpoints.e]
    quotas = ["q"]
    """
    call = registry_of(svc=toml).policy("svc.e")(noop)
    assert [outcome(call) for _ in range(3)] == ["ok", "ok", "refused"]


def test_a_cluster_that_cannot_be_reached_fails_closed_and_loads_all_the_same(
    registry_of: RegistryOf,
) -> None:
    toml = f"""
    [quotas.q]
    limit = "2/1min"
    storage = "redis+cluster://127.0.0.1:{closed_port()}"
    [endpoints.e]
    quotas = ["q"]
    """
    call = registry_of(svc=toml).policy("svc.e")(noop)
    with pytest.raises(QuotaUnavailable) as down:
        call()
    assert isinstance(down.value.__cause__, redis.exceptions.RedisClusterException)
