"""Retry conditions and stops, on sync and async functions, under a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from callpolicy import FakeClock, Registry, RetryExhausted

RegistryOf = Callable[..., Registry]


@attrs.define
class Response:
    status_code: int
    body: dict[str, Any] = attrs.Factory(dict)


class HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"server said {status}")
        self.response = Response(status)


def flaky(outcomes: list[Any]) -> Callable[[], Any]:
    """A function returning (or raising) the next of `outcomes` at each call."""
    calls = iter(outcomes)

    def call() -> Any:
        outcome = next(calls)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call


NETWORK = """
[endpoints.get]
retry.on_exceptions = ["ConnectionError", "TimeoutError"]
retry.on_status = [429, "5xx"]
wait.strategy = "fixed"
wait.seconds = "1s"
stop.attempts = 4
"""


def test_listed_exception_is_retried_until_success(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    fn = registry_of(api=NETWORK).policy("api.get")(
        flaky([ConnectionError("a"), TimeoutError("b"), "ok"])
    )
    assert fn() == "ok"
    assert clock.sleeps == [1.0, 1.0]


def test_unlisted_exception_propagates_at_once(registry_of: RegistryOf, clock: FakeClock) -> None:
    fn = registry_of(api=NETWORK).policy("api.get")(flaky([KeyError("x"), "ok"]))
    with pytest.raises(KeyError):
        fn()
    assert clock.sleeps == []


def test_exhausted_retries_raise_the_last_original_exception(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    errors = [ConnectionError(f"refused {n}") for n in range(4)]
    fn = registry_of(api=NETWORK).policy("api.get")(flaky([*errors, "never"]))
    with pytest.raises(ConnectionError) as raised:
        fn()
    assert raised.value is errors[-1]
    assert clock.sleeps == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1), asyncio.CancelledError()])
def test_interrupts_are_never_retried_even_by_a_catch_all_policy(
    registry_of: RegistryOf, clock: FakeClock, error: BaseException
) -> None:
    registry = registry_of(
        api="""
        [endpoints.all]
        retry.on_exceptions = ["Exception"]
        retry.exception_predicate = "builtins.bool"
        stop.attempts = 5
        """
    )
    fn = registry.policy("api.all")(flaky([error, "ok"]))
    with pytest.raises(type(error)):
        fn()
    assert clock.sleeps == []


def test_status_of_a_returned_response_is_retried(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    fn = registry_of(api=NETWORK).policy("api.get")(
        flaky([Response(429), Response(503), Response(200)])
    )
    assert fn().status_code == 200
    assert len(clock.sleeps) == 2


def test_status_of_a_raised_error_is_retried(registry_of: RegistryOf, clock: FakeClock) -> None:
    fn = registry_of(api=NETWORK).policy("api.get")(flaky([HTTPError(502), Response(200)]))
    assert fn().status_code == 200


def test_unlisted_status_is_returned_as_is(registry_of: RegistryOf, clock: FakeClock) -> None:
    fn = registry_of(api=NETWORK).policy("api.get")(flaky([Response(404)]))
    assert fn().status_code == 404
    assert clock.sleeps == []


def test_status_retries_running_out_raise_retry_exhausted_with_the_last_result(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    last = Response(503)
    fn = registry_of(api=NETWORK).policy("api.get")(flaky([Response(429)] * 3 + [last]))
    with pytest.raises(RetryExhausted) as raised:
        fn()
    assert raised.value.last_result is last
    assert raised.value.attempts == 4
    assert "api.get: gave up after 4 attempts (stop.attempts = 4 reached)" in str(raised.value)


POLL = """
[endpoints.status]
retry.until = { field = "status", in = ["COMPLETED", "FAILED"] }
wait = { strategy = "exponential", initial = "5s", multiplier = 1.5, max = "60s" }
stop.attempts = 60
"""


def test_polling_until_a_terminal_status_backs_off_exponentially(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    states = [{"status": "PENDING"}] * 8 + [{"status": "COMPLETED", "url": "x"}]
    fn = registry_of(clari=POLL).policy("clari.status")(flaky(states))
    assert fn() == {"status": "COMPLETED", "url": "x"}
    assert clock.sleeps == pytest.approx(
        [5.0, 7.5, 11.25, 16.875, 25.3125, 37.96875, 56.953125, 60.0]
    )


def test_until_reads_attributes_and_nested_fields(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api="""
        [endpoints.job]
        retry.until = { field = "body.state", equals = "done" }
        wait.strategy = "none"
        """
    )
    fn = registry.policy("api.job")(
        flaky([Response(200, {"state": "busy"}), Response(200, {"state": "done"})])
    )
    assert fn().body == {"state": "done"}
    assert clock.sleeps == [0.0]


def test_while_retries_as_long_as_the_condition_holds(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api="""
        [endpoints.job]
        retry.while = { field = "status", not_in = ["ok"] }
        wait.strategy = "none"
        stop.attempts = 2
        """
    )
    fn = registry.policy("api.job")(flaky([{"status": "x"}, {"status": "y"}]))
    with pytest.raises(RetryExhausted) as raised:
        fn()
    assert raised.value.last_result == {"status": "y"}


def is_empty(result: Any) -> bool:
    return not result


def is_teapot(error: BaseException) -> bool:
    return "teapot" in str(error)


def test_dotted_predicates_decide_on_results_and_exceptions(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api=f"""
        [endpoints.get]
        retry.result_predicate = "{__name__}.is_empty"
        retry.exception_predicate = "{__name__}.is_teapot"
        wait.strategy = "none"
        """
    )
    fn = registry.policy("api.get")(flaky([[], ValueError("teapot"), [1]]))
    assert fn() == [1]
    fn = registry.policy("api.get")(flaky([ValueError("kettle")]))
    with pytest.raises(ValueError, match="kettle"):
        fn()


DEADLINE = """
[endpoints.get]
retry.on_exceptions = ["ConnectionError"]
wait.strategy = "exponential"
wait.initial = "4s"
stop.attempts = 10
stop.deadline = "10s"
"""


def test_a_wait_that_would_end_past_the_deadline_is_not_started(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    errors = [ConnectionError(str(n)) for n in range(10)]
    fn = registry_of(api=DEADLINE).policy("api.get")(flaky(errors))
    with pytest.raises(ConnectionError) as raised:
        fn()
    # 4s then 8s would end at 12s > 10s: fail right after the second attempt.
    assert clock.sleeps == [4.0]
    assert raised.value is errors[1]


def test_time_spent_in_attempts_counts_against_the_deadline(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    calls = 0

    def slow() -> None:
        nonlocal calls
        calls += 1
        clock.advance(7.0)
        raise ConnectionError("slow")

    fn = registry_of(api=DEADLINE).policy("api.get")(slow)
    with pytest.raises(ConnectionError):
        fn()
    assert calls == 1  # 7s spent + a 4s wait would end at 11s, past the 10s deadline
    assert clock.sleeps == []


def test_result_retries_stopped_by_the_deadline_say_so(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api="""
        [endpoints.job]
        retry.until = { field = "done", equals = true }
        wait = { strategy = "fixed", seconds = "6s" }
        stop = { attempts = 10, deadline = "10s" }
        """
    )
    fn = registry.policy("api.job")(flaky([{"done": False}] * 3))
    with pytest.raises(RetryExhausted, match=r"would pass stop.deadline = 10s"):
        fn()
    assert clock.sleeps == [6.0]


async def test_async_functions_retry_the_same_way(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    outcomes = iter([ConnectionError("a"), Response(503), Response(200)])

    async def call() -> Any:
        outcome = next(outcomes)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    fn = registry_of(api=NETWORK).policy("api.get")(call)
    assert (await fn()).status_code == 200
    assert clock.sleeps == [1.0, 1.0]


async def test_async_cancellation_is_never_retried(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(api='[endpoints.all]\nretry.on_exceptions = ["Exception"]\n')
    started = asyncio.Event()

    @registry.policy("api.all")
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(hang())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleeps == []


PROBE: list[Callable[[], Any]] = []  # set by the test below


def probe_is_flaky(error: BaseException) -> bool:
    """An exception predicate that itself calls a function under the same policy."""
    return bool(PROBE[0]())


def test_a_policy_call_nested_in_a_retry_condition_does_not_disturb_the_outer_call(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api=f"""
        [endpoints.get]
        retry.exception_predicate = "{__name__}.probe_is_flaky"
        retry.on_exceptions = ["ConnectionError"]
        wait.strategy = "none"
        stop.attempts = 3
        """
    )
    # Every probe fails once before it answers, so it retries inside the outer retry check.
    PROBE[:] = [registry.policy("api.get")(flaky([ConnectionError("probe"), True] * 4))]
    outer = registry.policy("api.get")(flaky([RuntimeError("1"), RuntimeError("2"), "done"]))
    assert outer() == "done"
