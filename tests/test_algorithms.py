"""The in-memory counters, at their window boundaries, and their bounds as properties."""

from __future__ import annotations

import bisect
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callpolicy._quotas.algorithms import EPS, FixedWindow, InFlight, SlidingWindow
from callpolicy._quotas.buckets import Bucket


def test_sliding_window_frees_a_slot_exactly_one_period_after_it_was_taken() -> None:
    window = SlidingWindow(3, 1.0)
    for at in (0.0, 0.2, 0.4):
        assert window.wait(at, 1) == 0.0
        window.take(at, 1)
    assert window.wait(0.5, 1) == pytest.approx(0.5)
    assert window.wait(0.999, 1) == pytest.approx(0.001)
    assert window.wait(1.0, 1) == 0.0  # the call at 0.0 left the window (1.0 - 1, 1.0]


def test_sliding_window_waits_for_enough_cost_to_leave() -> None:
    window = SlidingWindow(10, 1.0)
    window.take(0.0, 4)
    window.take(0.5, 4)
    assert window.wait(0.6, 6) == pytest.approx(0.4)  # the first leaving is enough: at 1.0
    assert window.wait(0.6, 7) == pytest.approx(0.9)  # needs both to leave: until 1.5
    assert window.wait(0.6, 2) == 0.0
    assert window.wait(0.6, 11) == math.inf


def test_sliding_window_refund_and_adjust_change_what_counts() -> None:
    window = SlidingWindow(10, 1.0)
    entry = window.take(0.0, 8)
    assert window.wait(0.1, 5) > 0
    window.adjust(entry, 3)
    assert window.wait(0.1, 5) == 0.0
    window.refund(entry)
    assert window.total == 0.0
    window.adjust(entry, 9)  # an expired or refunded entry ... still adjustable while live
    window.wait(5.0, 1)  # expires it
    window.adjust(entry, 1)
    assert window.total == 0.0


def test_fixed_window_admits_2n_across_a_boundary() -> None:
    window = FixedWindow(3, 1.0)
    for _ in range(3):
        window.take(0.9, 1)  # first window opens at 0.9
    assert window.wait(1.0, 1) == pytest.approx(0.9)
    assert window.wait(1.9, 1) == 0.0  # a new window: 3 more within 0.1 s of the last 3
    for _ in range(3):
        window.take(1.9, 1)
    assert window.wait(1.95, 1) == pytest.approx(0.95)


def test_token_bucket_refills_evenly() -> None:
    bucket = Bucket(0.5, 4, 0.0, sized=True)  # 2 tokens a second, 4 at most
    for _ in range(4):
        bucket.take(0.0, 1)
    assert bucket.wait(0.0, 1) == pytest.approx(0.5)
    assert bucket.wait(0.5, 1) == 0.0
    assert bucket.wait(0.5, 2) == pytest.approx(0.5)
    assert bucket.wait(100.0, 4) == 0.0
    assert bucket.wait(100.0, 5) == math.inf


def test_in_flight_slots_come_back_when_released() -> None:
    slots = InFlight(2)
    first = slots.take(0.0, 1)
    slots.take(0.0, 1)
    assert slots.wait(0.0, 1) is None
    slots.refund(first)
    slots.refund(first)  # twice is once
    assert slots.wait(0.0, 1) == 0.0
    assert slots.busy == 1


CALLS = st.lists(
    st.tuples(st.sampled_from([0.0, 0.001, 0.05, 0.25, 0.5, 0.999, 1.0]), st.integers(1, 4)),
    max_size=60,
)


def _admit_all(
    counter: SlidingWindow | Bucket | FixedWindow, calls: list[tuple[float, int]]
) -> list[tuple[float, int]]:
    """Admit each call as soon as the counter allows; return (time, cost) admitted."""
    now, admitted = 0.0, []
    for gap, cost in calls:
        now += gap
        wait = counter.wait(now, cost)
        assert wait is not None
        if math.isinf(wait):
            continue
        if wait > 0:
            now += wait
            assert counter.wait(now, cost) == 0.0  # the wait it gave was enough
        counter.take(now, cost)
        admitted.append((now, cost))
    return admitted


def _most_in_any_window(admitted: list[tuple[float, int]], period: float) -> float:
    """The most cost admitted in any window [t, t + period), to the nanosecond (EPS)."""
    times = [t for t, _ in admitted]
    most = 0.0
    for index, (start, _) in enumerate(admitted):
        end = bisect.bisect_left(times, start + period - EPS)
        most = max(most, sum(cost for _, cost in admitted[index:end]))
    return most


@settings(max_examples=300)
@given(limit=st.integers(1, 8), calls=CALLS)
def test_sliding_window_never_admits_more_than_n_in_any_window(
    limit: int, calls: list[tuple[float, int]]
) -> None:
    admitted = _admit_all(SlidingWindow(limit, 1.0), calls)
    assert _most_in_any_window(admitted, 1.0) <= limit


@settings(max_examples=300)
@given(limit=st.integers(1, 8), calls=CALLS)
def test_token_bucket_never_admits_more_than_2n_in_any_window(
    limit: int, calls: list[tuple[float, int]]
) -> None:
    admitted = _admit_all(Bucket(1.0 / limit, limit, 0.0, sized=True), calls)
    assert _most_in_any_window(admitted, 1.0) <= 2 * limit


@settings(max_examples=300)
@given(limit=st.integers(1, 8), calls=CALLS)
def test_fixed_window_never_admits_more_than_2n_in_any_window(
    limit: int, calls: list[tuple[float, int]]
) -> None:
    admitted = _admit_all(FixedWindow(limit, 1.0), calls)
    assert _most_in_any_window(admitted, 1.0) <= 2 * limit


@settings(max_examples=300)
@given(limit=st.integers(1, 8), calls=CALLS)
def test_fixed_window_admits_exactly_n_within_each_of_its_windows(
    limit: int, calls: list[tuple[float, int]]
) -> None:
    """A window opens at the first call after the previous one closed and admits N: a call
    waits only when its cost does not fit beside what the open window holds, and then
    exactly until that window closes."""
    window = FixedWindow(limit, 1.0)
    now, start, held = 0.0, -math.inf, 0
    for gap, cost in calls:
        now += gap
        wait = window.wait(now, cost)
        if math.isinf(wait):
            assert cost > limit
            continue
        is_open = now < start + 1.0 - EPS
        if wait > 0:
            assert is_open and held + cost > limit  # refused only when full
            assert now + wait == pytest.approx(start + 1.0)  # until its window closes
            now += wait
            is_open = False
        else:
            assert not is_open or held + cost <= limit
        window.take(now, cost)
        if not is_open:
            start, held = now, 0
        held += cost
        assert held <= limit


def test_the_window_count_catches_one_call_too_many() -> None:
    """The bound the properties above check is not met trivially."""
    admitted = [(0.0, 2), (0.5, 1), (0.999, 1), (1.0, 3)]
    assert _most_in_any_window(admitted, 1.0) == 5  # [0.5, 1.5): 1 + 1 + 3
    assert _most_in_any_window(admitted, 1.1) == 7
    assert _most_in_any_window([(0.0, 1), (1.0 - EPS / 2, 1)], 1.0) == 1  # to the nanosecond
