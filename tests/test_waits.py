"""Wait strategies: the sleeps a policy makes between attempts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st

from callpolicy import FakeClock, Registry, Wait
from callpolicy._engine.waits import compile_wait
from callpolicy._explain import describe_wait

RegistryOf = Callable[..., Registry]


def sleeps_of(registry: Registry, name: str, clock: FakeClock, failures: int) -> list[float]:
    left = failures

    def call() -> str:
        nonlocal left
        if left:
            left -= 1
            raise ConnectionError("down")
        return "ok"

    assert registry.policy(name)(call)() == "ok"
    return clock.sleeps


def policy_with(wait: str) -> str:
    return f"""
    [endpoints.get]
    retry.on_exceptions = ["ConnectionError"]
    stop.attempts = 10
    {wait}
    """


def test_fixed_wait_sleeps_the_same_each_time(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(api=policy_with('wait = { strategy = "fixed", seconds = "250ms" }'))
    assert sleeps_of(registry, "api.get", clock, 3) == [0.25, 0.25, 0.25]


def test_exponential_wait_grows_by_the_multiplier_up_to_max(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api=policy_with(
            'wait = { strategy = "exponential", initial = "1s", multiplier = 3, max = "20s" }'
        )
    )
    assert sleeps_of(registry, "api.get", clock, 5) == [1.0, 3.0, 9.0, 20.0, 20.0]


def test_none_wait_retries_at_once(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(api=policy_with('wait.strategy = "none"'))
    assert sleeps_of(registry, "api.get", clock, 2) == [0.0, 0.0]


def test_chain_uses_one_step_per_attempt_and_repeats_the_last(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api=policy_with(
            """wait.strategy = "chain"
            wait.steps = [
                { strategy = "none" },
                { strategy = "fixed", seconds = "2s" },
                { strategy = "fixed", seconds = "5s" },
            ]"""
        )
    )
    assert sleeps_of(registry, "api.get", clock, 5) == [0.0, 2.0, 5.0, 5.0, 5.0]


def test_random_wait_stays_within_its_bounds(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(
        api=policy_with('wait = { strategy = "random", min = "1s", max = "3s" }')
    )
    sleeps = sleeps_of(registry, "api.get", clock, 9)
    assert all(1.0 <= s <= 3.0 for s in sleeps)
    assert len(set(sleeps)) > 1


def test_default_wait_is_exponential_from_one_second(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(api=policy_with(""))
    assert sleeps_of(registry, "api.get", clock, 3) == [1.0, 2.0, 4.0]


def _state(attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    return state


@settings(max_examples=200)
@given(
    initial=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    maximum=st.floats(0, 1000),
    jitter=st.floats(0, 10),
    attempt=st.integers(1, 200),
)
def test_jitter_only_ever_adds_and_max_caps_before_it(
    initial: float, multiplier: float, maximum: float, jitter: float, attempt: int
) -> None:
    plain = Wait("exponential", initial=initial, multiplier=multiplier, max=maximum)
    jittered = Wait(
        "exponential", initial=initial, multiplier=multiplier, max=maximum, jitter=jitter
    )
    base = compile_wait(plain)(_state(attempt))
    with_jitter = compile_wait(jittered)(_state(attempt))
    assert 0 <= base <= maximum
    assert base <= with_jitter <= base + jitter + 1e-9


@pytest.mark.parametrize(
    ("wait", "text"),
    [
        (Wait("none"), "retry at once"),
        (Wait("fixed", seconds=2, jitter=1), "2s + up to 1s jitter"),
        (
            Wait("exponential", initial=5, multiplier=1.5, max=60),
            "5s x 1.5 per attempt, at most 60s",
        ),
        (Wait("random", min=1, max=3), "random 1s to 3s"),
        (
            Wait("chain", steps=(Wait("none"), Wait("fixed", seconds=1))),
            "chain: retry at once; 1s (last repeats)",
        ),
    ],
)
def test_waits_describe_themselves(wait: Wait, text: str) -> None:
    assert describe_wait(wait) == text


def test_an_exponential_chain_step_starts_at_its_initial(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api=policy_with(
            """wait.strategy = "chain"
            wait.steps = [
                { strategy = "none" },
                { strategy = "exponential", initial = "2s", multiplier = 2, max = "60s" },
            ]"""
        )
    )
    assert sleeps_of(registry, "api.get", clock, 5) == [0.0, 2.0, 4.0, 8.0, 16.0]
