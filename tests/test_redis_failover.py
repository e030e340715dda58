"""Redis that fails: a Sentinel group failing over under load, a primary demoted to a replica,
wrong passwords, a full server. Every error does what `on_unavailable` says (fail-closed:
QuotaUnavailable from the original error), never raised as is, and calls are counted again
as soon as a primary takes them, without a restart."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from local_redis import RedisServer
from test_redis_quotas import noop, outcome, tagged

from callpolicy import QuotaUnavailable, Registry
from callpolicy._model import Storage
from callpolicy._quotas.redis.connect import POOL_SIZE, POOL_WAIT, sync_client

if TYPE_CHECKING:
    from local_redis_cluster import SentinelGroup

RegistryOf = Callable[..., Registry]
KEY = tagged("svc.q", "a")


def policy_file(url: str, mode: str = "fail-closed", limit: str = "100000/1min") -> str:
    local = '\nlocal_limit = "2/1min"' if mode == "local" else ""
    return f"""
    [quotas.q]
    limit = "{limit}"
    storage = "{url}"
    max_wait = "0s"
    on_unavailable = "{mode}"{local}
    [endpoints.e]
    quotas = ["q"]
    """


def on(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True, socket_timeout=5)


def entries(port: int) -> int:
    client = on(port)
    try:
        return int(client.zcard(KEY))
    finally:
        client.close()


# -- Sentinel ----------------------------------------------------------------------------------


def test_a_sentinel_url_counts_on_the_primary_sync_and_async(
    registry_of: RegistryOf, sentinel_group: SentinelGroup
) -> None:
    policy = registry_of(svc=policy_file(sentinel_group.url, limit="3/1min")).policy("svc.e")
    call = policy(noop)

    async def one() -> None:
        await asyncio.sleep(0)

    async def twice() -> list[str]:
        async_call = policy(one)
        found = []
        for _ in range(2):
            try:
                await async_call()
                found.append("ok")
            except QuotaUnavailable:
                found.append("unavailable")
            except Exception:
                found.append("refused")
        return found

    assert [outcome(call), outcome(call)] == ["ok", "ok"]
    assert asyncio.run(twice()) == ["ok", "refused"]
    assert entries(sentinel_group.primary()) == 3


class Caller(threading.Thread):
    """Calls `call` every 10 ms until stopped, recording (time, outcome); an exception that
    is neither "refused" nor "unavailable" is recorded by its type."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.seen: list[tuple[float, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                found = outcome(self.call)
            except BaseException as error:  # a raw error escaped: the test fails on it
                found = f"raised {type(error).__name__}: {error}"
            self.seen.append((time.monotonic(), found))
            time.sleep(0.01)

    def streak_from(self, since: float) -> float | None:
        """When the calls after `since` became "ok" for good (None: not yet)."""
        after = [(at, found) for at, found in self.seen if at >= since]
        failed = [at for at, found in after if found != "ok"]
        oks = [at for at, found in after if found == "ok" and (not failed or at > failed[-1])]
        return oks[0] if len(oks) >= 20 else None


@pytest.mark.parametrize("is_async", [False, True])
def test_a_sentinel_failover_under_load_is_survived_without_restart(
    registry_of: RegistryOf, sentinel_group: SentinelGroup, is_async: bool
) -> None:
    policy = registry_of(svc=policy_file(sentinel_group.url)).policy("svc.e")
    if is_async:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()

        async def one() -> None:
            await asyncio.sleep(0)

        async_call = policy(one)

        def call() -> None:
            asyncio.run_coroutine_threadsafe(async_call(), loop).result(timeout=30)

    else:
        call = policy(noop)
    caller = Caller(call)
    caller.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        new_primary = sentinel_group.failover()
        demoted = sentinel_group.demoted_at
        deadline = time.monotonic() + 15
        while caller.streak_from(demoted) is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        caller.stopping.set()
        caller.join()
        if is_async:
            loop.call_soon_threadsafe(loop.stop)
    outcomes = {found for _, found in caller.seen}
    assert outcomes <= {"ok", "unavailable"}, outcomes
    recovered = caller.streak_from(demoted)
    assert recovered is not None, "calls were not admitted again within 15 s of the failover"
    assert recovered - demoted < 5
    # Once the old primary is a replica, every admission is counted on the new one.
    after = sum(1 for at, found in caller.seen if at > demoted and found == "ok")
    assert entries(new_primary) >= after >= 20
    failed = [at for at, found in caller.seen if found != "ok"]
    print(
        f"\nfailover: replica promoted {sentinel_group.promoted_at - started:.2f} s after "
        f"SENTINEL FAILOVER, old primary demoted at {demoted - started:.2f} s; "
        f"{len(failed)} calls unavailable; admitted on the new primary for good "
        f"{recovered - demoted:.2f} s after the demotion"
    )


def test_a_killed_sentinel_primary_is_replaced_without_restart(
    registry_of: RegistryOf, sentinel_group: SentinelGroup
) -> None:
    """The primary's process dies: calls fail as on_unavailable says (fail-closed) until the
    sentinels promote the replica (down-after-milliseconds 1000), then count there."""
    caller = Caller(registry_of(svc=policy_file(sentinel_group.url)).policy("svc.e")(noop))
    caller.start()
    try:
        time.sleep(0.5)
        killed = time.monotonic()
        new_primary = sentinel_group.kill_primary()
        deadline = time.monotonic() + 15
        while caller.streak_from(killed) is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        caller.stopping.set()
        caller.join()
    assert {found for _, found in caller.seen} <= {"ok", "unavailable"}
    recovered = caller.streak_from(killed)
    assert recovered is not None, "calls were not admitted again within 15 s of the promotion"
    after = sum(1 for at, found in caller.seen if at >= recovered and found == "ok")
    assert entries(new_primary) >= after >= 20
    failed = sum(1 for at, found in caller.seen if found != "ok")
    print(
        f"\nprimary killed: replica promoted {sentinel_group.promoted_at - killed:.2f} s later; "
        f"{failed} calls unavailable; admitted for good {recovered - killed:.2f} s after the kill"
    )


# -- a primary demoted to a replica, through a plain URL ----------------------------------------


@pytest.fixture
def other_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "other")
    server.start()
    yield server
    server.stop()


def clients_besides(port: int, probe: redis.Redis) -> int:
    """The normal clients connected to the server on `port`, but `probe`."""
    own = probe.client_id()
    return sum(1 for c in probe.client_list(_type="normal") if int(c["id"]) != own)


@pytest.mark.parametrize("mode", ["fail-closed", "fail-open", "local"])
def test_a_demoted_primary_fails_as_on_unavailable_says_and_recovers_when_primary_again(
    registry_of: RegistryOf,
    redis_server: RedisServer,
    other_server: RedisServer,
    mode: str,
) -> None:
    call = registry_of(svc=policy_file(redis_server.url, mode)).policy("svc.e")(noop)
    assert outcome(call) == "ok"
    probe = on(redis_server.port)
    try:
        assert clients_besides(redis_server.port, probe) >= 1  # the quota's connection
        probe.replicaof("127.0.0.1", other_server.port)
        if mode == "fail-closed":
            with pytest.raises(QuotaUnavailable) as down:
                call()
            assert isinstance(down.value.__cause__, redis.exceptions.ReadOnlyError)
        else:
            # fail-open admits; local takes local_limit's 2 calls in this process, then refuses
            assert [outcome(call), outcome(call), outcome(call)] == (
                ["ok", "ok", "ok"] if mode == "fail-open" else ["ok", "ok", "refused"]
            )
        # The connections to the demoted primary were dropped: the next call connects again.
        assert clients_besides(redis_server.port, probe) == 0
        probe.replicaof("NO", "ONE")
        before = entries(redis_server.port)
        assert outcome(call) == "ok"
        assert entries(redis_server.port) == before + 1
    finally:
        probe.close()


# -- auth, and every other error ----------------------------------------------------------


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "guarded", ("--requirepass", "right-pass-123"))
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("password", ["", "wrong-pass-456"])
def test_a_wrong_or_missing_password_fails_closed_without_showing_it(
    registry_of: RegistryOf,
    guarded_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    password: str,
) -> None:
    credentials = f":{password}@" if password else ""
    url = f"redis://{credentials}127.0.0.1:{guarded_server.port}/0"
    call = registry_of(svc=policy_file(url)).policy("svc.e")(noop)
    with (
        caplog.at_level(logging.WARNING, logger="callpolicy"),
        pytest.raises(QuotaUnavailable) as down,
    ):
        call()
    assert isinstance(down.value.__cause__, redis.exceptions.AuthenticationError)
    if password:
        assert password not in str(down.value)
        assert password not in caplog.text
        assert password not in repr(down.value)
    right = f"redis://:right-pass-123@127.0.0.1:{guarded_server.port}/0"
    assert outcome(registry_of(svc=policy_file(right)).policy("svc.e")(noop)) == "ok"


ERRORS = [
    redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
    redis.exceptions.MovedError("2543 127.0.0.1:7001"),
    redis.exceptions.AskError("2543 127.0.0.1:7001"),
    redis.exceptions.ClusterDownError("The cluster is down"),
    redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot"),
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    redis.exceptions.ResponseError("BUSY Redis is busy running a script."),
    redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
    redis.exceptions.AuthenticationError("invalid username-password pair"),
    redis.exceptions.NoPermissionError("this user has no permissions to run 'evalsha'"),
    redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
    redis.exceptions.NoScriptError("No matching script."),
    redis.exceptions.ResponseError("Error running script: @user_script:12: attempt to index"),
    redis.exceptions.SlotNotCoveredError("Slot 2543 is not covered by the cluster."),
    redis.exceptions.RedisClusterException("Redis Cluster cannot be connected."),
    redis.exceptions.RedisError("something new"),
]


class Failing:
    """Stands in for a storage's scripts: every call raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getitem__(self, lone: bool) -> Callable[..., object]:
        def run(**_: object) -> object:
            raise self.error

        return run


@pytest.mark.parametrize("error", ERRORS, ids=[type(e).__name__ for e in ERRORS])
@pytest.mark.parametrize("mode", ["fail-closed", "fail-open", "local"])
def test_every_redis_error_does_what_on_unavailable_says(
    registry_of: RegistryOf, redis_server: RedisServer, error: Exception, mode: str
) -> None:
    registry = registry_of(svc=policy_file(redis_server.url, mode))
    call = registry.policy("svc.e")(noop)
    assert outcome(call) == "ok"  # the storage is made
    assert registry._quotas._redis
    for storage in registry._quotas._redis.values():
        storage.scripts = Failing(error)  # type: ignore[attr-defined]
    if mode == "fail-closed":
        with pytest.raises(QuotaUnavailable) as down:
            call()
        assert down.value.__cause__ is error
        assert str(error) in str(down.value)
    elif mode == "fail-open":
        assert [outcome(call) for _ in range(3)] == ["ok", "ok", "ok"]
    else:
        assert [outcome(call) for _ in range(3)] == ["ok", "ok", "refused"]


def test_a_sentinel_primary_has_a_bounded_pool_that_waits_for_a_free_connection() -> None:
    """Made without asking the sentinels (they are asked on the first call)."""
    client = sync_client(Storage("redis+sentinel://127.0.0.1:1/primary/2", timeout=0.5))
    pool = client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (POOL_SIZE, POOL_WAIT)
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["socket_timeout"]) == (2, 0.5)
    assert getattr(pool, "service_name", None) == "primary"
