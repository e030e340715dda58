"""Quotas in a real Redis Cluster of three masters (the `redis_cluster` fixture): any node
will do, quotas spread over the shards (a hash tag per quota), counts stay exact, and a call
whose quotas sit on several slots takes all of them or none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from local_redis import RedisServer
from local_redis_cluster import LocalCluster
from redis.exceptions import RedisClusterException
from test_redis_failover import Caller
from test_redis_quotas import (
    closed_port,
    noop,
    outcome,
    tagged,
    tasks_at_once,
    threads_at_once,
)

from callpolicy import QuotaExceeded, QuotaUnavailable, Registry
from callpolicy._model import Storage
from callpolicy._quotas.redis.connect import POOL_SIZE, POOL_WAIT, sync_client

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


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of this test's own, to lose a node of."""
    cluster = LocalCluster(tmp_path / "own")
    cluster.start()
    yield cluster
    cluster.stop()


def lose_a_node(
    registry_of: RegistryOf, cluster: LocalCluster
) -> tuple[Callable[[], None], Callable[[], None], RedisServer]:
    """Two quotas' calls, on distinct nodes, each admitted once; then the first one's node
    stopped: (call of the lost node, call of a kept node, the lost node)."""
    lost, kept = on_distinct_nodes(cluster, 2)
    toml = "".join(
        f'[quotas.{name}]\nlimit = "100/1min"\nstorage = "{cluster.url}"\n'
        f'[endpoints.{name}]\nquotas = ["{name}"]\n'
        for name in (lost, kept)
    )
    registry = registry_of(svc=toml)
    on_lost, on_kept = registry.policy(f"svc.{lost}")(noop), registry.policy(f"svc.{kept}")(noop)
    assert [outcome(on_lost), outcome(on_kept)] == ["ok", "ok"]
    node = cluster.nodes[cluster.owner(tagged(f"svc.{lost}", "a"))]
    node.stop()
    return on_lost, on_kept, node


def test_a_lost_node_fails_its_quotas_as_on_unavailable_says_until_it_is_back(
    registry_of: RegistryOf, own_cluster: LocalCluster
) -> None:
    """... and they count again once it is back, without a restart."""
    on_lost, on_kept, node = lose_a_node(registry_of, own_cluster)
    with pytest.raises(QuotaUnavailable) as down:
        on_lost()
    assert isinstance(down.value.__cause__, (redis.RedisError, RedisClusterException))
    node.start()  # the same port and nodes.conf: it takes its slots back
    deadline = time.monotonic() + 20
    while outcome(on_lost) != "ok":
        assert time.monotonic() < deadline, "the node's quota was not counted again in 20 s"
        time.sleep(0.2)
    assert outcome(on_kept) == "ok"


def test_quotas_on_other_nodes_go_on_counting_while_a_node_is_lost(
    registry_of: RegistryOf, own_cluster: LocalCluster
) -> None:
    on_lost, on_kept, _ = lose_a_node(registry_of, own_cluster)
    assert outcome(on_kept) == "ok"
    assert outcome(on_lost) == "unavailable"
    assert outcome(on_kept) == "ok"


def test_each_node_of_a_cluster_has_a_bounded_pool_that_waits_for_a_free_connection(
    cluster: LocalCluster,
) -> None:
    client = sync_client(Storage(cluster.url, timeout=0.5))
    try:
        pools = [node.redis_connection.connection_pool for node in client.get_nodes()]
    finally:
        client.close()
    assert len(pools) == 3
    for pool in pools:
        assert isinstance(pool, redis.BlockingConnectionPool)
        assert (pool.max_connections, pool.timeout) == (POOL_SIZE, POOL_WAIT)
        assert pool.connection_kwargs["socket_timeout"] == 0.5


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three masters and a replica of each, failing over 2 s after a master is lost."""
    cluster = LocalCluster(tmp_path / "replicated", replicas=True)
    cluster.start()
    yield cluster
    cluster.stop()


def test_a_cluster_failover_under_load_is_survived_without_restart(
    registry_of: RegistryOf, replicated_cluster: LocalCluster
) -> None:
    """A master dies: its quota fails closed until its replica takes the slots, then counts
    there; nothing is raised as is."""
    toml = f"""
    [quotas.q]
    limit = "100000/1min"
    storage = "{replicated_cluster.url}"
    max_wait = "0s"
    [endpoints.e]
    quotas = ["q"]
    """
    key = tagged("svc.q", "a")
    master = replicated_cluster.owner(key)
    replica = replicated_cluster.client(master + replicated_cluster.size)
    caller = Caller(registry_of(svc=toml).policy("svc.e")(noop))
    caller.start()
    try:
        time.sleep(0.5)
        killed = time.monotonic()
        replicated_cluster.nodes[master].stop()
        deadline = killed + 30
        while caller.streak_from(killed) is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        caller.stopping.set()
        caller.join()
    try:
        assert {found for _, found in caller.seen} <= {"ok", "unavailable"}
        recovered = caller.streak_from(killed)
        assert recovered is not None, "calls were not admitted again within 30 s"
        assert replica.info("replication")["role"] == "master"
        after = sum(1 for at, found in caller.seen if at >= recovered and found == "ok")
        assert int(replica.zcard(key)) >= after >= 20  # counted on the promoted replica
    finally:
        replica.close()
    failed = sum(1 for _, found in caller.seen if found != "ok")
    print(
        f"\ncluster master killed: {failed} calls unavailable; "
        f"admitted for good {recovered - killed:.2f} s after the kill"
    )
