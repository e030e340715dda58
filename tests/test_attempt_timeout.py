"""Attempt timeouts (`stop.attempt_timeout`) and the deadline a call propagates
(`callpolicy.time_left()`). A hanging coroutine is cut by a short real timeout; nothing
asserts how long anything took."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import callpolicy
from callpolicy import AttemptTimeout, FakeClock, Registry

RegistryOf = Callable[..., Registry]

POLICIES = """
[endpoints.timed]
retry.on_exceptions = ["TimeoutError"]
wait = { strategy = "fixed", seconds = "1s" }
stop = { attempts = 3, attempt_timeout = "50ms" }

[endpoints.not_retried]
stop.attempt_timeout = "50ms"

[endpoints.short_deadline]
retry.on_exceptions = ["TimeoutError"]
stop = { attempts = 3, attempt_timeout = "10s", deadline = "50ms" }

[endpoints.deadline]
retry.on_exceptions = ["ConnectionError"]
wait = { strategy = "fixed", seconds = "1s" }
stop = { attempts = 3, deadline = "30s" }

[endpoints.attempt]
stop = { attempt_timeout = "5s", deadline = "30s" }

[endpoints.long_attempt]
stop.attempt_timeout = "20s"

[endpoints.plain]
retry.on_exceptions = ["ConnectionError"]
"""


@pytest.fixture
def api(registry_of: RegistryOf) -> Registry:
    return registry_of(api=POLICIES)


async def hang() -> None:
    await asyncio.Event().wait()


def hanging_then(
    result: Any, hangs: int
) -> tuple[Callable[[], Coroutine[Any, Any, Any]], list[int]]:
    calls: list[int] = []

    async def fn() -> Any:
        calls.append(1)
        if len(calls) <= hangs:
            await hang()
        return result

    return fn, calls


# -- attempt timeouts on coroutines ---------------------------------------------------------------
async def test_a_hanging_attempt_is_cancelled_and_retried(api: Registry, clock: FakeClock) -> None:
    fn, calls = hanging_then("ok", hangs=2)
    assert await api.policy("api.timed")(fn)() == "ok"
    assert len(calls) == 3
    assert clock.sleeps == [1.0, 1.0]


async def test_the_last_attempt_timeout_is_raised_as_attempt_timeout(
    api: Registry, clock: FakeClock
) -> None:
    fn, calls = hanging_then("ok", hangs=5)
    with pytest.raises(AttemptTimeout) as raised:
        await api.policy("api.timed")(fn)()
    assert len(calls) == 3
    error = raised.value
    assert isinstance(error, TimeoutError)
    assert str(error) == ("api.timed: the attempt did not end within 0.050s (stop.attempt_timeout)")
    assert (error.policy, error.by_deadline) == ("api.timed", False)
    assert error.seconds == pytest.approx(0.05)
    assert isinstance(error.__cause__, TimeoutError)  # asyncio's, from the cancellation


async def test_a_timeout_the_policy_does_not_retry_ends_the_call(
    api: Registry, clock: FakeClock
) -> None:
    fn, calls = hanging_then("ok", hangs=5)
    with pytest.raises(AttemptTimeout):
        await api.policy("api.not_retried")(fn)()
    assert len(calls) == 1


async def test_the_functions_own_timeout_error_is_not_an_attempt_timeout(
    api: Registry, clock: FakeClock
) -> None:
    async def fn() -> None:
        raise TimeoutError("the client's own")

    with pytest.raises(TimeoutError, match="the client's own") as raised:
        await api.policy("api.not_retried")(fn)()
    assert not isinstance(raised.value, AttemptTimeout)


async def test_the_attempt_never_runs_past_the_deadline(api: Registry, clock: FakeClock) -> None:
    fn, calls = hanging_then("ok", hangs=5)
    with pytest.raises(AttemptTimeout) as raised:
        await api.policy("api.short_deadline")(fn)()
    assert len(calls) == 1
    # Cut at the 50 ms left of the deadline, not at the 10 s attempt timeout; the clock did
    # not move (fake), but no wait may start past the deadline: one attempt.
    assert raised.value.by_deadline
    assert raised.value.seconds == pytest.approx(0.05)
    assert "the time left before stop.deadline" in str(raised.value)


# The same hang inside an HTTP client's code: its frames say which request was in flight.
_CLIENT = """
async def send(method, hang):
    await hang()
"""


def http_client_send() -> Callable[..., Coroutine[Any, Any, None]]:
    namespace: dict[str, Any] = {"__name__": "httpx._fake_transport"}
    exec(_CLIENT, namespace)
    send: Callable[..., Coroutine[Any, Any, None]] = namespace["send"]
    return send


@pytest.mark.parametrize(("method", "attempts"), [("GET", 3), ("POST", 1)])
async def test_a_timed_out_request_is_repeated_only_when_it_may_be(
    api: Registry, clock: FakeClock, method: str, attempts: int
) -> None:
    send = http_client_send()
    calls: list[int] = []

    @api.policy("api.timed")
    async def request() -> None:
        calls.append(1)
        await send(method, hang)

    with pytest.raises(AttemptTimeout):
        await request()
    assert len(calls) == attempts  # a POST in flight may have been served: not repeated


# -- the attempt runs in the caller's task (Python 3.10 as 3.11's asyncio.timeout) ---------------
async def test_each_attempt_has_ended_before_the_next_starts(
    api: Registry, clock: FakeClock
) -> None:
    order: list[str] = []

    @api.policy("api.timed")
    async def fn() -> None:
        order.append("start")
        try:
            await hang()
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # a cleanup that awaits (closing a connection)
            order.append("cleaned up")
            raise

    with pytest.raises(AttemptTimeout) as raised:
        await fn()
    assert order == ["start", "cleaned up"] * 3
    assert type(raised.value.__cause__) is TimeoutError  # the builtin, on every version


async def test_an_outside_cancellation_ends_the_attempt_with_the_call(
    api: Registry, clock: FakeClock
) -> None:
    cleaned: list[str] = []
    started = asyncio.Event()

    @api.policy("api.long_attempt")
    async def fn() -> None:
        started.set()
        try:
            await hang()
        finally:
            cleaned.append("cleaned up")

    task = asyncio.ensure_future(fn())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["cleaned up"]  # nothing left running behind the cancelled call


async def test_the_attempt_runs_in_the_callers_context(api: Registry, clock: FakeClock) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    @api.policy("api.long_attempt")
    async def fn() -> None:
        var.set("set inside")

    await fn()
    assert var.get() == "set inside"  # as without a timeout: no task of its own


# -- time_left(): the deadline, propagated -------------------------------------------------------
def test_time_left_is_none_outside_a_call_and_in_policies_without_either_key(
    api: Registry, clock: FakeClock
) -> None:
    assert callpolicy.time_left() is None
    seen: list[float | None] = []
    api.policy("api.plain")(lambda: seen.append(callpolicy.time_left()))()
    assert seen == [None]


def test_time_left_counts_down_the_deadline_across_retries(api: Registry, clock: FakeClock) -> None:
    seen: list[float | None] = []

    def fn() -> str:
        seen.append(callpolicy.time_left())
        if len(seen) < 3:
            raise ConnectionError("refused")
        return "ok"

    assert api.policy("api.deadline")(fn)() == "ok"
    assert seen == [30.0, 29.0, 28.0]
    assert callpolicy.time_left() is None  # reset when the call is over


def test_time_left_is_the_attempt_timeout_when_shorter(api: Registry, clock: FakeClock) -> None:
    seen: list[float | None] = []
    api.policy("api.attempt")(lambda: seen.append(callpolicy.time_left()))()
    assert seen == [5.0]


def test_nested_calls_see_the_earliest_end(api: Registry, clock: FakeClock) -> None:
    seen: list[float | None] = []

    def note() -> None:
        seen.append(callpolicy.time_left())

    inner = api.policy("api.long_attempt")(note)

    def outer() -> None:
        clock.advance(2.0)
        inner()
        seen.append(callpolicy.time_left())

    api.policy("api.attempt")(outer)()
    assert seen == [3.0, 3.0]  # the outer attempt's 5 s, 2 s of them gone, not the inner 20 s
    api.policy("api.long_attempt")(api.policy("api.attempt")(outer))()
    assert seen[2:] == [3.0, 3.0]  # inside out, the same: the earliest end wins


def test_time_left_is_never_negative(api: Registry, clock: FakeClock) -> None:
    seen: list[float | None] = []

    def fn() -> None:
        clock.advance(60.0)
        seen.append(callpolicy.time_left())

    api.policy("api.attempt")(fn)()
    assert seen == [0.0]


async def test_time_left_in_coroutines_and_their_tasks(api: Registry, clock: FakeClock) -> None:
    seen: list[float | None] = []

    @api.policy("api.attempt")
    async def fn() -> None:
        seen.append(callpolicy.time_left())

        async def child() -> None:
            seen.append(callpolicy.time_left())

        await asyncio.gather(child())  # a task started inside the attempt inherits it

    await fn()
    assert seen == [5.0, 5.0]
    assert callpolicy.time_left() is None


async def test_concurrent_calls_each_see_their_own(api: Registry, clock: FakeClock) -> None:
    seen: dict[str, float | None] = {}

    async def record(name: str) -> None:
        await asyncio.sleep(0)
        seen[name] = callpolicy.time_left()

    await asyncio.gather(
        api.policy("api.attempt")(record)("attempt"),
        api.policy("api.long_attempt")(record)("long"),
        api.policy("api.plain")(record)("plain"),
    )
    assert seen == {"attempt": 5.0, "long": 20.0, "plain": None}
