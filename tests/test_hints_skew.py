"""Server clock skew: absolute hints (HTTP dates, epoch and RFC 3339 resets) are read against
the response's Date when it has a valid one (IMF-fixdate), else against our clock; delays
are unaffected. The hint note and log line say which."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from test_hints import (
    NOW,
    MultiHeaders,
    Response,
    every_format,
    http_date,
    our_clock_at,
    outcome,
    render,
)

from callpolicy import FakeClock, Registry, RetryExhausted

RegistryOf = Callable[..., Registry]
ABSOLUTE = ["date", "epoch-seconds", "epoch-millis", "rfc3339"]
SKEWS = [-3600, -600, -31, 0, 31, 600, 3600]  # the server's clock minus ours, in seconds


@pytest.mark.parametrize("skew", SKEWS)
@pytest.mark.parametrize("kind", ABSOLUTE)
def test_absolute_hints_count_from_the_servers_date(
    registry_of: RegistryOf, clock: FakeClock, kind: str, skew: int
) -> None:
    registry = registry_of(api=every_format("120s", "fail"))
    headers = {"Date": http_date(skew), **render(kind, skew + 30)}
    with our_clock_at():
        assert outcome(registry, clock, headers) == 30.0


@pytest.mark.parametrize("skew", SKEWS)
@pytest.mark.parametrize("kind", ["delta", "duration"])
def test_delays_ignore_the_date(
    registry_of: RegistryOf, clock: FakeClock, kind: str, skew: int
) -> None:
    registry = registry_of(api=every_format("120s", "fail"))
    with our_clock_at():
        assert outcome(registry, clock, {"Date": http_date(skew), **render(kind, 30)}) == 30.0


@pytest.mark.parametrize("kind", ABSOLUTE)
def test_without_a_date_our_clock_is_used(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    registry = registry_of(api=every_format("120s", "fail"))
    headers = render(kind, 30)
    ((header, raw),) = headers.items()
    with our_clock_at(), caplog.at_level(logging.INFO, logger="callpolicy"):
        assert outcome(registry, clock, headers) == 30.0
    said = f"{header}: {raw} (read as 30s by our clock), instead of the backoff 1.000s)"
    assert said in caplog.text


# Dates an hour ahead of ours, none of them one IMF-fixdate: each is ignored.
GARBAGE_DATES: list[Any] = [
    http_date(3600, "rfc850"),
    http_date(3600, "asctime"),
    http_date(3600).replace("GMT", "+0000"),
    http_date(3600).replace("GMT", "gmt"),
    http_date(3600).replace(", ", ",  "),
    " " + http_date(3600)[4:],  # no weekday
    "Xyz" + http_date(3600)[3:],
    "Tue, 31 Feb 2023 22:13:20 GMT",
    "Tue, 14 Nov 2023 25:13:20 GMT",
    http_date(3600).replace("2023", "\uff12\uff10\uff12\uff13"),  # full-width digits
    "yesterday",
    "",
    [http_date(3600), http_date(3600)],  # two Date headers
]


@pytest.mark.parametrize("date", GARBAGE_DATES)
@pytest.mark.parametrize("kind", ABSOLUTE)
def test_a_garbage_date_is_ignored_and_our_clock_used(
    registry_of: RegistryOf,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    date: Any,
) -> None:
    registry = registry_of(api=every_format("120s", "fail"))
    ((header, raw),) = render(kind, 30).items()
    dates = date if isinstance(date, list) else [date]
    headers = MultiHeaders([*(("Date", d) for d in dates), (header, raw)])
    with our_clock_at(), caplog.at_level(logging.INFO, logger="callpolicy"):
        assert outcome(registry, clock, headers) == 30.0
    said = f"{header}: {raw} (read as 30s by our clock, Date "
    assert f"{said}{dates[0][:40]!r}" in caplog.text


def test_the_log_line_and_event_say_the_date_read_against(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(api=every_format("120s", "fail"))
    date, retry_after = http_date(3600), http_date(3630)
    with our_clock_at(), caplog.at_level(logging.INFO, logger="callpolicy"):
        outcome(registry, clock, {"Date": date, "Retry-After": retry_after})
    (record,) = [r for r in caplog.records if r.levelno == logging.INFO]
    note = f"Retry-After: {retry_after} (read as 30s after Date: {date})"
    assert record.hint == note  # type: ignore[attr-defined]
    assert record.hint_seconds == 30.0  # type: ignore[attr-defined]
    message = record.getMessage()
    assert message.endswith(f"sleeping 30.000s ({note}, instead of the backoff 1.000s)")


def test_giving_up_says_the_date_read_against(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(api=every_format("120s", "fail"))
    date = http_date(-3600)
    replies = iter([Response(429, {"Date": date, **render("epoch-seconds", 0)})])
    said = f"X-Reset-Epoch: {int(NOW)} (read as 1h after Date: {date}) is above hint_cap 120s"
    with our_clock_at(), pytest.raises(RetryExhausted, match=re.escape(said)):
        registry.policy("api.get")(lambda: next(replies))()
    assert clock.sleeps == []  # an hour after the server's Date: above the cap


def test_an_error_carrying_the_response_gives_its_date(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    class Throttled(Exception):
        response = Response(429, {"Date": http_date(3600), "Retry-After": http_date(3620)})

    replies = iter([Throttled(), Response(200, {})])

    def call() -> Any:
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply

    registry = registry_of(api=every_format("120s", "fail") + 'retry.on_exceptions = ["Exception"]')
    with our_clock_at():
        registry.policy("api.get")(call)()
    assert clock.sleeps == [20.0]


PAUSED = """
[endpoints.get]
pause = { reset = "X-RateLimit-Reset", format = "epoch-seconds", max = "60s" }
"""


@pytest.mark.parametrize("skew", SKEWS)
def test_a_pause_counts_from_the_servers_date_too(
    registry_of: RegistryOf, clock: FakeClock, skew: int
) -> None:
    reset = render("epoch-seconds", skew + 10)["X-Reset-Epoch"]
    spent = {"Date": http_date(skew), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    replies = iter([Response(200, spent), Response(200, {})])
    fn: Callable[[], Any] = registry_of(api=PAUSED).policy("api.get")(lambda: next(replies))
    with our_clock_at():
        fn()
        fn()
    assert clock.sleeps == [10.0]
