"""The exponential wait: `initial * multiplier**(n - 1)` capped at `max`, never decreasing
and never overflowing over every attempt a policy may make (tenacity's wait_exponential
jumps from 0 to `max` once its power overflows)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st

from callpolicy import FakeClock, Registry, Wait
from callpolicy._engine.waits import compile_wait
from callpolicy._model import MAX_ATTEMPTS, MAX_MULTIPLIER, MAX_SECONDS

RegistryOf = Callable[..., Registry]
TINY = 1e-12  # the shortest duration a policy file can write ("0.000000001ms")


def waits(wait: Wait, attempts: range) -> list[float]:
    """The wait after each attempt number in `attempts`."""
    strategy = compile_wait(wait)
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    found = []
    for attempt in attempts:
        state.attempt_number = attempt
        found.append(strategy(state))
    return found


def formula(initial: float, multiplier: float, maximum: float, attempt: int) -> float:
    """initial * multiplier**(attempt - 1), capped at maximum (a power too large is past it)."""
    if initial == 0:
        return 0.0
    try:
        return min(initial * multiplier ** (attempt - 1), maximum)
    except OverflowError:
        return maximum


EVERY_ATTEMPT = range(1, MAX_ATTEMPTS + 1)
CASES = [
    (0.0, 2.0, 30.0),
    (0.0, MAX_MULTIPLIER, MAX_SECONDS),
    (0.0, 1.0, 0.0),
    (1.0, 1.0, 30.0),
    (1.0, 2.0, 30.0),
    (1.0, 3.0, 20.0),
    (0.5, 1.5, 60.0),
    (1.0, MAX_MULTIPLIER, MAX_SECONDS),
    (1.0, 2.0, 0.0),
    (TINY, MAX_MULTIPLIER, MAX_SECONDS),
    (TINY, 1.0001, MAX_SECONDS),
    (TINY, math.nextafter(1.0, 2.0), MAX_SECONDS),
    (MAX_SECONDS, 2.0, MAX_SECONDS),
    (30.0, 2.0, 10.0),  # initial above max: max throughout
]


@pytest.mark.parametrize(("initial", "multiplier", "maximum"), CASES)
def test_every_attempt_waits_the_formula_never_less_than_before(
    initial: float, multiplier: float, maximum: float
) -> None:
    wait = Wait("exponential", initial=initial, multiplier=multiplier, max=maximum)
    found = waits(wait, EVERY_ATTEMPT)
    assert found == sorted(found)
    assert all(0 <= w <= maximum for w in found)
    expected = [formula(initial, multiplier, maximum, n) for n in EVERY_ATTEMPT]
    assert found == expected


# With initial 0, tenacity jumps to max once its power overflows: the defect fixed.
@pytest.mark.parametrize(("initial", "multiplier", "maximum"), [c for c in CASES if c[0] > 0])
def test_ordinary_inputs_wait_what_tenacity_did(
    initial: float, multiplier: float, maximum: float
) -> None:
    theirs = tenacity.wait_exponential(multiplier=initial, exp_base=multiplier, max=maximum)
    ours = Wait("exponential", initial=initial, multiplier=multiplier, max=maximum)
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    expected = []
    for attempt in EVERY_ATTEMPT:
        state.attempt_number = attempt
        expected.append(theirs(state))
    assert waits(ours, EVERY_ATTEMPT) == expected


@settings(max_examples=300, deadline=None)
@given(
    initial=st.floats(0, MAX_SECONDS) | st.just(0.0) | st.floats(0, 1e-300),
    multiplier=st.floats(1, MAX_MULTIPLIER) | st.just(1.0),
    maximum=st.floats(0, MAX_SECONDS) | st.just(0.0),
    jitter=st.floats(0, 10),
    attempts=st.lists(st.integers(1, MAX_ATTEMPTS), min_size=2, max_size=10),
)
def test_waits_never_decrease_and_jitter_only_adds(
    initial: float, multiplier: float, maximum: float, jitter: float, attempts: list[int]
) -> None:
    attempts.sort()
    plain = Wait("exponential", initial=initial, multiplier=multiplier, max=maximum)
    jittered = Wait(
        "exponential", initial=initial, multiplier=multiplier, max=maximum, jitter=jitter
    )
    found = [waits(plain, range(n, n + 1))[0] for n in attempts]
    assert found == sorted(found)
    assert all(0 <= w <= maximum and math.isfinite(w) for w in found)
    for n, base in zip(attempts, found, strict=True):
        with_jitter = waits(jittered, range(n, n + 1))[0]
        assert base <= with_jitter <= base + jitter + 1e-9


def test_a_tiny_initial_grows_in_log_space_rather_than_jump() -> None:
    """Below ~1e-297 the power overflows before the wait reaches max: no jump either."""
    found = waits(Wait("exponential", initial=1e-320, multiplier=1000.0, max=60.0), EVERY_ATTEMPT)
    assert found == sorted(found) and found[-1] == 60.0
    assert found[103] == pytest.approx(1e-320 * 1e300 * 1e9, rel=1e-9)  # 1000**103: past floats


def test_an_immediate_retry_stays_immediate_over_many_attempts(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        retry.on_exceptions = ["ConnectionError"]
        stop.attempts = 2000
        wait = { strategy = "exponential", initial = "0s", multiplier = 2, max = "30s" }
        [endpoints.chained]
        retry.on_exceptions = ["ConnectionError"]
        stop.attempts = 300
        wait.strategy = "chain"
        wait.steps = [
            { strategy = "fixed", seconds = "0s" },
            { strategy = "exponential", initial = "0s", multiplier = 1000, max = "168h" },
        ]
        """
    )
    for name, attempts in (("api.get", 2000), ("api.chained", 300)):
        left = attempts - 1

        def call() -> str:
            nonlocal left
            if left:
                left -= 1
                raise ConnectionError("down")
            return "ok"

        assert registry.policy(name)(call)() == "ok"
    assert len(clock.sleeps) == 1999 + 299 and set(clock.sleeps) == {0.0}
