"""Server hints: every value read strictly, hostile ones never obeyed, caps and deadlines kept."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import pytest

from callpolicy import FakeClock, Registry, RetryExhausted
from callpolicy._engine import hints
from callpolicy._engine.hints import NotAHint, parse, read_hint
from callpolicy._text import Throttled

NOW = 1_700_000_000.0  # a fixed "now", in epoch seconds
RegistryOf = Callable[..., Registry]


@contextmanager
def our_clock_at(now: float = NOW) -> Iterator[None]:
    """Our wall clock (what absolute hints are read against without a server Date) reads
    `now`; warnings about ignored values start afresh."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hints, "time", SimpleNamespace(time=lambda: now))
        patch.setattr(hints, "_ignored", Throttled(60.0))
        yield


def http_date(offset: float, style: str = "imf") -> str:
    """NOW + offset as an HTTP date in `style`: "imf" (IMF-fixdate), "rfc850" or "asctime"."""
    moment = datetime.fromtimestamp(NOW + offset, tz=timezone.utc)
    if style == "imf":
        return format_datetime(moment, usegmt=True)
    if style == "rfc850":
        return moment.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    return moment.strftime("%a %b ") + f"{moment.day:>2}" + moment.strftime(" %H:%M:%S %Y")


@pytest.mark.parametrize(
    ("fmt", "raw", "seconds"),
    [
        ("retry-after", "12", 12.0),
        ("retry-after", " 3 ", 3.0),
        ("retry-after", "1.5", 1.5),
        ("retry-after", "0", 0.0),
        ("retry-after", http_date(30), 30.0),
        ("retry-after", http_date(30, "rfc850"), 30.0),
        ("retry-after", http_date(30, "asctime"), 30.0),
        ("retry-after", http_date(-3600), 0.0),  # already past: no wait
        ("delta-seconds", "7", 7.0),
        ("epoch-seconds", str(int(NOW + 20)), 20.0),
        ("epoch-millis", str(int((NOW + 2.5) * 1000)), 2.5),
        ("rfc3339", (datetime.fromtimestamp(NOW + 9, tz=timezone.utc)).isoformat(), 9.0),
        (
            "rfc3339",
            datetime.fromtimestamp(NOW + 9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            9.0,
        ),
        ("duration", "6m0s", 360.0),
        ("duration", "1.5s", 1.5),
        ("duration", "20ms", 0.02),
        ("duration", "1h2m3s", 3723.0),
        # Past a week is still a hint (above any cap, whatever the cap: see test_hints_huge).
        ("retry-after", "999999999", 999999999.0),
        ("retry-after", http_date(10 * 365 * 86400), 10 * 365 * 86400.0),
        ("epoch-seconds", str(int(NOW + 30 * 86400)), 30 * 86400.0),
        ("duration", "200h", 720000.0),
    ],
)
def test_hints_read_in_their_format(fmt: str, raw: str, seconds: float) -> None:
    assert parse(fmt, raw, NOW) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    ("fmt", "raw", "why"),
    [
        ("retry-after", "-5", "not seconds or an HTTP date"),
        ("retry-after", "NaN", "not seconds or an HTTP date"),
        ("retry-after", "inf", "not seconds or an HTTP date"),
        ("retry-after", "9" * 400, "not seconds or an HTTP date"),
        ("retry-after", "1e9", "not seconds or an HTTP date"),
        ("retry-after", "\uff15", "not seconds or an HTTP date"),  # a full-width 5
        ("retry-after", "\u0665", "not seconds or an HTTP date"),  # an Arabic-Indic 5
        ("retry-after", "5 seconds", "not seconds or an HTTP date"),
        ("retry-after", "", "not seconds or an HTTP date"),
        ("retry-after", "5, 10", "not seconds or an HTTP date"),
        ("retry-after", "9" * 16, "not seconds or an HTTP date"),  # at most 15 digits
        ("retry-after", "Xyz, 06 Nov 1994 08:49:37 GMT", "not seconds or an HTTP date"),
        ("retry-after", "Sun, 31 Feb 2030 08:49:37 GMT", "not a real date"),
        ("retry-after", "Sun, 06 Nov 1994 25:49:37 GMT", "not a real date"),
        ("retry-after", "tomorrow", "not seconds or an HTTP date"),
        ("epoch-seconds", "-1", "not a number"),
        ("rfc3339", "2030-02-31T00:00:00Z", "not a real time"),
        ("rfc3339", "soon", "not an RFC 3339 time"),
        ("duration", "6 minutes", 'not a duration like "6m0s" or "1.5s"'),
        ("duration", "-1s", 'not a duration like "6m0s" or "1.5s"'),
    ],
)
def test_hostile_values_are_not_hints(fmt: str, raw: str, why: str) -> None:
    with pytest.raises(NotAHint, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse(fmt, raw, NOW)


class Response:
    def __init__(self, status_code: int, headers: Any) -> None:
        self.status_code = status_code
        self.headers = headers


class MultiHeaders:
    """Headers that keep repeated values apart (as httpx and aiohttp do)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get_list(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k.lower() == name.lower()]


def test_repeated_headers_are_not_a_hint(caplog: pytest.LogCaptureFixture) -> None:
    answer = Response(429, MultiHeaders([("Retry-After", "5"), ("retry-after", "50")]))
    assert read_hint((("Retry-After", "retry-after"),), answer, "svc.e") is None
    assert "several values" in caplog.text


def test_the_first_usable_header_wins_and_names_are_any_case() -> None:
    answer = Response(429, {"x-ratelimit-reset": "9", "retry-after": "bogus"})
    sources = (("Retry-After", "retry-after"), ("X-RateLimit-Reset", "delta-seconds"))
    hint = read_hint(sources, answer, "svc.first")
    assert hint is not None and (hint.header, hint.seconds) == ("X-RateLimit-Reset", 9.0)


def test_errors_carrying_a_response_give_its_headers() -> None:
    class HTTPError(Exception):
        response = Response(503, {"Retry-After": "4"})

    hint = read_hint((("Retry-After", "retry-after"),), HTTPError(), "svc.e")
    assert hint is not None and hint.seconds == 4.0


HINTED = """
[endpoints.get]
retry.on_status = [429, 503]
wait = {{ strategy = "fixed", seconds = "1s", server_hints = ["Retry-After"], \
hint_cap = "30s"{extra} }}
stop = {{ attempts = 3{stop} }}
"""


def calls(*answers: Response) -> Callable[[], Response]:
    replies = iter([*answers, Response(200, {})])
    return lambda: next(replies)


def policy(registry_of: RegistryOf, extra: str = "", stop: str = "") -> Registry:
    return registry_of(api=HINTED.format(extra=extra, stop=stop))


def test_the_servers_retry_after_replaces_the_backoff(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fn = policy(registry_of).policy("api.get")(calls(Response(429, {"Retry-After": "12"})))
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        assert fn().status_code == 200
    assert clock.sleeps == [12.0]
    assert "sleeping 12.000s (Retry-After: 12, instead of the backoff 1.000s)" in caplog.text


def test_a_hostile_hint_falls_back_to_the_backoff_with_one_warning(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fn = policy(registry_of).policy("api.get")(
        calls(Response(503, {"Retry-After": "-1"}), Response(503, {"Retry-After": "NaN"}))
    )
    assert fn().status_code == 200
    assert clock.sleeps == [1.0, 1.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # at most once a minute per header
    assert "ignoring Retry-After '-1' (not seconds or an HTTP date)" in warnings[0].getMessage()


def test_a_hint_above_the_cap_is_clamped_by_default(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    fn = policy(registry_of).policy("api.get")(calls(Response(429, {"Retry-After": "3600"})))
    fn()
    assert clock.sleeps == [30.0]


def test_a_hint_above_the_cap_can_be_ignored(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = policy(registry_of, extra=', hint_above_cap = "ignore"')
    registry.policy("api.get")(calls(Response(429, {"Retry-After": "3600"})))()
    assert clock.sleeps == [1.0]


def test_a_hint_above_the_cap_can_fail_at_once(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = policy(registry_of, extra=', hint_above_cap = "fail"')
    fn = registry.policy("api.get")(calls(Response(429, {"Retry-After": "3600"})))
    with pytest.raises(RetryExhausted, match="Retry-After: 3600 is above hint_cap 30s"):
        fn()
    assert clock.sleeps == []


def test_a_hint_ending_past_the_deadline_fails_at_once(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = policy(registry_of, stop=', deadline = "10s"')
    fn = registry.policy("api.get")(calls(Response(429, {"Retry-After": "20"})))
    with pytest.raises(RetryExhausted, match=r"would pass stop\.deadline"):
        fn()
    assert clock.sleeps == []


def test_jitter_only_adds_to_a_hint(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = policy(registry_of, extra=', jitter = "2s"')
    for _ in range(20):
        registry.policy("api.get")(calls(Response(429, {"Retry-After": "5"})))()
    assert all(5.0 <= s <= 7.0 for s in clock.sleeps)
    assert len(set(clock.sleeps)) > 1


class PostResponse(Response):
    """A response to a POST (its request says so)."""

    class request:  # noqa: N801 - shaped like requests' PreparedRequest
        method = "POST"
        headers: dict[str, str] = {}  # noqa: RUF012


def test_a_refused_post_is_repeated_only_with_a_usable_hint_in_the_policys_headers() -> None:
    from callpolicy._engine.conditions import RetryCondition  # noqa: PLC0415 (the unit under test)
    from callpolicy._model import Retry  # noqa: PLC0415

    vendor = RetryCondition(
        Retry(on_status=frozenset({429})), "api.post", (("x-ratelimit-reset-requests", "duration"),)
    )
    assert vendor.retries_result(PostResponse(429, {"x-ratelimit-reset-requests": "1s"}))
    assert not vendor.retries_result(PostResponse(429, {"x-ratelimit-reset-requests": "soon"}))
    plain = RetryCondition(Retry(on_status=frozenset({429})), "api.post")
    assert plain.retries_result(PostResponse(429, {"Retry-After": "2"}))
    assert not plain.retries_result(PostResponse(429, {"Retry-After": "garbage"}))
    assert not plain.retries_result(PostResponse(429, {}))


def test_header_values_that_cannot_be_read_are_no_hint() -> None:
    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    assert (
        read_hint((("Retry-After", "retry-after"),), Response(429, {"Retry-After": Boom()}), "x")
        is None
    )


# Every hint format, each in a header of its own: what `render` writes a hint of a kind in.
SOURCES = (
    ("Retry-After", "retry-after"),
    ("X-Reset-Epoch", "epoch-seconds"),
    ("X-Reset-Millis", "epoch-millis"),
    ("X-Reset-At", "rfc3339"),
    ("X-Reset-In", "duration"),
)
KIND_HEADERS = {
    "delta": "Retry-After",
    "date": "Retry-After",
    "epoch-seconds": "X-Reset-Epoch",
    "epoch-millis": "X-Reset-Millis",
    "rfc3339": "X-Reset-At",
    "duration": "X-Reset-In",
}
_LISTED = ", ".join(f'{{ header = "{h}", format = "{f}" }}' for h, f in SOURCES)


def every_format(cap: str = "60s", action: str = "clamp") -> str:
    """A policy file reading every format (a fixed 1s backoff, one retry)."""
    return f"""
[endpoints.get]
retry.on_status = [429]
stop.attempts = 2
wait = {{ strategy = "fixed", seconds = "1s", hint_cap = "{cap}", hint_above_cap = "{action}", \
server_hints = [{_LISTED}] }}
"""


def render(kind: str, offset: int) -> dict[str, str]:
    """Headers saying to wait until NOW + offset (whole seconds), in `kind`."""
    if kind in ("date", "rfc3339"):
        moment = datetime.fromtimestamp(NOW + offset, tz=timezone.utc)
        raw = http_date(offset) if kind == "date" else moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif kind.startswith("epoch"):
        raw = str((int(NOW) + offset) * (1000 if kind == "epoch-millis" else 1))
    else:
        raw = f"{offset}s" if kind == "duration" else str(offset)
    return {KIND_HEADERS[kind]: raw}


def outcome(registry: Registry, clock: FakeClock, headers: Any) -> float:
    """The sleep before the retry of a 429 carrying `headers`; inf if the call gives up."""
    before = len(clock.sleeps)
    replies = iter([Response(429, headers), Response(200, {})])
    try:
        registry.policy("api.get")(lambda: next(replies))()
    except RetryExhausted:
        return math.inf
    (slept,) = clock.sleeps[before:]
    return slept
