"""Quotas: calls per period, shared by name, taken by every attempt, bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from callpolicy import FakeClock, QuotaExceeded, Registry, RetryExhausted

RegistryOf = Callable[..., Registry]

SHARED = """
[quotas.app]
limit = "3/1s"
max_wait = "10s"

[endpoints.tracks]
quotas = ["app"]

[endpoints.albums]
quotas = ["app"]
"""


def test_calls_beyond_the_quota_wait_for_the_next_window(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(spotify=SHARED)
    times: list[float] = []

    def record() -> None:
        times.append(clock.now())

    fn = registry.policy("spotify.tracks")(record)
    for _ in range(7):
        fn()
    start = times[0]
    offsets = [round(t - start, 6) for t in times]
    # A sliding window counts each call 20 ms past its period (the default guard).
    assert offsets == [0.0, 0.0, 0.0, 1.02, 1.02, 1.02, 2.04]


def test_a_named_quota_is_shared_by_every_endpoint_listing_it(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(spotify=SHARED)
    tracks = registry.policy("spotify.tracks")(clock.now)
    albums = registry.policy("spotify.albums")(clock.now)
    start = tracks()
    assert [albums(), tracks(), albums()] == [start, start, pytest.approx(start + 1.02)]


def test_a_quota_of_another_file_is_shared_too(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(
        shared='[quotas.pool]\nlimit = "1/1s"\n',
        a='[endpoints.x]\nquotas = ["shared.pool"]\n',
        b='[endpoints.y]\nquotas = ["shared.pool"]\n',
    )
    x = registry.policy("a.x")(clock.now)
    y = registry.policy("b.y")(clock.now)
    first = x()
    assert y() - first == pytest.approx(1.02)


def test_inline_quotas_belong_to_their_endpoint(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(
        api="""
        [defaults]
        quotas = ["1/1s"]
        [endpoints.a]
        [endpoints.b]
        """
    )
    a = registry.policy("api.a")(clock.now)
    b = registry.policy("api.b")(clock.now)
    assert a() == b()
    assert [q.name for q in registry.quotas()] == ["api.a[1/1s]", "api.b[1/1s]"]


def test_every_retry_attempt_takes_quota(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        quotas = ["2/1s"]
        retry.on_exceptions = ["ConnectionError"]
        wait.strategy = "none"
        stop.attempts = 3
        """
    )
    outcomes: Iterator[Exception | str] = iter([ConnectionError(), ConnectionError(), "ok"])

    def call() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert registry.policy("api.get")(call)() == "ok"
    # Two attempts fill the window; the third waits for the next one.
    assert clock.sleeps == [0.0, 0.0, pytest.approx(1.02)]


def test_a_wait_longer_than_max_wait_raises_quota_exceeded_and_calls_nothing(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api='[quotas.q]\nlimit = "1/1m"\nmax_wait = "5s"\n[endpoints.get]\nquotas = ["q"]\n'
    )
    calls: list[int] = []

    def call() -> None:
        calls.append(1)

    fn = registry.policy("api.get")(call)
    fn()
    with pytest.raises(QuotaExceeded) as raised:
        fn()
    assert calls == [1]
    assert raised.value.quota == "api.q"
    assert raised.value.wait == pytest.approx(60.02)
    assert raised.value.max_wait == 5.0
    assert "api.get: quota api.q would admit this call in 60.020s" in str(raised.value)
    assert clock.sleeps == []


def test_a_quota_wait_past_the_deadline_fails_fast(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api="""
        [quotas.q]
        limit = "1/30s"
        max_wait = "1m"
        [endpoints.get]
        quotas = ["q"]
        stop.deadline = "10s"
        """
    )
    fn = registry.policy("api.get")(noop)
    fn()
    with pytest.raises(QuotaExceeded, match=r"more than the time left before stop.deadline") as e:
        fn()
    assert e.value.reason == "deadline"
    assert clock.sleeps == []


RETRY_UNDER_QUOTA = """
[quotas.q]
limit = "2/10s"
max_wait = "{max_wait}"
[endpoints.get]
quotas = ["q"]
retry.on_exceptions = ["ConnectionError"]
retry.until = {{ field = "done", equals = true }}
wait = {{ strategy = "fixed", seconds = "1s" }}
stop = {{ attempts = 5, deadline = "5s" }}
"""


def test_a_retry_finding_no_quota_before_the_deadline_raises_the_last_error(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(api=RETRY_UNDER_QUOTA.format(max_wait="1m"))
    errors = [ConnectionError("first"), ConnectionError("second"), ConnectionError("third")]
    with pytest.raises(ConnectionError) as raised:
        registry.policy("api.get")(Raiser(errors))()
    assert raised.value is errors[1]
    assert isinstance(raised.value.__context__, QuotaExceeded)


def test_a_retry_refused_by_max_wait_chains_the_last_error(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(api=RETRY_UNDER_QUOTA.format(max_wait="2s"))
    errors = [ConnectionError("first"), ConnectionError("second")]
    with pytest.raises(QuotaExceeded) as raised:
        registry.policy("api.get")(Raiser(errors))()
    assert raised.value.reason == "max_wait"
    assert raised.value.__cause__ is errors[1]


def test_a_poll_refused_quota_raises_retry_exhausted_with_the_last_result(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(api=RETRY_UNDER_QUOTA.format(max_wait="2s"))
    results = iter([{"done": False, "n": 1}, {"done": False, "n": 2}])
    with pytest.raises(RetryExhausted) as raised:
        registry.policy("api.get")(lambda: next(results))()
    assert raised.value.last_result == {"done": False, "n": 2}
    assert raised.value.attempts == 2
    assert isinstance(raised.value.__cause__, QuotaExceeded)


class Raiser:
    def __init__(self, errors: Sequence[Exception]) -> None:
        self.errors = iter(errors)

    def __call__(self) -> None:
        raise next(self.errors)


def test_reloading_keeps_the_state_of_unchanged_quotas(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(spotify=SHARED)
    fn = registry.policy("spotify.tracks")(clock.now)
    start = fn()
    fn()
    fn()
    registry.load()
    assert fn() == pytest.approx(start + 1.02)


async def test_async_calls_wait_for_quota_with_the_async_sleep(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(spotify=SHARED)

    @registry.policy("spotify.tracks")
    async def fetch() -> float:
        return clock.now()

    times = [await fetch() for _ in range(4)]
    assert times[3] - times[0] == pytest.approx(1.02)
    assert clock.sleeps == [pytest.approx(1.02)]


async def test_an_async_quota_wait_does_not_block_the_event_loop(
    registry_of: RegistryOf,
) -> None:
    registry = registry_of(api='[endpoints.get]\nquotas = ["1/30ms"]\n')
    ticks = 0

    @registry.policy("api.get")
    async def call() -> None:
        return None

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    await call()
    tick_task = asyncio.ensure_future(ticker())
    started = time.monotonic()
    await call()  # waits ~30 ms for the next window
    tick_task.cancel()
    assert time.monotonic() - started >= 0.02
    assert ticks > 1


def noop() -> None:
    return None
