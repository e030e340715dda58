"""The circuit breaker's state machine on a fake clock: count and time windows, min_calls,
slow calls, open_for, half-open probes; and through policies: CircuitOpen at once, no call
made and no quota taken, every retry passing the breaker again, one log line per change."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import callpolicy
from callpolicy import Breaker, CircuitOpen, FakeClock, Registry, RetryExhausted, fake_time
from callpolicy._engine.breaker import CLOSED, HALF_OPEN, OPEN, LocalBreaker
from callpolicy._engine.windows import FAILED, SLOW, CountWindow, TimeWindow

RegistryOf = Callable[..., Registry]


def record(breaker: LocalBreaker, outcomes: str, now: float = 0.0) -> None:
    """Outcomes as letters: o ok, x failed, s slow."""
    for letter in outcomes:
        generation = breaker.enter(now)
        assert generation is not None
        breaker.record(generation, {"o": 0, "x": FAILED, "s": SLOW}[letter], now)


def test_count_window_keeps_exact_totals_of_the_last_n_calls() -> None:
    window = CountWindow(3)
    for outcome in (FAILED, 0, SLOW, FAILED | SLOW, 0):
        window.add(outcome, 0.0)
    # the last three: SLOW, FAILED|SLOW, 0
    assert (window.calls, window.failures, window.slow) == (3, 1, 2)


def test_time_window_drops_whole_buckets_as_time_passes() -> None:
    window = TimeWindow(10.0)  # ten buckets of 1 s
    window.add(FAILED, 100.0)
    window.add(0, 104.5)
    assert (window.calls, window.failures) == (2, 1)
    window.expire(109.9)  # bucket 100 still inside (100..109)
    assert (window.calls, window.failures) == (2, 1)
    window.expire(110.0)
    assert (window.calls, window.failures) == (1, 0)
    window.expire(500.0)
    assert (window.calls, window.failures, window.slow) == (0, 0, 0)


def test_stays_closed_below_min_calls_whatever_fails() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=10, min_calls=5))
    record(breaker, "xxxx")
    assert breaker.state == CLOSED
    record(breaker, "x")
    assert breaker.state == OPEN


def test_opens_at_the_failure_ratio_over_the_count_window() -> None:
    breaker = LocalBreaker(Breaker("b", failure_ratio=0.5, window_calls=4, min_calls=4))
    record(breaker, "oooxox")  # window: o x o x... last four: o, x, o, x = 2 of 4
    assert breaker.state == OPEN


def test_old_failures_leave_the_count_window() -> None:
    breaker = LocalBreaker(Breaker("b", failure_ratio=0.5, window_calls=4, min_calls=4))
    record(breaker, "xooo")  # 1 of 4
    record(breaker, "oo")
    assert breaker.state == CLOSED
    record(breaker, "x")  # last four: o o o x, 1 of 4
    assert breaker.state == CLOSED


def test_time_window_forgets_failures_older_than_it() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=None, window_seconds=10.0, min_calls=3))
    record(breaker, "xx", now=0.0)
    record(breaker, "x", now=11.0)  # the first two have left the window
    assert breaker.state == CLOSED
    record(breaker, "x", now=12.0)
    record(breaker, "x", now=13.0)
    assert breaker.state == OPEN


def test_opens_on_slow_calls_at_the_slow_call_ratio() -> None:
    breaker = LocalBreaker(Breaker("b", slow_call_ratio=0.5, window_calls=4, min_calls=4))
    record(breaker, "osos")
    assert breaker.state == OPEN


def test_refuses_until_open_for_then_lets_exactly_probes_trial_calls_through() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=2, min_calls=2, open_for=30.0, probes=2))
    record(breaker, "xx", now=100.0)
    assert breaker.enter(129.9) is None
    assert breaker.retry_in(120.0) == pytest.approx(10.0)
    first, second = breaker.enter(130.0), breaker.enter(130.0)
    assert breaker.state == HALF_OPEN
    assert first is not None and second is not None
    assert breaker.enter(130.0) is None  # both trial calls are out
    assert breaker.retry_in(130.0) == 0.0
    breaker.record(first, 0, 131.0)
    assert breaker.state == HALF_OPEN
    breaker.record(second, 0, 131.0)
    assert breaker.state == CLOSED
    record(breaker, "x", now=132.0)  # the window started afresh: one failure of one call
    assert breaker.state == CLOSED


def test_trial_calls_failing_at_failure_ratio_open_it_again_for_open_for() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=2, min_calls=2, open_for=30.0, probes=3))
    record(breaker, "xx", now=0.0)
    first, probe = breaker.enter(30.0), breaker.enter(30.0)
    late = breaker.enter(30.0)
    assert first is not None and probe is not None and late is not None
    breaker.record(first, FAILED, 31.0)
    assert breaker.state == HALF_OPEN  # 1 of 3 failed: under failure_ratio 0.5 so far
    breaker.record(probe, FAILED, 31.0)  # 2 of 3: at least 0.5 whatever the third does
    assert breaker.state == OPEN
    assert breaker.retry_in(31.0) == pytest.approx(30.0)
    breaker.record(late, 0, 32.0)  # a trial call of the half-open state left: ignored
    assert breaker.state == OPEN
    assert breaker.enter(60.9) is None


def test_trial_calls_under_failure_ratio_close_it_as_resilience4j_does() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=2, min_calls=2, probes=4))
    record(breaker, "xx", now=0.0)
    record(breaker, "oxo", now=30.0)
    assert breaker.state == HALF_OPEN
    record(breaker, "o", now=30.0)  # 1 of 4 failed: 25% < 50%
    assert breaker.state == CLOSED


def test_a_cancelled_trial_call_is_given_back() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=1, min_calls=1, open_for=1.0, probes=1))
    record(breaker, "x")
    probe = breaker.enter(1.0)
    assert probe is not None
    assert breaker.enter(1.0) is None
    breaker.cancel(probe)
    assert breaker.enter(1.0) is not None


def test_an_outcome_of_a_call_entered_before_the_breaker_opened_is_ignored() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=2, min_calls=2, open_for=5.0, probes=1))
    slow_one = breaker.enter(0.0)
    assert slow_one is not None
    record(breaker, "xx")
    breaker.record(slow_one, 0, 1.0)
    assert breaker.state == OPEN


# -- through policies ----------------------------------------------------------------------------

POLICY = """
[breakers.api]
window = 4
min_calls = 4
open_for = "30s"
probes = 2
{extra}
[quotas.q]
limit = "1000/1s"

[endpoints.get]
breaker = "api"
quotas = ["q"]
retry.on_exceptions = ["ConnectionError"]
retry.on_status = [503]
stop.attempts = {attempts}
wait = {{ strategy = "fixed", seconds = "1s" }}

[endpoints.other]
breaker = "api"
"""


class Flaky:
    def __init__(self) -> None:
        self.calls = 0
        self.failing = True

    def __call__(self) -> str:
        self.calls += 1
        if self.failing:
            raise ConnectionError("refused")
        return "ok"


def test_open_breaker_raises_at_once_naming_policy_breaker_and_when_without_calling_or_taking_quota(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(extra="", attempts=1))
    flaky = Flaky()
    get = registry.policy("svc.get")(flaky)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            get()
    admitted = registry.quota_counters()["svc.q"].admitted
    with pytest.raises(CircuitOpen) as raised:
        get()
    assert str(raised.value) == (
        "svc.get: circuit breaker svc.api is open and probes again in 30.000s; call not made"
    )
    assert (raised.value.policy, raised.value.breaker) == ("svc.get", "svc.api")
    assert raised.value.retry_in == pytest.approx(30.0)
    assert flaky.calls == 4
    assert registry.quota_counters()["svc.q"].admitted == admitted == 4


def test_a_named_breaker_is_shared_by_the_policies_naming_it(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(extra="", attempts=1))
    get = registry.policy("svc.get")(Flaky())

    def fine() -> str:
        return "fine"

    other = registry.policy("svc.other")(fine)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            get()
    with pytest.raises(CircuitOpen, match=r"svc\.other: circuit breaker svc\.api is open"):
        other()


def test_half_open_closes_after_probes_successes(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(svc=POLICY.format(extra="", attempts=1))
    flaky = Flaky()
    get = registry.policy("svc.get")(flaky)
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        for _ in range(4):
            with pytest.raises(ConnectionError):
                get()
        clock.advance(30.0)
        flaky.failing = False
        assert get() == "ok"
        assert get() == "ok"
        assert get() == "ok"
    lines = [r.getMessage() for r in caplog.records if "circuit breaker" in r.getMessage()]
    assert lines == [
        "circuit breaker svc.api open: 4 of 4 calls failed (100% >= failure_ratio 0.5) over "
        "the last 4 calls; probing again in 30s",
        "circuit breaker svc.api half-open: open_for 30s passed; letting 2 trial calls",
        "circuit breaker svc.api closed: 2 trial calls succeeded",
    ]


def test_retries_pass_the_breaker_again_and_fail_fast_chained_from_the_last_error(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(extra="", attempts=10))
    flaky = Flaky()
    get = registry.policy("svc.get")(flaky)
    with pytest.raises(CircuitOpen) as raised:
        get()
    # the fourth attempt opened it: no sleep before a retry it would refuse
    assert flaky.calls == 4
    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert registry.quota_counters()["svc.q"].admitted == 4


def test_a_retry_after_open_for_becomes_a_trial_call(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    text = POLICY.format(extra="", attempts=10).replace('seconds = "1s"', 'seconds = "40s"')
    registry = registry_of(svc=text)
    calls = 0

    def four_failures() -> str:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise ConnectionError("refused")  # the fourth opens the breaker
        return "ok"

    get = registry.policy("svc.get")(four_failures)
    assert get() == "ok"  # 40 s after it opened for 30 s: the retry went as a trial call
    assert clock.sleeps == [40.0] * 4
    assert registry.runner("svc.get").breaker.breaker.state == HALF_OPEN  # type: ignore[union-attr]


def test_results_with_retried_statuses_count_as_failures(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    class Response:
        status_code = 503

    registry = registry_of(svc=POLICY.format(extra="", attempts=1))
    get = registry.policy("svc.get")(Response)
    for _ in range(4):
        with pytest.raises(RetryExhausted):
            get()
    with pytest.raises(CircuitOpen):
        get()


def test_errors_the_policy_does_not_retry_are_not_failures_by_default(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(extra="", attempts=1))

    def bug() -> None:
        raise KeyError("x")

    get = registry.policy("svc.get")(bug)
    for _ in range(10):
        with pytest.raises(KeyError):
            get()
    assert registry.policy("svc.get")(lambda: "ok")() == "ok"


def test_on_exceptions_and_on_status_replace_the_default(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(extra='on_exceptions = ["KeyError"]', attempts=1))
    flaky = Flaky()
    get = registry.policy("svc.get")(flaky)
    for _ in range(6):
        with pytest.raises(ConnectionError):
            get()  # retried by the policy, but not a failure to this breaker
    assert registry.runner("svc.get").breaker.breaker.state == CLOSED  # type: ignore[union-attr]


def test_reloading_an_unchanged_breaker_keeps_its_state(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(extra="", attempts=1))
    get = registry.policy("svc.get")(Flaky())
    for _ in range(4):
        with pytest.raises(ConnectionError):
            get()
    registry.load()
    with pytest.raises(CircuitOpen):
        get()


async def test_async_calls_pass_the_breaker_the_same_way(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=POLICY.format(extra="", attempts=10))
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("refused")

    get = registry.policy("svc.get")(down)
    with pytest.raises(CircuitOpen) as raised:
        await get()
    assert calls == 4
    assert isinstance(raised.value.__cause__, ConnectionError)
    with pytest.raises(CircuitOpen):
        await get()
    assert calls == 4


def test_a_breaker_opened_by_other_calls_during_the_sleep_refuses_the_retry(
    registry_of: RegistryOf,
) -> None:
    registry = registry_of(svc=POLICY.format(extra="", attempts=5))
    flaky = Flaky()
    get = registry.policy("svc.get")(flaky)
    circuit = registry.runner("svc.get").breaker
    assert circuit is not None
    assert isinstance(circuit.breaker, LocalBreaker)
    state: LocalBreaker = circuit.breaker

    class OthersFailMeanwhile(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            for _ in range(4):  # other calls fail while this one sleeps: it opens
                state.record(state.generation, FAILED, self.now())

    clock = OthersFailMeanwhile()
    with fake_time(clock), pytest.raises(CircuitOpen) as raised:
        get()
    assert flaky.calls == 1  # the retry was refused, not made
    assert clock.sleeps == [1.0]
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert registry.quota_counters()["svc.q"].admitted == 1


def test_slow_calls_through_a_policy_open_it_at_the_slow_call_ratio(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    extra = 'slow_call = "2s"\nslow_call_ratio = 0.5'
    registry = registry_of(svc=POLICY.format(extra=extra, attempts=1))

    def slow() -> str:
        clock.advance(2.0)  # exactly slow_call: slow
        return "ok"

    def quick() -> str:
        clock.advance(1.999)
        return "ok"

    slow_get, quick_get = registry.policy("svc.get")(slow), registry.policy("svc.get")(quick)
    for fn in (quick_get, slow_get, quick_get):
        assert fn() == "ok"
    assert slow_get() == "ok"  # 2 of 4 slow: 50%
    with pytest.raises(CircuitOpen):
        quick_get()


def test_give_ups_by_the_breaker_and_the_budget_are_events_and_counted(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    text = POLICY.format(extra="", attempts=10) + "\n[budgets.b]\nmax_tokens = 4\n"
    text = text.replace('breaker = "api"\nquotas', 'breaker = "api"\nbudget = "b"\nquotas')
    registry = registry_of(svc=text)
    events: list[callpolicy.GaveUp] = []
    remove = callpolicy.add_hook(events.append, ["give_up"])
    try:
        with pytest.raises(ConnectionError):
            registry.policy("svc.get")(Flaky())()  # 4 tokens: one retry, then the budget
    finally:
        remove()
    assert [(e.policy, e.attempt, e.reason) for e in events] == [("svc.get", 2, "budget")]
    assert events[0].error == "ConnectionError: refused"
    assert registry.stats()["svc.get"].give_ups == 1


def test_a_retry_refused_after_its_sleep_is_a_give_up_event(registry_of: RegistryOf) -> None:
    registry = registry_of(svc=POLICY.format(extra="", attempts=5))
    get = registry.policy("svc.get")(Flaky())
    circuit = registry.runner("svc.get").breaker
    assert circuit is not None and isinstance(circuit.breaker, LocalBreaker)
    state: LocalBreaker = circuit.breaker

    class OthersFailMeanwhile(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            for _ in range(4):
                state.record(state.generation, FAILED, self.now())

    events: list[callpolicy.GaveUp] = []
    remove = callpolicy.add_hook(events.append, ["give_up"])
    try:
        with fake_time(OthersFailMeanwhile()), pytest.raises(CircuitOpen):
            get()
    finally:
        remove()
    assert [(e.attempt, e.reason, e.error) for e in events] == [
        (1, "circuit open", "ConnectionError: refused")
    ]


@given(st.lists(st.sampled_from([0, FAILED, SLOW]), max_size=60), st.integers(0, 40))
def test_fast_successes_added_at_once_are_the_same_as_one_by_one(
    outcomes: list[int], successes: int
) -> None:
    eager, lazy = CountWindow(7), CountWindow(7)
    for outcome in outcomes:
        eager.add(outcome, 0.0)
        lazy.add(outcome, 0.0)
    for _ in range(successes):
        eager.add(0, 0.0)
    lazy.add_successes(successes)
    assert (lazy.calls, lazy.failures, lazy.slow) == (eager.calls, eager.failures, eager.slow)
    lazy.add(FAILED, 0.0)
    eager.add(FAILED, 0.0)
    assert bytes(lazy.ring) == bytes(eager.ring) or lazy.calls == eager.calls == 7
    assert (lazy.calls, lazy.failures, lazy.slow) == (eager.calls, eager.failures, eager.slow)


def test_a_settled_breaker_counts_fast_successes_without_its_lock_and_still_opens() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=10, min_calls=4, failure_ratio=0.5))
    record(breaker, "oooo")  # min_calls reached: settled
    assert breaker.settled
    record(breaker, "oooooo")  # lock-free
    assert breaker.counts() == (10, 0, 0)
    record(breaker, "xxxx")
    assert breaker.state == "closed" and breaker.counts() == (10, 4, 0)
    record(breaker, "x")  # 5 of the last 10 failed
    assert breaker.state == "open"


# -- found by review ------------------------------------------------------------------------


def ok() -> str:
    return "ok"


def test_exact_ratios_open_it_counted_in_thousandths() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=100, min_calls=100, failure_ratio=0.07))
    record(breaker, "o" * 93 + "x" * 7)  # 7 of 100: 0.07 * 100 is 7.000000000000001 in floats
    assert breaker.state == OPEN


def test_a_count_window_under_the_default_min_calls_still_opens() -> None:
    breaker = LocalBreaker(Breaker("b", window_calls=10))  # min_calls 20 by default
    assert Breaker("b", window_calls=10).least_calls == 10
    record(breaker, "x" * 10)
    assert breaker.state == OPEN


def test_half_open_whose_trial_calls_never_end_opens_again() -> None:
    model = Breaker("b", window_calls=2, min_calls=2, open_for=30.0, slow_call=60.0, probes=1)
    breaker = LocalBreaker(model)
    record(breaker, "xx", now=0.0)
    assert breaker.enter(30.0) is not None  # the trial call: it never reports
    assert breaker.enter(89.0) is None  # its place is held...
    assert breaker.state == HALF_OPEN
    assert breaker.enter(90.0) is None  # ...for max(open_for, slow_call): then open again
    assert breaker.state == OPEN and breaker.retry_in(90.0) == pytest.approx(30.0)
    assert breaker.enter(120.0) is not None  # and it probes again


SHARED = """
[breakers.api]
window = 6
min_calls = 6
probes = 1
[endpoints.get]
breaker = "api"
retry.on_exceptions = ["ConnectionError"]
wait.strategy = "none"
stop.attempts = 1
[endpoints.create]
breaker = "api"
"""


def test_errors_a_policy_does_not_judge_do_not_dilute_a_shared_breaker(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=SHARED)

    def down() -> None:
        raise ConnectionError("down")

    get, create = registry.policy("svc.get")(down), registry.policy("svc.create")(down)
    for _ in range(6):
        for fn in (create, create, get):  # creates retry nothing: their errors say nothing
            with pytest.raises(ConnectionError):
                fn()
    with pytest.raises(CircuitOpen):  # 6 of the last 6 judged calls failed
        create()


def test_a_nested_call_refused_by_the_same_breaker_is_no_outcome_of_the_outer_one(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=SHARED)
    inner = registry.policy("svc.get")(ok)

    @registry.policy("svc.create")
    def outer() -> object:
        return inner()

    state = registry.runner("svc.get").breaker.breaker  # type: ignore[union-attr]
    for _ in range(6):
        with pytest.raises(ConnectionError):
            registry.policy("svc.get")(Flaky())()
    assert state.state == OPEN
    clock.advance(30)
    with pytest.raises(CircuitOpen):
        outer()  # the outer call took the trial call; the inner one was refused
    assert state.state == HALF_OPEN  # not closed by a "success" that reached no server


def test_slow_calls_are_timed_from_the_call_not_the_quota_wait(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        svc='[endpoints.get]\nquotas = [{ limit = "1/1s", max_wait = "10s" }]\n'
        'breaker = { window = 4, min_calls = 4, slow_call = "1s", slow_call_ratio = 0.5 }\n'
    )
    get = registry.policy("svc.get")(ok)
    for _ in range(8):  # each waits about 1 s for the quota, then returns at once
        assert get() == "ok"
    assert registry.stats()["svc.get"].breaker == "closed"


def test_circuit_open_after_a_retried_value_keeps_the_value(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    class Response:
        status_code = 503

    registry = registry_of(svc=POLICY.format(extra="", attempts=3))
    other = registry.policy("svc.other")(Flaky())
    get = registry.policy("svc.get")(Response)
    with pytest.raises(RetryExhausted):
        get()  # three 503s: the window holds 3 failures of 4
    with pytest.raises(CircuitOpen) as refused:
        get()  # the fourth opens it; the retry is refused, chained from the value
    cause = refused.value.__cause__
    assert isinstance(cause, RetryExhausted) and cause.last_result.status_code == 503
    del other
