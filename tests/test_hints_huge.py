"""A hint past a week is a hint above the cap, not garbage: whatever `hint_above_cap` says,
the outcome only grows with the hint (15-digit seconds, year-9999 dates included), and
garbage stays no hint at all."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hints import (
    NOW,
    SOURCES,
    MultiHeaders,
    PostResponse,
    Response,
    every_format,
    our_clock_at,
    outcome,
    render,
)

from callpolicy import FakeClock, Registry, RetryExhausted, Wait
from callpolicy._engine.conditions import RetryCondition
from callpolicy._engine.waits import compile_wait
from callpolicy._model import Retry

RegistryOf = Callable[..., Registry]
CAP, COMPUTED, WEEK = 60, 1.0, 7 * 86400
YEAR_9999 = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp() - NOW)
# The largest offset each kind can write (15 digits at most; dates end with year 9999).
LIMITS = {
    "delta": 10**15 - 1,
    "date": YEAR_9999,
    "epoch-seconds": 10**15 - 1 - int(NOW),
    "epoch-millis": (10**15 - 1) // 1000 - int(NOW),
    "rfc3339": YEAR_9999,
    "duration": 10**9 - 1,
}
# Increasing hints in every format, across the cap, past a week and as far as each goes.
LADDER: list[tuple[float, dict[str, str]]] = [
    *[(s, render(kind, s)) for s, kind in [(1, "delta"), (59, "date"), (60, "rfc3339")]],
    *[(s, render(kind, s)) for s, kind in [(61, "epoch-seconds"), (3600, "epoch-millis")]],
    *[(s, render(kind, s)) for s, kind in [(WEEK, "duration"), (WEEK + 1, "delta")]],
    (99_999_999_999, {"Retry-After": "99999999999"}),
    (YEAR_9999, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}),
    (YEAR_9999, {"Retry-After": "Fri Dec 31 23:59:59 9999"}),
    (YEAR_9999 + 0.999999, {"X-Reset-At": "9999-12-31T23:59:59.999999999Z"}),
    (YEAR_9999 + 86340, {"X-Reset-At": "9999-12-31T23:59:59-23:59"}),  # in year 10000 (UTC)
    (999_999_999_999.999 - NOW, {"X-Reset-Millis": "999999999999999"}),
    (999_999_999 * 3600, {"X-Reset-In": "999999999h"}),
    (10**15 - 1 - NOW, {"X-Reset-Epoch": "999999999999999"}),
    (10**15 - 1, {"Retry-After": "999999999999999"}),
    (10**15, {"Retry-After": "999999999999999.999999999"}),
]


def expected(action: str, seconds: float) -> float:
    """What a hint of `seconds` makes the call do: a sleep, or inf (give up at once)."""
    if seconds <= CAP:
        return seconds
    return {"clamp": float(CAP), "ignore": COMPUTED, "fail": math.inf}[action]


def decide(action: str, headers: dict[str, str]) -> float:
    """The wait after a 429 carrying `headers` (inf: give up), by the wait object alone."""
    wait = Wait("fixed", seconds=COMPUTED, hints=SOURCES, hint_cap=CAP, hint_above_cap=action)
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.set_result(Response(429, headers))
    return float(compile_wait(wait, "svc.huge")(state))


def test_the_ladder_is_in_order() -> None:
    seconds = [s for s, _ in LADDER]
    assert seconds == sorted(seconds) and seconds[-1] > 10**15 - 1


@pytest.mark.parametrize("action", ["clamp", "ignore", "fail"])
def test_every_hint_past_the_cap_is_one_whatever_its_size(
    registry_of: RegistryOf, clock: FakeClock, action: str
) -> None:
    registry = registry_of(api=every_format(f"{CAP}s", action))
    with our_clock_at():
        outcomes = [outcome(registry, clock, headers) for _, headers in LADDER]
    assert outcomes == pytest.approx([expected(action, s) for s, _ in LADDER], abs=1e-3)
    if action != "ignore":  # ignore uses the backoff above the cap, by definition
        assert outcomes == sorted(outcomes)  # never a shorter wait, never back from giving up


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(sorted(LIMITS)),
    data=st.data(),
)
def test_the_outcome_only_grows_with_the_hint(kind: str, data: st.DataObject) -> None:
    near_cap = st.integers(1, 3 * CAP)
    anywhere = st.integers(1, LIMITS[kind])
    offsets = sorted(data.draw(st.lists(near_cap | anywhere, min_size=2, max_size=6)))
    offsets += [CAP, CAP + 1, WEEK + 1, LIMITS[kind]]
    offsets.sort()
    with our_clock_at():
        for action in ("clamp", "ignore", "fail"):
            outcomes = [decide(action, render(kind, s)) for s in offsets]
            assert outcomes == [expected(action, s) for s in offsets]
            if action != "ignore":
                assert outcomes == sorted(outcomes)


def test_giving_up_says_what_the_server_said(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(api=every_format("60s", "fail"))
    replies = iter([Response(429, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"})])
    with our_clock_at(), pytest.raises(RetryExhausted) as failed:
        registry.policy("api.get")(lambda: next(replies))()
    said = f"Retry-After: Fri, 31 Dec 9999 23:59:59 GMT (read as {YEAR_9999}s by our clock)"
    assert f"{said} is above hint_cap 60s" in str(failed.value)
    assert clock.sleeps == []


GARBAGE: list[Any] = [
    {"Retry-After": "-5"},
    {"Retry-After": "NaN"},
    {"Retry-After": "inf"},
    {"Retry-After": "1e99"},
    {"Retry-After": "\uff19" * 12},  # full-width digits
    {"Retry-After": "9" * 16},  # 16 digits: more than the grammar allows
    {"Retry-After": "9" * 400},
    {"Retry-After": "5 seconds"},
    {"Retry-After": "5, 99999999999"},
    {"Retry-After": "Fri, 31 Dec 10000 23:59:59 GMT"},  # a five-digit year
    {"Retry-After": "Fri, 32 Dec 9999 23:59:59 GMT"},
    {"Retry-After": "Xyz, 31 Dec 9999 23:59:59 GMT"},
    {"X-Reset-Epoch": "9" * 16},
    {"X-Reset-At": "99999-12-31T23:59:59Z"},
    {"X-Reset-In": "9999999999h"},
    MultiHeaders([("Retry-After", "99999999999"), ("Retry-After", "99999999999")]),
]


@pytest.mark.parametrize("action", ["clamp", "ignore", "fail"])
@pytest.mark.parametrize("headers", GARBAGE)
def test_garbage_is_no_hint_with_a_warning(
    registry_of: RegistryOf,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    action: str,
    headers: Any,
) -> None:
    registry = registry_of(api=every_format("60s", action))
    with our_clock_at(), caplog.at_level(logging.WARNING, logger="callpolicy"):
        assert outcome(registry, clock, headers) == COMPUTED
    assert "api.get: ignoring " in caplog.text
    assert "using the computed backoff" in caplog.text


PAUSED = """
[endpoints.get]
pause = {{ reset = "X-RateLimit-Reset", format = "{fmt}", max = "30s" }}
"""


@pytest.mark.parametrize(
    ("fmt", "reset", "paused"),
    [
        ("delta-seconds", "99999999999", [30.0]),
        ("delta-seconds", "999999999999999", [30.0]),
        ("epoch-seconds", "999999999999999", [30.0]),
        ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT", [30.0]),
        ("rfc3339", "9999-12-31T23:59:59Z", [30.0]),
        ("delta-seconds", "20", [20.0]),
        ("delta-seconds", "9" * 16, []),  # garbage: no pause
    ],
)
def test_a_huge_reset_pauses_the_most_a_pause_may(
    registry_of: RegistryOf, clock: FakeClock, fmt: str, reset: str, paused: list[float]
) -> None:
    spent = Response(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})
    replies = iter([spent, Response(200, {})])
    fn: Callable[[], Any] = registry_of(api=PAUSED.format(fmt=fmt)).policy("api.get")(
        lambda: next(replies)
    )
    with our_clock_at():
        fn()
        fn()
    assert clock.sleeps == paused


def test_a_refused_post_with_a_huge_retry_after_carries_a_hint() -> None:
    condition = RetryCondition(Retry(on_status=frozenset({429})), "api.post")
    with our_clock_at():
        assert condition.retries_result(PostResponse(429, {"Retry-After": "99999999999"}))
        assert not condition.retries_result(PostResponse(429, {"Retry-After": "9" * 16}))
