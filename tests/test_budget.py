"""The retry budget (gRPC's retry throttling, gRFC A6): tokens taken by retried failures,
given back by successes, retries only above half; first attempts always go; logged once
per change; shared by name."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from callpolicy import Budget, FakeClock, Registry, RetryExhausted
from callpolicy._engine.budget import LocalBudget

RegistryOf = Callable[..., Registry]


def test_retries_go_only_while_more_than_half_the_tokens_are_left() -> None:
    budget = LocalBudget(Budget("b", max_tokens=10, token_ratio=0.5))
    assert [budget.failed() for _ in range(6)] == [True, True, True, True, False, False]
    assert budget.left == 4.0


def test_successes_give_token_ratio_back_exactly_up_to_max_tokens() -> None:
    budget = LocalBudget(Budget("b", max_tokens=10, token_ratio=0.1))
    for _ in range(5):
        budget.failed()
    assert budget.left == 5.0
    for _ in range(3):
        budget.succeeded()
    assert budget.left == pytest.approx(5.3)
    assert budget.tokens == 5300  # thousandths: no drift
    for _ in range(1000):
        budget.succeeded()
    assert budget.left == 10.0


def test_exhausted_and_available_again_are_each_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = LocalBudget(Budget("svc.b", max_tokens=4, token_ratio=1))
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        for _ in range(5):
            budget.failed()
        for _ in range(5):
            budget.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "retry budget svc.b exhausted: 2.0 of 4 tokens left (retries go above 2); "
        "first attempts still go, retries fail fast",
        "retry budget svc.b available again: 3.0 of 4 tokens",
    ]


POLICY = """
[budgets.shared]
max_tokens = 6
token_ratio = 1

[endpoints.get]
budget = "shared"
retry.on_exceptions = ["ConnectionError"]
stop.attempts = 5
wait = { strategy = "fixed", seconds = "1s" }

[endpoints.poll]
budget = "shared"
retry.on_status = [503]
stop.attempts = 5
wait = { strategy = "none" }
"""


def test_an_exhausted_budget_stops_retries_with_the_last_error_saying_so(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY)
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"refused {calls}")

    get = registry.policy("svc.get")(down)
    with pytest.raises(ConnectionError) as raised:
        get()
    # 6 tokens: retries go while more than 3 are left: after failures 1 and 2 (5, 4 left)
    assert calls == 3
    assert str(raised.value) == "refused 3"
    assert getattr(raised.value, "__notes__", None) == [
        "callpolicy: svc.get did not retry: retry budget svc.shared exhausted "
        "(3.0 of 6 tokens left, retries go above 3)"
    ]
    with pytest.raises(ConnectionError):
        get()  # the first attempt still goes, no retry
    assert calls == 4


def test_a_budget_is_shared_by_name_and_stops_returned_values_with_retry_exhausted(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    class Busy:
        status_code = 503

    registry = registry_of(svc=POLICY)

    def down() -> None:
        raise ConnectionError("refused")

    get = registry.policy("svc.get")(down)
    with pytest.raises(ConnectionError):
        get()
    poll = registry.policy("svc.poll")(Busy)
    with pytest.raises(RetryExhausted) as raised:
        poll()
    assert raised.value.attempts == 1
    assert "retry budget svc.shared exhausted" in raised.value.reason


def test_successes_refill_the_budget_so_retries_go_again(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY)
    failing = True
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if failing:
            raise ConnectionError("refused")
        return "ok"

    get = registry.policy("svc.get")(flaky)
    with pytest.raises(ConnectionError):
        get()  # drains it to 3
    failing = False
    assert get() == "ok"  # 4 tokens: a retry may go again
    failing = True
    calls = 0
    with pytest.raises(ConnectionError):
        get()  # 4 -> 3 at the first failure: no retry
    assert calls == 1


async def test_async_calls_spend_the_same_budget(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(svc=POLICY)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("refused")

    get = registry.policy("svc.get")(down)
    with pytest.raises(ConnectionError):
        await get()
    assert calls == 3
