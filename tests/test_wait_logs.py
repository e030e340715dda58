"""Every quota wait is said once and truthfully: its real length and what it waited for,
in memory and in Redis, for a timed wait, a wait for a call in flight to end, and a wait
for the calls queued ahead."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from callpolicy import QuotaExceeded, Registry, SleepEvent, add_sleep_hook, call_options

if TYPE_CHECKING:
    from local_redis import RedisServer

RegistryOf = Callable[..., Registry]


@pytest.fixture
def events() -> Iterator[list[SleepEvent]]:
    seen: list[SleepEvent] = []
    remove = add_sleep_hook(seen.append)
    yield seen
    remove()


def done() -> str:
    return "done"


def _hold_a_slot_while(registry: Registry, seconds: float, other: Callable[[], object]) -> None:
    """One thread holds the only slot for `seconds`; `other` is called meanwhile."""
    entered = threading.Event()

    @registry.policy("api.get")
    def hold() -> None:
        entered.set()
        time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    try:
        other()
    finally:
        holder.join()


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_wait_for_a_slot_is_said_once_when_over_with_its_real_length(
    where: str,
    registry_of: RegistryOf,
    events: list[SleepEvent],
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    storage = ""
    if where == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        storage = f'\nstorage = "{server.url}"'
    registry = registry_of(
        api=f"""
        [quotas.slots]
        concurrency = 1{storage}
        [endpoints.get]
        quotas = ["slots"]
        """
    )
    waiter = registry.policy("api.get")(done)
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        _hold_a_slot_while(registry, 0.3, waiter)
    [event] = events  # once, not at every look (Redis is polled every 20 ms)
    assert (event.source, event.trigger, event.quota) == ("quota", "slot", "api.slots")
    assert 0.1 < event.seconds < 5  # the real length: the holder's 0.3 s, less its start
    [line] = [r.getMessage() for r in caplog.records]
    assert line == (
        f"api.get: attempt 1 of 3 waited {event.seconds:.3f}s for quota api.slots "
        "(1 in flight) until a call in flight ended (quota)"
    )


def test_a_call_queued_behind_a_waiting_call_says_its_wait_once(
    registry_of: RegistryOf, events: list[SleepEvent]
) -> None:
    registry = registry_of(
        api="""
        [quotas.slots]
        concurrency = 1
        [endpoints.get]
        quotas = ["slots"]
        """
    )
    fetch = registry.policy("api.get")(done)

    def two_waiters() -> None:
        waiters = [threading.Thread(target=fetch) for _ in range(2)]
        for waiter in waiters:
            waiter.start()
            time.sleep(0.05)  # the second queues behind the first
        for waiter in waiters:
            waiter.join()

    _hold_a_slot_while(registry, 0.3, two_waiters)
    assert len(events) == 2
    assert all(e.trigger in ("slot", "turn") and e.seconds > 0.1 for e in events)


def test_a_timed_quota_wait_is_said_once_when_over_with_its_length(
    registry_of: RegistryOf, events: list[SleepEvent], caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(
        api="""
        [quotas.paced]
        limit = "20/1s"
        algorithm = "leaky-bucket"
        guard = "0s"
        [endpoints.get]
        quotas = ["paced"]
        """
    )
    fetch = registry.policy("api.get")(done)
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        fetch()
        fetch()
    [event] = events
    assert (event.trigger, event.quota) == ("quota", "api.paced")
    assert 0.03 < event.seconds < 5  # the real length: about 50 ms, however long it took
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("api.get: attempt 1 of 3 waited 0.0")
    assert line.endswith("s for quota api.paced (20/1s) (quota)")


def test_a_wait_that_gives_up_says_so(
    registry_of: RegistryOf, events: list[SleepEvent], caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(
        api="""
        [quotas.slots]
        concurrency = 1
        max_wait = "200ms"
        [endpoints.get]
        quotas = ["slots"]
        """
    )
    waiter = registry.policy("api.get")(done)
    outcomes: list[str] = []

    def wait_and_give_up() -> None:
        try:
            waiter()
        except QuotaExceeded as refused:
            outcomes.append(refused.reason)

    with caplog.at_level(logging.INFO, logger="callpolicy"):
        _hold_a_slot_while(registry, 0.6, wait_and_give_up)
    assert outcomes == ["max_wait"]
    [event] = events
    assert event.gave_up
    [line] = [r.getMessage() for r in caplog.records]
    assert line.endswith("for quota api.slots (1 in flight), then gave up (quota)")


def test_a_cost_that_is_not_a_finite_number_is_refused_at_once() -> None:
    for cost in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="finite number >= 0"):
            call_options(cost=cost).__enter__()
