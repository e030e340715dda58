"""Quotas beyond counting: all-or-none, weighted costs, slots, order and priority, pools."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import callpolicy
from callpolicy import FakeClock, QuotaExceeded, Registry, call_options, pool_key
from callpolicy._quotas.grant import Grant

RegistryOf = Callable[..., Registry]


def noop() -> None:
    return None


def identity(used: int) -> int:
    return used


def test_a_call_refused_by_one_quota_takes_nothing_from_the_others(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        svc="""
        [quotas.shared]
        limit = "2/1s"
        [quotas.slow]
        limit = "1/1m"
        max_wait = "0s"
        [endpoints.heavy]
        quotas = ["shared", "slow"]
        [endpoints.light]
        quotas = ["shared"]
        """
    )
    heavy = registry.policy("svc.heavy")(noop)
    light = registry.policy("svc.light")(noop)
    heavy()  # takes shared (1 of 2) and slow (1 of 1)
    with pytest.raises(QuotaExceeded) as refused:
        heavy()
    assert refused.value.quota == "svc.slow"
    light()  # the refused heavy call left shared's second slot free
    assert clock.sleeps == []


WEIGHTED = """
[quotas.tokens]
limit = "100/1m"
weighted = true
max_wait = "0s"
[quotas.requests]
limit = "50/1m"
[endpoints.messages]
quotas = ["tokens", "requests"]
"""


def test_weighted_quotas_take_the_calls_cost(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(anthropic=WEIGHTED)
    send = registry.policy("anthropic.messages", cost=len)(len)
    assert send("x" * 60) == 60
    with pytest.raises(QuotaExceeded) as refused:
        send("y" * 41)
    assert refused.value.quota == "anthropic.tokens"
    assert send("z" * 40) == 40


def test_the_real_cost_corrects_the_estimate_after_the_call(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(anthropic=WEIGHTED)
    send = registry.policy("anthropic.messages", cost=90, actual_cost=float)(identity)
    send(10)  # estimated 90, used 10
    send(10)  # fits only because the first call was corrected to 10 (10 + 90 <= 100)
    with pytest.raises(QuotaExceeded):
        send(10)  # 20 used + an estimate of 90 > 100


def test_call_options_set_the_cost_of_one_call(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(anthropic=WEIGHTED)
    send = registry.policy("anthropic.messages")(noop)
    with call_options(cost=100):
        send()
    with pytest.raises(QuotaExceeded):
        send()  # cost 1 by default, but the window is full


def test_a_cost_above_the_limit_fails_at_once(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(anthropic=WEIGHTED.replace('max_wait = "0s"', 'max_wait = "1h"'))
    send = registry.policy("anthropic.messages", cost=101)(noop)
    with pytest.raises(QuotaExceeded) as refused:
        send()
    assert refused.value.reason == "cost"
    assert clock.sleeps == []


def test_non_blocking_calls_never_wait(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(svc='[endpoints.e]\nquotas = ["1/1s"]\n')
    fn = registry.policy("svc.e")(noop)
    fn()
    with call_options(blocking=False), pytest.raises(QuotaExceeded) as refused:
        fn()
    assert refused.value.reason == "non-blocking"
    assert refused.value.wait == pytest.approx(1.02)
    fn()  # blocking again outside the block: waits the second
    assert clock.sleeps == [pytest.approx(1.02)]


def test_concurrency_limits_calls_in_flight_across_threads(registry_of: RegistryOf) -> None:
    registry = registry_of(
        svc='[quotas.slots]\nconcurrency = 3\n[endpoints.e]\nquotas = ["slots"]\n'
    )
    lock = threading.Lock()
    running, most = 0, 0

    @registry.policy("svc.e")
    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 3
    assert running == 0


async def test_concurrency_limits_tasks_and_frees_slots_of_failed_calls(
    registry_of: RegistryOf,
) -> None:
    registry = registry_of(
        svc='[quotas.slots]\nconcurrency = 2\n[endpoints.e]\nquotas = ["slots"]\n'
    )
    running, most = 0, 0

    @registry.policy("svc.e")
    async def work(fail: bool) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)
        running -= 1
        if fail:
            raise ValueError("boom")

    results = await asyncio.gather(*(work(n % 2 == 0) for n in range(10)), return_exceptions=True)
    assert most == 2
    assert sum(isinstance(r, ValueError) for r in results) == 5
    await asyncio.wait_for(work(False), 1.0)  # every slot came back


def _held_slot(registry: Registry) -> tuple[threading.Event, threading.Thread]:
    """Take the only slot of svc.e in a thread and hold it until the event is set; returns
    once the holder is inside the call, so the slot is taken."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(5)

    holder = threading.Thread(target=registry.policy("svc.e")(hold))
    holder.start()
    assert holding.wait(5), "the holder did not get the slot"
    return release, holder


def _waiting(registry: Registry, quota: str = "svc.slot") -> int:
    """How many calls wait for `quota` in the queue of svc.e's quotas."""
    admission = registry.runner("svc.e").admission
    assert admission is not None
    return admission.queue.waiting.get(quota, 0)


def _queued(registry: Registry, count: int) -> None:
    """Return once `count` calls wait for the slot (5 s at most)."""
    deadline = time.monotonic() + 5
    while _waiting(registry) < count:
        assert time.monotonic() < deadline, "waiters did not queue"
        time.sleep(0.001)


def test_waiters_are_served_in_order_and_by_priority(registry_of: RegistryOf) -> None:
    registry = registry_of(svc='[quotas.slot]\nconcurrency = 1\n[endpoints.e]\nquotas = ["slot"]\n')
    release, holder = _held_slot(registry)
    order: list[str] = []
    record = registry.policy("svc.e")(order.append)

    def waiter(name: str, priority: int) -> threading.Thread:
        def run() -> None:
            with call_options(priority=priority):
                record(name)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    threads = []
    for count, (name, priority) in enumerate(
        [("first", 0), ("second", 0), ("urgent", 5), ("third", 0)], start=1
    ):
        threads.append(waiter(name, priority))
        _queued(registry, count)
    release.set()
    for thread in [holder, *threads]:
        thread.join()
    assert order == ["urgent", "first", "second", "third"]


async def test_a_cancelled_waiter_takes_nothing(registry_of: RegistryOf) -> None:
    registry = registry_of(svc='[quotas.slot]\nconcurrency = 1\n[endpoints.e]\nquotas = ["slot"]\n')
    holding, gate = asyncio.Event(), asyncio.Event()

    @registry.policy("svc.e")
    async def hold() -> None:
        holding.set()
        await gate.wait()

    holder = asyncio.ensure_future(hold())
    await asyncio.wait_for(holding.wait(), 5)  # the holder has the slot
    waiter = asyncio.ensure_future(hold())
    deadline = time.monotonic() + 5
    while _waiting(registry) < 1:  # the waiter queued for the slot
        assert time.monotonic() < deadline, "the waiter did not queue"
        await asyncio.sleep(0.001)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert _waiting(registry) == 0
    gate.set()
    await holder
    assert registry._quotas.queue._tickets == []
    await asyncio.wait_for(hold(), 1.0)


POOL = """
[quotas.key_a]
limit = "1/10s"
[quotas.key_b]
limit = "1/20s"
[quotas.keys]
pool = ["key_a", "key_b"]
[endpoints.messages]
quotas = ["keys", "100/1s"]
"""


def test_a_pool_gives_each_call_the_first_key_that_admits_it(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(anthropic=POOL)

    @registry.policy("anthropic.messages")
    def send() -> tuple[str, float]:
        return pool_key("anthropic.keys"), clock.now()

    (first, at), (second, _), (third, later) = send(), send(), send()
    assert (first, second, third) == ("anthropic.key_a", "anthropic.key_b", "anthropic.key_a")
    assert later - at == pytest.approx(10.02)  # the soonest key to free up


def test_pool_key_outside_a_pool_call_says_so() -> None:
    with pytest.raises(LookupError, match=r"no key of pool 'anthropic\.keys'"):
        callpolicy.pool_key("anthropic.keys")


def test_unused_names_are_not_kept(registry_of: RegistryOf) -> None:
    assert isinstance(registry_of(svc="[endpoints.e]\n"), Registry)


def test_a_reload_that_changes_only_max_wait_keeps_what_was_counted(
    write_policies: Callable[..., Any], clock: FakeClock
) -> None:
    folder = write_policies(
        svc='[quotas.q]\nlimit = "2/10s"\nmax_wait = "0s"\n[endpoints.e]\nquotas = ["q"]\n'
    )
    registry = Registry(folder)
    fn = registry.policy("svc.e")(noop)
    fn()
    fn()
    (folder / "svc.toml").write_text(
        '[quotas.q]\nlimit = "2/10s"\nmax_wait = "1s"\n[endpoints.e]\nquotas = ["q"]\n'
    )
    registry.load()
    with pytest.raises(QuotaExceeded, match="more than its max_wait"):
        fn()


def test_a_non_blocking_call_does_not_queue_behind_waiting_calls(registry_of: RegistryOf) -> None:
    registry = registry_of(svc='[quotas.slot]\nconcurrency = 1\n[endpoints.e]\nquotas = ["slot"]\n')
    release, holder = _held_slot(registry)
    waiter = threading.Thread(target=registry.policy("svc.e")(noop))
    waiter.start()
    _queued(registry, 1)
    started = time.monotonic()
    with call_options(blocking=False), pytest.raises(QuotaExceeded) as refused:
        registry.policy("svc.e")(noop)()
    assert time.monotonic() - started < 0.5
    assert refused.value.reason == "non-blocking"
    release.set()
    holder.join()
    waiter.join()


def test_a_slot_freed_before_a_waiter_queues_is_not_missed(
    registry_of: RegistryOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_of(
        svc='[quotas.slot]\nconcurrency = 1\nmax_wait = "5s"\n[endpoints.e]\nquotas = ["slot"]\n'
    )
    release, holder = _held_slot(registry)
    admission = registry.runner("svc.e").admission
    assert admission is not None
    try_once = admission.try_once

    def refused_then_released(cost: float) -> Any:
        outcome = yield from try_once(cost)  # the try's steps, run by the caller's driver
        if not release.is_set():  # the holder ends between this refusal and the queueing
            assert not isinstance(outcome, Grant)  # the slot was held: refused
            release.set()
            holder.join()
        return outcome

    monkeypatch.setattr(admission, "try_once", refused_then_released)
    started = time.monotonic()
    registry.policy("svc.e")(noop)()
    assert time.monotonic() - started < 1.0  # not the 5 s max_wait


def test_an_invalid_actual_cost_keeps_the_estimate_and_the_result(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(anthropic=WEIGHTED)
    send = registry.policy("anthropic.messages", cost=50, actual_cost=lambda _: -500)(identity)
    assert send(7) == 7
    assert "actual_cost returned -500" in caplog.text
    send(7)
    with pytest.raises(QuotaExceeded):  # 50 + 50 counted: the negative cost freed nothing
        send(7)


@pytest.mark.parametrize(
    ("reason", "wait", "text"),
    [
        ("cost", float("inf"), "would admit this call never, the call's cost is above"),
        ("non-blocking", 2.0, "would admit this call in 2.000s, and the call may not wait"),
        ("max_wait", float("inf"), "did not admit this call within its max_wait (1.000s)"),
        ("deadline", 3.0, "in 3.000s, more than the time left before stop.deadline (1.000s)"),
    ],
)
def test_quota_exceeded_says_why_in_words(reason: str, wait: float, text: str) -> None:
    assert text in str(QuotaExceeded("svc.e", "svc.q", wait, 1.0, reason))
