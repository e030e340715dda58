"""The bucket counter (GCRA) against models of the servers it must never be refused by:
nginx's limit_req (its integer arithmetic, in whole milliseconds) and a token bucket of
floating tokens, with each call reaching the server up to `guard` later than admitted."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callpolicy._model import Quota, Rate
from callpolicy._quotas.algorithms import Entry
from callpolicy._quotas.buckets import LATE, Bucket
from callpolicy._quotas.memory import make_counter


class NginxLimitReq:
    """ngx_http_limit_req_module's lookup: `excess` in 1/1000 requests, time in whole ms,
    refused requests not counted (`rate` in r/s, `burst` in requests)."""

    def __init__(self, rate: int, burst: int, per_minute: bool = False) -> None:
        # ngx_http_limit_req_zone: rate * 1000 / 60 for r/m, rounded down
        self.rate, self.burst = rate * 1000 // (60 if per_minute else 1), burst * 1000
        self.last: int | None = None
        self.excess = 0

    def accepts(self, now_ms: int) -> bool:
        if self.last is None:
            self.last, self.excess = now_ms, 0
            return True
        ms = max(now_ms - self.last, 0)
        excess = max(self.excess - self.rate * ms // 1000 + 1000, 0)
        if excess > self.burst:
            return False
        self.excess = excess
        if ms:
            self.last = now_ms
        return True


class FloatTokenBucket:
    def __init__(self, size: float, per_second: float) -> None:
        self.size, self.rate = size, per_second
        self.tokens, self.stamp = size, 0.0

    def accepts(self, now: float, cost: float = 1.0) -> bool:
        self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens + 1e-9 < cost:
            return False
        self.tokens -= cost
        return True


GAPS = st.lists(st.floats(0.0, 0.3), min_size=1, max_size=80)
DELAYS = st.lists(st.floats(0.0, 1.0), min_size=80, max_size=80)


def _admit(bucket: Bucket, gaps: list[float]) -> list[float]:
    """Each call arrives `gap` after the previous one was admitted and goes when allowed."""
    now, admitted = 0.0, []
    for gap in gaps:
        now += gap
        wait = bucket.wait(now, 1)
        now += wait
        assert bucket.wait(now, 1) == 0.0  # the wait it gave was enough
        bucket.take(now, 1)
        admitted.append(now)
    return admitted


@settings(max_examples=300, deadline=None)
@given(burst=st.integers(0, 6), gaps=GAPS, delays=DELAYS)
def test_a_leaky_bucket_is_never_refused_by_nginx_within_its_guard(
    burst: int, gaps: list[float], delays: list[float]
) -> None:
    rate, guard = 10, 0.003
    bucket = Bucket(1 / rate, burst, guard, sized=False)
    nginx = NginxLimitReq(rate, burst)
    for at, delay in zip(_admit(bucket, gaps), delays, strict=False):
        # nginx stamps the time it reads the request, in whole ms: up to `guard` - 1 ms late
        arrival = at + delay * (guard - 0.001)
        assert nginx.accepts(math.floor(arrival * 1000))


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 8), gaps=GAPS, delays=DELAYS)
def test_a_token_bucket_is_never_refused_by_a_bucket_of_its_size_within_its_guard(
    size: int, gaps: list[float], delays: list[float]
) -> None:
    guard = 0.005
    bucket = Bucket(0.1, size, guard, sized=True)
    server = FloatTokenBucket(size, 10.0)
    for at, delay in zip(_admit(bucket, gaps), delays, strict=False):
        assert server.accepts(at + delay * guard)


def test_burst_zero_spaces_calls_one_interval_plus_the_guard_apart() -> None:
    admitted = _admit(Bucket(0.1, 0, 0.002, sized=False), [0.0] * 5)
    assert [round(b - a, 6) for a, b in itertools.pairwise(admitted)] == [0.102] * 4


def test_with_burst_room_the_steady_pace_is_the_full_rate() -> None:
    """nginx burst=5: 6 at once, then one per interval; the guard costs one wait, not a rate
    (it keeps 2 ms of the room unused, so the 6th call of the burst waits 2 ms)."""
    admitted = _admit(Bucket(0.1, 5, 0.002, sized=False), [0.0] * 56)
    assert admitted[:6] == [0.0] * 5 + [pytest.approx(0.002)]
    assert admitted[6] == pytest.approx(0.102)
    assert admitted[-1] == pytest.approx(5.002)  # 50 more at 10/s


def test_a_leaky_bucket_takes_a_costly_call_when_its_room_allows_then_drains_it() -> None:
    bucket = Bucket(0.1, 4, 0.0, sized=False)
    assert bucket.wait(0.0, 5) == 0.0
    bucket.take(0.0, 5)
    assert bucket.wait(0.0, 1) == pytest.approx(0.1)


def test_a_token_bucket_never_admits_a_cost_above_its_size() -> None:
    assert Bucket(0.1, 4, 0.0, sized=True).wait(100.0, 5) == math.inf


def test_refunds_give_the_room_back() -> None:
    bucket = Bucket(0.1, 0, 0.0, sized=False)
    entry = bucket.take(0.0, 1)
    assert bucket.wait(0.0, 1) == pytest.approx(0.1)
    bucket.refund(entry)
    assert bucket.wait(0.0, 1) == 0.0


@pytest.mark.parametrize(
    ("quota", "at_first", "interval"),
    [
        (Quota("q", Rate(10, 1.0), algorithm="leaky-bucket", guard=0.0), 1, 0.1),
        (Quota("q", Rate(10, 1.0), algorithm="leaky-bucket", burst=5, guard=0.0), 6, 0.1),
        (Quota("q", Rate(10, 1.0), algorithm="token-bucket", guard=0.0), 10, 0.1),
        (Quota("q", Rate(10, 1.0), algorithm="token-bucket", burst=3, guard=0.0), 3, 0.1),
        (Quota("q", Rate(10, 1.0), spread=True, guard=0.01), 1, 0.101),
        (Quota("q", Rate(10, 1.0), algorithm="fixed-window", spread=True, guard=0.0), 1, 0.1),
    ],
)
def test_each_declaration_makes_the_bucket_it_says(
    quota: Quota, at_first: int, interval: float
) -> None:
    counter = make_counter(quota)
    at_once = 0
    while at_once < 20 and counter.wait(0.0, 1) == 0.0:
        counter.take(0.0, 1)
        at_once += 1
    assert at_once == at_first
    # once the room is used, one call per interval
    for _ in range(3):
        wait = counter.wait(0.0, 1)
        assert isinstance(wait, float)
        counter.take(wait, 1)
    assert counter.wait(0.0, 1) == pytest.approx(4 * interval)  # 3 more took 3 intervals


def test_a_call_that_ends_late_moves_the_meter_as_if_counted_at_its_end() -> None:
    """Its sending may have been delayed: the server may have counted it as late as its end."""
    bucket = Bucket(0.1, 0, 0.0, sized=False)
    entry = bucket.take(0.0, 1)
    bucket.end(entry, 0.03)
    assert bucket.wait(0.0, 1) == pytest.approx(0.13)


def test_calls_ending_as_soon_as_admitted_cost_nothing() -> None:
    bucket = Bucket(0.1, 5, 0.0, sized=False)
    for _ in range(6):
        bucket.end(bucket.take(0.0, 1), 0.0)
    assert bucket.wait(0.0, 1) == pytest.approx(0.1)


def test_a_late_call_carries_the_calls_admitted_behind_it() -> None:
    """The burst's first call reached the server only as it ended (a new connection): the
    five admitted behind it may have followed it there, so the room comes back 50 ms later."""
    bucket = Bucket(0.1, 5, 0.0, sized=False)
    entries = [bucket.take(0.0, 1) for _ in range(6)]
    bucket.end(entries[0], 0.05)
    assert bucket.wait(0.0, 1) == pytest.approx(0.15)


def test_a_long_call_is_taken_as_counted_50ms_after_its_admission_at_the_latest() -> None:
    bucket = Bucket(0.1, 0, 0.0, sized=False)
    bucket.end(bucket.take(0.0, 1), 5.0)
    assert bucket.wait(0.0, 1) == pytest.approx(0.15)


def test_overlapping_long_calls_keep_the_rate() -> None:
    """Calls of 1 s admitted 100 ms apart: each end moves the meter to one interval after
    it, not by the call's length (the rate stays 10 per second, not 1)."""
    bucket = Bucket(0.1, 0, 0.0, sized=False)
    now, ends = 0.0, list[tuple[float, Entry]]()
    for _ in range(30):
        while ends and ends[0][0] <= now:
            at, entry = ends.pop(0)
            bucket.end(entry, at)
        now += bucket.wait(now, 1)
        ends.append((now + 1.0, bucket.take(now, 1)))
    assert now == pytest.approx(3.0, abs=0.15)  # 30 calls in about 3 s


def test_a_cost_above_what_the_bucket_can_ever_hold_never_fits() -> None:
    assert Bucket(0.1, 5, 0.0, sized=False).wait(0.0, 6) == 0.0  # the burst and the call
    assert Bucket(0.1, 5, 0.0, sized=False).wait(0.0, 7) == math.inf
    spread = make_counter(Quota("q", Rate(10, 1.0), spread=True, weighted=True))
    assert spread.wait(0.0, 10) == 0.0
    assert spread.wait(0.0, 11) == math.inf  # a window of 10 never holds 11


def test_a_spread_window_is_not_moved_by_ends() -> None:
    counter = make_counter(Quota("q", Rate(10, 1.0), spread=True, guard=0.0))
    entry = counter.take(0.0, 1)
    counter.end(entry, 0.05)
    assert counter.wait(0.0, 1) == pytest.approx(0.1)


def test_buckets_default_to_a_1ms_guard_and_windows_to_20ms() -> None:
    assert Quota("q", Rate(1, 1.0), algorithm="leaky-bucket").guard == 0.001
    assert Quota("q", Rate(1, 1.0), algorithm="token-bucket").guard == 0.001
    assert Quota("q", Rate(1, 1.0)).guard == 0.02
    assert Quota("q", Rate(1, 1.0), spread=True).guard == 0.02


@pytest.mark.parametrize("per_minute", [7, 10, 20])
def test_the_nginx_recipe_for_a_per_minute_rate_is_its_rounded_rate(per_minute: int) -> None:
    """nginx keeps `rate=10r/m` as 166 thousandths of a request per second: one call every
    6.024 s, not 6 s. The recipe writes that rate: limit = "166/1000s"."""
    milli = per_minute * 1000 // 60
    exact = Bucket(60 / per_minute, 0, 0.001, sized=False)
    rounded = Bucket(1000 / milli, 0, 0.001, sized=False)
    for bucket, refusals in ((rounded, 0), (exact, None)):
        nginx = NginxLimitReq(per_minute, 0, per_minute=True)
        refused = sum(not nginx.accepts(math.floor(at * 1000)) for at in _admit(bucket, [0.0] * 20))
        if refusals is None:
            assert refused > 0 or (60_000 % per_minute == 0 and (per_minute * 1000) % 60 == 0)
        else:
            assert refused == refusals


def _stalled_arrivals(
    bucket: Bucket, callers: int, calls: int, stalls: list[float], gaps: list[float]
) -> list[float]:
    """`callers` each make calls in turn, `gap` apart: admitted when the bucket allows,
    reaching the server `stall` later, ending (and telling the bucket) as they arrive.
    Returns the arrival times; events happen in time order, as they would in a process."""
    events: list[tuple[float, int, bool | None]] = [
        (gap, n, None) for n, gap in enumerate(gaps[:callers])
    ]
    arrivals: list[float] = []
    entries: dict[int, Entry] = {}
    made = 0
    while events:
        events.sort(key=lambda event: (event[0], event[1]))
        now, caller, ending = events.pop(0)
        if ending is not None:
            bucket.end(entries.pop(caller), now)
            if made < calls:
                events.append((now + gaps[made % len(gaps)], caller, None))
            continue
        wait = bucket.wait(now, 1)
        if wait > 0:
            events.append((now + wait, caller, None))
            continue
        entries[caller] = bucket.take(now, 1)
        stall = stalls[made % len(stalls)]
        made += 1
        arrivals.append(now + stall)
        events.append((now + stall, caller, True))
    return sorted(arrivals)


@settings(max_examples=300, deadline=None)
@given(
    burst=st.integers(1, 6),
    callers=st.integers(1, 4),
    stalls=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40),
    gaps=st.lists(st.floats(0.0, 0.5), min_size=4, max_size=40),
)
def test_with_burst_room_a_send_stalled_up_to_late_and_the_room_is_never_refused(
    burst: int, callers: int, stalls: list[float], gaps: list[float]
) -> None:
    """Concurrent callers whose calls reach nginx late by a stall each (a busy CPU, a new
    connection): up to LATE plus the room, and under an interval when calls overlap (a call
    stalled longer may reach the server behind calls admitted after it), the ends told
    keep nginx from refusing any."""
    interval, guard = 0.1, 0.002
    bucket = Bucket(interval, burst, guard, sized=False)
    most = LATE + burst * interval if callers == 1 else interval - guard
    arrivals = _stalled_arrivals(bucket, callers, 40, [s * most for s in stalls], gaps)
    nginx = NginxLimitReq(10, burst)
    assert all(nginx.accepts(math.floor(arrival * 1000)) for arrival in arrivals)
