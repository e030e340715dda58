"""Counters a user can read for each quota (`Registry.quota_counters()`): attempts admitted,
refused, waited (and seconds waited), failed open, failed closed and admitted by
`local_limit`, per process, in memory and in Redis, sync and async."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from test_redis_quotas import noop, outcome

import callpolicy
from callpolicy import (
    FakeClock,
    QuotaCounters,
    QuotaExceeded,
    Registry,
    call_options,
)

if TYPE_CHECKING:
    from local_redis import RedisServer

RegistryOf = Callable[..., Registry]


def counts(registry: Registry, name: str = "svc.q") -> QuotaCounters:
    return registry.quota_counters()[name]


async def anoop() -> None:
    return None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


RATE = """
[quotas.q]
limit = "2/10s"
max_wait = "0s"
{extra}
[quotas.unused]
limit = "5/1s"
[endpoints.e]
quotas = ["q"]
[endpoints.other]
quotas = ["unused"]
"""


# -- in memory --------------------------------------------------------------------------------


def test_admitted_and_refused_are_counted_per_quota_and_unused_quotas_read_zero(
    registry_of: RegistryOf,
) -> None:
    registry = registry_of(svc=RATE.format(extra=""))
    call = registry.policy("svc.e")(noop)
    assert [outcome(call) for _ in range(3)] == ["ok", "ok", "refused"]
    assert registry.quota_counters() == {
        "svc.q": QuotaCounters(admitted=2, refused=1),
        "svc.unused": QuotaCounters(),
    }


async def test_async_calls_are_counted_alike(registry_of: RegistryOf) -> None:
    registry = registry_of(svc=RATE.format(extra=""))
    call = registry.policy("svc.e")(anoop)
    await call()
    await call()
    with pytest.raises(QuotaExceeded):
        await call()
    assert counts(registry) == QuotaCounters(admitted=2, refused=1)


def test_a_wait_is_counted_with_its_length_and_a_cost_too_large_as_a_refusal(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        svc="""
        [quotas.q]
        limit = "10/1s"
        weighted = true
        max_wait = "5s"
        [endpoints.e]
        quotas = ["q"]
        """
    )
    call = registry.policy("svc.e", cost=6)(noop)
    call()
    call()  # waits for the first call's 6 to leave the window: 1 s and the 20 ms guard
    with call_options(cost=11), pytest.raises(QuotaExceeded) as refused:
        call()
    assert refused.value.reason == "cost"
    got = counts(registry)
    assert (got.admitted, got.refused, got.waited) == (2, 1, 1)
    assert got.waited_seconds == pytest.approx(1.02)


def test_a_slot_wait_that_gives_up_counts_as_waited_and_refused(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        svc="""
        [quotas.q]
        concurrency = 1
        max_wait = "2s"
        [endpoints.outer]
        quotas = ["q"]
        [endpoints.inner]
        quotas = ["q"]
        """
    )
    inner = registry.policy("svc.inner")(noop)

    @registry.policy("svc.outer")
    def outer() -> str:
        return outcome(inner)

    assert outer() == "refused"  # the only slot is the outer call's
    got = counts(registry)
    assert (got.admitted, got.refused, got.waited) == (1, 1, 1)


def test_a_pools_members_are_counted_each_by_its_name(registry_of: RegistryOf) -> None:
    registry = registry_of(
        svc="""
        [quotas.key_a]
        limit = "1/10s"
        max_wait = "0s"
        [quotas.key_b]
        limit = "1/10s"
        max_wait = "0s"
        [quotas.keys]
        pool = ["key_a", "key_b"]
        [endpoints.e]
        quotas = ["keys"]
        """
    )
    call = registry.policy("svc.e")(noop)
    assert [outcome(call) for _ in range(3)] == ["ok", "ok", "refused"]
    got = registry.quota_counters()
    assert set(got) == {"svc.key_a", "svc.key_b"}
    assert (got["svc.key_a"].admitted, got["svc.key_b"].admitted) == (1, 1)
    assert got["svc.key_a"].refused + got["svc.key_b"].refused == 1


def test_admissions_from_many_threads_are_all_counted(registry_of: RegistryOf) -> None:
    registry = registry_of(svc='[quotas.q]\nlimit = "1000000/1s"\n[endpoints.e]\nquotas = ["q"]\n')
    call = registry.policy("svc.e")(noop)

    def many() -> None:
        for _ in range(2000):
            call()

    threads = [threading.Thread(target=many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts(registry).admitted == 8000


def test_counts_outlive_a_reload_and_a_forked_child_starts_from_zero(
    registry_of: RegistryOf,
) -> None:
    registry = registry_of(svc=RATE.format(extra=""))
    call = registry.policy("svc.e")(noop)
    call()
    registry.load()
    call()
    assert counts(registry).admitted == 2
    registry._quotas.counters.after_fork()  # as in a child forked now
    assert counts(registry) == QuotaCounters()
    assert outcome(call) == "refused"  # the quota's own count is the parent's at the fork
    assert counts(registry) == QuotaCounters(refused=1)


def test_the_default_registrys_counters(
    default_registry: Registry, write_policies: Callable[..., object]
) -> None:
    callpolicy.load(write_policies(svc=RATE.format(extra="")))  # type: ignore[arg-type]
    callpolicy.policy("svc.e")(noop)()
    assert callpolicy.quota_counters()["svc.q"] == QuotaCounters(admitted=1)


# -- in Redis ---------------------------------------------------------------------------------


def redis_toml(url: str, mode: str) -> str:
    local = 'local_limit = "1/10s"' if mode == "local" else ""
    return RATE.format(extra=f'storage = "{url}?timeout=100ms"\non_unavailable = "{mode}"\n{local}')


def test_redis_admissions_and_refusals_are_counted(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = registry_of(svc=redis_toml(redis_server.url, "fail-closed"))
    call = registry.policy("svc.e")(noop)
    assert [outcome(call) for _ in range(3)] == ["ok", "ok", "refused"]
    assert counts(registry) == QuotaCounters(admitted=2, refused=1)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_fail_closed_with_redis_stopped_counts_failed_closed_not_refused(
    flavour: str, registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = registry_of(svc=redis_toml(redis_server.url, "fail-closed"))
    call = registry.policy("svc.e")(noop if flavour == "sync" else anoop)

    def once() -> object:
        return call() if flavour == "sync" else asyncio.run(call())  # type: ignore[arg-type]

    assert outcome(once) == "ok"
    redis_server.stop()
    assert [outcome(once) for _ in range(2)] == ["unavailable"] * 2
    assert counts(registry) == QuotaCounters(admitted=1, failed_closed=2)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_fail_open_counts_each_admission_without_redis(
    flavour: str, registry_of: RegistryOf
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    registry = registry_of(svc=redis_toml(url, "fail-open"))
    call = registry.policy("svc.e")(noop if flavour == "sync" else anoop)

    def once() -> object:
        return call() if flavour == "sync" else asyncio.run(call())  # type: ignore[arg-type]

    assert [outcome(once) for _ in range(3)] == ["ok"] * 3  # past the limit: uncounted
    assert counts(registry) == QuotaCounters(admitted=3, failed_open=3)


def test_local_fallback_counts_its_admissions_and_refusals_under_the_quotas_name(
    registry_of: RegistryOf,
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    registry = registry_of(svc=redis_toml(url, "local"))
    call = registry.policy("svc.e")(noop)
    assert [outcome(call) for _ in range(2)] == ["ok", "refused"]  # local_limit "1/10s"
    assert counts(registry) == QuotaCounters(admitted=1, refused=1, local=1)


def test_a_call_out_of_time_for_a_slot_is_refused_by_that_quota_alone(
    registry_of: RegistryOf,
) -> None:
    """Waiting for one quota's slot, the others had admitted it: only the slot's quota
    refused (and the error names it alone)."""
    registry = registry_of(
        svc='[quotas.rate]\nlimit = "1000/1s"\n'
        '[quotas.slots]\nconcurrency = 1\nmax_wait = "300ms"\n'
        '[endpoints.e]\nquotas = ["rate", "slots"]\n'
    )
    holding, release = threading.Event(), threading.Event()

    @registry.policy("svc.e")
    def hold() -> None:
        holding.set()
        release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(QuotaExceeded) as refused:
            registry.policy("svc.e")(noop)()
    finally:
        release.set()
        holder.join()
    assert refused.value.quota == "svc.slots"
    assert counts(registry, "svc.slots").refused == 1
    assert counts(registry, "svc.rate").refused == 0
