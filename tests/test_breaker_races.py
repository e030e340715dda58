"""One breaker hammered by 100 threads and by 100 asyncio tasks: its counts stay exact, and
half-open lets exactly `probes` trial calls through however the calls race."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from callpolicy import Budget, CircuitOpen, FakeClock, Registry
from callpolicy._engine.breaker import CLOSED, HALF_OPEN, LocalBreaker
from callpolicy._engine.budget import LocalBudget

RegistryOf = Callable[..., Registry]
WORKERS = 100

POLICY = """
[breakers.api]
window = {window}
min_calls = {window}
failure_ratio = 1
open_for = "10s"
probes = 3

[endpoints.get]
breaker = "api"
retry.on_exceptions = ["ConnectionError"]
stop.attempts = 1
"""


def state_of(registry: Registry) -> LocalBreaker:
    circuit = registry.runner("svc.get").breaker
    assert circuit is not None
    breaker = circuit.breaker
    assert isinstance(breaker, LocalBreaker)
    return breaker


def call_or_refusal(fn: Callable[[], object]) -> str:
    try:
        fn()
    except CircuitOpen:
        return "refused"
    except ConnectionError:
        return "failed"
    return "ok"


def test_100_threads_counting_in_one_window_lose_no_outcome(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(window=10_000))
    flip = threading.local()

    def half_fail() -> str:
        flip.n = getattr(flip, "n", 0) + 1
        if flip.n % 2:
            raise ConnectionError("refused")
        return "ok"

    get = registry.policy("svc.get")(half_fail)
    barrier = threading.Barrier(WORKERS)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            call_or_refusal(get)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state_of(registry).counts() == (5000, 2500, 0)  # lock-free successes included
    assert state_of(registry).state == CLOSED


def open_it(registry: Registry, clock: FakeClock) -> None:
    def down() -> None:
        raise ConnectionError("refused")

    get = registry.policy("svc.get")(down)
    for _ in range(2):
        assert call_or_refusal(get) == "failed"
    assert call_or_refusal(get) == "refused"
    clock.advance(10.0)


def test_half_open_lets_exactly_probes_of_100_racing_threads_through(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(window=2))
    open_it(registry, clock)
    inside = threading.Semaphore(0)
    release = threading.Event()

    def trial() -> str:
        inside.release()
        release.wait(10)
        return "ok"

    get = registry.policy("svc.get")(trial)
    barrier = threading.Barrier(WORKERS)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        results.append(call_or_refusal(get))

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for _ in range(3):
        assert inside.acquire(timeout=10)
    while sum(r == "refused" for r in results) < WORKERS - 3:
        threading.Event().wait(0.001)  # the others are refused without waiting
    assert state_of(registry).state == HALF_OPEN
    release.set()
    for thread in threads:
        thread.join()
    assert sorted(results).count("ok") == 3
    assert results.count("refused") == WORKERS - 3
    assert state_of(registry).state == CLOSED


async def test_half_open_lets_exactly_probes_of_100_tasks_through(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(window=2))
    open_it(registry, clock)
    release = asyncio.Event()
    inside = 0

    async def trial() -> str:
        nonlocal inside
        inside += 1
        await release.wait()
        return "ok"

    get = registry.policy("svc.get")(trial)

    async def one() -> str:
        try:
            await get()
        except CircuitOpen:
            return "refused"
        return "ok"

    tasks = [asyncio.ensure_future(one()) for _ in range(WORKERS)]
    while sum(t.done() for t in tasks) < WORKERS - 3:
        await asyncio.sleep(0)
    assert inside == 3
    release.set()
    results = await asyncio.gather(*tasks)
    assert (results.count("ok"), results.count("refused")) == (3, WORKERS - 3)
    assert state_of(registry).state == CLOSED


async def test_a_cancelled_trial_task_gives_its_trial_call_back(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(window=2))
    open_it(registry, clock)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    get = registry.policy("svc.get")(hang)
    tasks = [asyncio.ensure_future(get()) for _ in range(3)]
    await started.wait()
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen):
        await get()
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    ok = registry.policy("svc.get")(_ok)
    assert await ok() == "ok"  # the cancelled task's trial call went to this one
    for task in tasks[1:]:
        task.cancel()
    await asyncio.gather(*tasks[1:], return_exceptions=True)


async def _ok() -> str:
    return "ok"


def test_100_threads_taking_and_giving_back_budget_tokens_lose_none() -> None:
    budget = LocalBudget(Budget("b", max_tokens=1000, token_ratio=0.25))
    barrier = threading.Barrier(WORKERS)

    def worker() -> None:
        barrier.wait()
        for _ in range(4):
            budget.failed()  # 400 in all: never down to 0, no floor hides a lost update
            budget.succeeded()  # 100 in all: never up to the top

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.left == 1000 - 400 + 100
