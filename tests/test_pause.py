"""`[endpoints.x] pause`: a response saying the quota is spent holds the endpoint's next calls
until the reset it names."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from callpolicy import FakeClock, QuotaExceeded, Registry

RegistryOf = Callable[..., Registry]


class Response:
    def __init__(self, headers: dict[str, str], status_code: int = 200) -> None:
        self.status_code = status_code
        self.headers = headers


PAUSED = """
[endpoints.get]
pause = {{ remaining = "X-RateLimit-Remaining", reset = "X-RateLimit-Reset", max = "30s" }}
{extra}
"""


def endpoint(registry_of: RegistryOf, answers: list[Response], extra: str = "") -> Any:
    replies = iter(answers)
    return registry_of(api=PAUSED.format(extra=extra)).policy("api.get")(lambda: next(replies))


def test_remaining_zero_holds_the_next_call_until_the_reset(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fn = endpoint(
        registry_of,
        [
            Response({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "9"}),
            Response({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "4"}),
            Response({}),
        ],
    )
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        fn()
        fn()
        assert clock.sleeps == []
        fn()
    assert clock.sleeps == [4.0]
    assert "api.get: attempt 1 of 3 waits 4.000s: the server said X-RateLimit-Remaining: 0" in (
        caplog.text
    )


def test_a_pause_is_capped_by_its_max(registry_of: RegistryOf, clock: FakeClock) -> None:
    fn = endpoint(
        registry_of,
        [Response({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3600"}), Response({})],
    )
    fn()
    fn()
    assert clock.sleeps == [30.0]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "-5"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "soon"},
        {"X-RateLimit-Remaining": "0"},
        {"X-RateLimit-Remaining": "zero", "X-RateLimit-Reset": "5"},
        {"X-RateLimit-Remaining": "9" * 5000, "X-RateLimit-Reset": "5"},
    ],
)
def test_no_usable_reset_pauses_nothing(
    registry_of: RegistryOf, clock: FakeClock, headers: dict[str, str]
) -> None:
    fn = endpoint(registry_of, [Response(headers), Response({})])
    fn()
    fn()
    assert clock.sleeps == []


def test_a_pause_past_the_deadline_fails_fast(registry_of: RegistryOf, clock: FakeClock) -> None:
    fn = endpoint(
        registry_of,
        [Response({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "20"}), Response({})],
        extra='stop.deadline = "10s"',
    )
    fn()
    with pytest.raises(QuotaExceeded, match=r"paused by the server"):
        fn()
    assert clock.sleeps == []


def test_an_error_carrying_the_headers_pauses_too(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    class Throttled(Exception):
        response = Response({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2"}, 429)

    calls = iter([Throttled(), Response({})])

    def call() -> Any:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    registry = registry_of(
        api=PAUSED.format(extra='retry.on_status = [429]\nwait.strategy = "none"')
    )
    assert registry.policy("api.get")(call)().status_code == 200
    assert clock.sleeps == [0.0, 2.0]  # the retry's backoff, then the pause


def test_what_remains_for_calls_already_in_flight_pauses_the_next(clock: FakeClock) -> None:
    from callpolicy._engine.pause import ServerPause  # noqa: PLC0415
    from callpolicy._model import Pause  # noqa: PLC0415 (the unit under test)

    pause = ServerPause("api.get", 3, Pause())
    pause.enter()  # this call
    pause.enter()  # another, still waiting for its answer: it will use the last one left
    pause.note(Response({"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "3"}))
    assert pause.until == pytest.approx(clock.now() + 3.0)
    pause.note(Response({}))  # the other answered
    pause.enter()
    pause.note(Response({"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "9"}))
    assert pause.until == pytest.approx(clock.now() + 3.0)  # 1 left, none in flight: go on
    pause.enter()
    pause.leave()  # interrupted: not in flight any more
    assert pause.in_flight == 0
