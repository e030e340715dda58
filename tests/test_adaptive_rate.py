"""Adaptive rates (`adapt`): the algorithm on a fake timeline (a cut per congestion event,
the probe back up, the bounds, probing only while the rate is used, the cut to what passed),
then through a registry (logged once with why, counters, explain, headers winning)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests

from callpolicy import Adapt, FakeClock, PolicyError, Rate, Registry, fake_time
from callpolicy._explain import explain
from callpolicy._quotas.adaptive import AdaptiveRate

RegistryOf = Callable[..., Registry]
BOUNDS = Adapt(Rate(5, 1.0), Rate(50, 1.0))
AIMD = Adapt(Rate(5, 1.0), Rate(50, 1.0), algorithm="aimd")
CONGESTION = "HTTP 429: a congestion event, the rate cut to 0.7 of itself"


def blind(adapt: Adapt = BOUNDS, calls: int = 20) -> AdaptiveRate:
    """An adaptive rate that does not measure what passed (as in Redis): cuts by 0.7."""
    return AdaptiveRate(adapt, calls, 1.0, 0.0, measures=False)


def busy(rate: AdaptiveRate, start: float, seconds: float, per_second: int = 20) -> float:
    """Answers of 200 at `per_second` from `start` for `seconds`; the end."""
    n = int(seconds * per_second)
    for i in range(n):
        rate.answer(start + i / per_second, 200, rate.calls, False)
    return start + n / per_second


def test_a_refusal_cuts_the_rate() -> None:
    rate = blind()
    assert rate.answer(0.5, 429, 20, False) == (14, CONGESTION, False)
    assert rate.cuts == 1


def test_refusals_within_a_period_of_a_cut_are_one_congestion_event() -> None:
    rate = blind()
    changes = [rate.answer(0.1 + i / 20, 429, rate.calls, False) for i in range(18)]
    assert [c for c in changes if c is not None] == [(14, CONGESTION, False)]
    assert rate.cuts == 1
    assert rate.answer(1.2, 429, rate.calls, False) == (9, CONGESTION, False)  # a new event
    assert rate.cuts == 2


def test_a_refusal_of_a_call_sent_before_the_cut_is_the_same_event() -> None:
    rate = blind()
    assert rate.answer(0.0, 429, 20, False, sent=-3.0) == (14, CONGESTION, False)
    for at in (1.5, 2.5, 3.0):  # answers 3 s late (a server slower than the period)
        assert rate.answer(at, 429, rate.calls, False, sent=at - 3.0) is None
    assert rate.cuts == 1
    assert rate.answer(3.5, 429, 14, False, sent=0.5) == (9, CONGESTION, False)  # sent after


def test_a_slow_servers_refusals_in_flight_cut_once(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(svc=policies())

    @registry.policy("svc.get")
    def get(status: int) -> SimpleNamespace:  # as requests says: answered 4 s after sent
        return SimpleNamespace(status_code=status, headers={}, elapsed=timedelta(seconds=4))

    for _ in range(6):  # refusals of calls all sent before the first cut, 0.6 s apart
        get(429)
        clock.advance(0.6)
    assert registry.quota_counters()["svc.api"].cuts == 1


def test_a_503_cuts_too_and_other_statuses_do_not() -> None:
    rate = blind()
    assert rate.answer(0.1, 500, 20, False) is None
    assert rate.answer(0.2, 404, 20, False) is None
    assert rate.answer(0.3, 503, 20, False) == (14, CONGESTION.replace("429", "503"), False)


def test_the_rate_never_goes_below_the_floor() -> None:
    rate = blind()
    for second in range(10):
        rate.answer(float(second), 429, rate.calls, False)
    assert rate.calls == 5
    assert rate.cuts == 4  # 20 -> 14 -> 9 -> 6 -> 5, then nothing left to cut


def test_cubic_climbs_back_fast_then_flat_then_beyond() -> None:
    rate = blind()
    rate.answer(0.0, 429, 20, False)  # 20 -> 14, the curve's plateau at 20
    seen = {}
    at = 0.05
    for second in range(1, 9):
        at = busy(rate, at, 1.0, per_second=rate.calls)
        seen[second] = rate.calls
    # (busy from the 12th answer on, 0.8 of the rate: 0.29 busy periods after the first second)
    assert seen[1] == 15  # most of the way back within a period (checked once per tenth)
    assert seen[2] == 19 and seen[3] == 20  # flat near the rate of the cut
    assert 20 < seen[4] < seen[5] < seen[6] < seen[7] < 50  # then probing beyond, faster
    assert seen[8] == 50  # up to the ceiling


def test_a_probe_says_why() -> None:
    rate = blind()
    rate.answer(0.0, 429, 20, False)
    changes = []
    for i in range(1, 60):
        changes.append(rate.answer(i / 20, 200, rate.calls, False))
    found = [c for c in changes if c is not None]
    assert found[0][2] is True and found[0][1].startswith("no refusal for ")
    assert found[0][1].endswith(": probing up (cubic)")


def test_aimd_climbs_a_step_per_busy_period_up_to_the_ceiling() -> None:
    rate = blind(AIMD)
    rate.answer(0.0, 429, 20, False)  # 20 -> 14
    end = busy(rate, 0.05, 2.0)
    assert rate.calls == 15  # 14 + 1.5 busy periods x 1 (5 % of the rate cut from, 20)
    busy(rate, end, 60.0, per_second=60)
    assert rate.calls == 50


def test_no_probe_while_the_calls_do_not_use_the_rate() -> None:
    rate = blind()
    for second in range(30):
        assert rate.answer(second + 0.5, 200, rate.calls, False) is None  # 1 a second of 20
    assert rate.calls == 20


def test_a_cut_measures_what_passed_when_the_server_goes_on_refusing() -> None:
    rate = AdaptiveRate(BOUNDS, 20, 1.0, 0.0)  # measures: every answer is seen here
    busy(rate, 0.0, 1.0, per_second=17)  # the server let 17 through in the last second
    why = "HTTP 429: 17 passed in the last period, the rate cut to 0.9 of it"
    assert rate.answer(1.01, 429, 20, False) == (15, why, False)
    assert rate.w_max == 17.0  # the curve flattens at what passed


def test_a_quota_lightly_used_is_cut_by_beta_not_by_what_passed() -> None:
    # 2 of 20 passed: the quota was not saturated, what passed says nothing of the server
    rate = AdaptiveRate(BOUNDS, 20, 1.0, 0.0)
    rate.answer(0.2, 200, 20, False)
    rate.answer(0.6, 200, 20, False)
    assert rate.answer(0.9, 429, 20, False) == (14, CONGESTION, False)  # not 5 (0.9 x 2)
    # ...nor was the rate of 20 tried: the curve flattens at the cut, not back at 20
    assert rate.w_max == 14.0
    assert blind().answer(0.9, 429, 20, False) and blind().w_max == 20.0  # (unseen: as cut)


def test_a_refusal_once_the_servers_window_drained_is_a_new_event() -> None:
    rate = AdaptiveRate(BOUNDS, 20, 1.0, 0.0)
    busy(rate, 0.0, 1.0, per_second=18)  # 18 passed in the last second
    why = "HTTP 429: 18 passed in the last period, the rate cut to 0.9 of it"
    assert rate.answer(1.01, 429, 20, False) == (16, why, False)
    # no call until fewer than 16 of those 18 are left in the last period (slices of a tenth)
    assert rate.held == pytest.approx(1.2)
    for at in (1.05, 1.12, 1.19):  # the server still counts the calls of before the cut
        assert rate.answer(at, 429, 16, False, sent=at - 0.2) is None
    # a call sent after the hold refused, 14 of those 18 left: they no longer explain it,
    # the limit is lower (it fell)
    why = "HTTP 429: 14 passed in the last period, the rate cut to 0.9 of it"
    assert rate.answer(1.25, 429, 16, False, sent=1.21) == (12, why, False)
    assert rate.cuts == 2


def test_refusals_in_flight_at_a_cut_are_its_own_even_with_nothing_passed() -> None:
    rate = AdaptiveRate(BOUNDS, 20, 1.0, 0.0)
    assert rate.answer(0.5, 429, 20, False) == (14, CONGESTION, False)
    for _ in range(10):  # answered at once: sent before the cut, not an interval after it
        assert rate.answer(0.51, 429, 14, False) is None
    assert rate.cuts == 1


def test_the_curve_never_flattens_below_the_floor() -> None:
    rate = AdaptiveRate(BOUNDS, 6, 1.0, 0.0)
    busy(rate, 0.0, 1.0, per_second=6)
    # climbing back after a cut from 20, not there yet: at 6
    rate.w_max, rate.rate, rate.calls, rate.known = 20.0, 6.0, 6, 6
    # fast convergence would put the plateau at 0.85 of 6, 5.1; 0.7 of 6 is below the floor
    assert rate.answer(1.0, 429, 6, False) == (5, f"{CONGESTION}, at the floor", False)
    assert rate.w_max >= 5.0


def test_after_an_outage_at_the_floor_the_rate_climbs_back_slowly() -> None:
    rate = blind()
    for second in range(10):  # an outage: refusals for 10 seconds, the rate at the floor
        for i in range(5):
            rate.answer(second + i / 5, 429, rate.calls, False)
    assert rate.calls == 5
    assert rate.answer(10.0, 200, 5, False) is None  # the first success probes nothing
    busy(rate, 10.1, 1.0, per_second=5)
    assert rate.calls <= 7  # not back to the ceiling (50)


def test_idle_time_is_not_probing_time() -> None:
    rate = blind(Adapt(Rate(1, 1.0), Rate(50, 1.0)), calls=2)
    rate.answer(0.0, 200, 2, False)
    rate.answer(0.5, 200, 2, False)
    for hour in range(1, 4):  # 2 calls an hour after an idle hour
        assert rate.answer(hour * 3600.0, 200, rate.calls, False) is None
        assert rate.answer(hour * 3600.0 + 0.5, 200, rate.calls, False) is None
    assert rate.calls == 2


def test_no_probe_at_half_the_rate() -> None:
    rate = blind()
    busy(rate, 0.0, 30.0, per_second=10)  # 10 a second of 20: half used
    assert rate.calls == 20


def test_a_refusal_at_the_floor_is_not_counted() -> None:
    rate = blind(Adapt(Rate(2, 1.0), Rate(50, 1.0)), calls=2)
    rate.rate = 2.9  # a probe's fraction: the limit in force, 2, is what is cut from
    assert rate.answer(0.0, 429, 2, False) is None
    assert rate.cuts == 0  # nothing changed: neither counted nor logged


def test_a_cut_is_from_the_limit_in_force_as_logged() -> None:
    rate = blind(calls=14)
    rate.rate = 14.9  # a probe's fraction, 14 in force: 0.7 of 14, not of 14.9
    assert rate.answer(0.0, 429, 14, False) == (9, CONGESTION, False)


def test_an_announced_limit_wins() -> None:
    rate = blind()
    assert rate.answer(0.1, 429, 20, True) is None  # the header's limit is followed instead
    assert rate.cuts == 0
    busy(rate, 0.2, 8.0)
    assert rate.calls == 20  # no probing above a limit announced lately


def test_a_limit_changed_elsewhere_is_where_it_starts_from() -> None:
    rate = blind()
    rate.answer(0.1, 200, 30, False)  # another process (or a header) set 30
    assert rate.calls == 30
    assert rate.answer(0.2, 429, 30, False) == (21, CONGESTION, False)
    rate.answer(1.5, 200, 12, False)  # lowered elsewhere: that is a cut too
    assert rate.answer(1.6, 429, 12, False) is None  # ...whose refusals it already covers


# -- through a registry ------------------------------------------------------------------------


def policies(adapt: str = '{ floor = "5/1s", ceiling = "50/1s" }', more: str = "") -> str:
    return f"""
        [quotas.api]
        limit = "20/1s"
        max_wait = "0s"
        adapt = {adapt}
        {more}

        [endpoints.get]
        quotas = ["api"]
        """


def answering(registry: Registry) -> Callable[..., SimpleNamespace]:
    @registry.policy("svc.get")
    def get(status: int = 200, headers: dict[str, str] | None = None) -> SimpleNamespace:
        return SimpleNamespace(status_code=status, headers=headers or {})

    return get


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if ": limit " in r.getMessage()]


def test_refusals_in_flight_cut_once_logged_once_and_counted(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    registry = registry_of(svc=policies('{ floor = "5/1s", ceiling = "50/1s" }'))
    get = answering(registry)
    for _ in range(10):
        assert get(429).status_code == 429  # the answer is the call's, unchanged
    assert said(caplog) == [f"quota svc.api: limit 20/1s -> 14/1s ({CONGESTION})"]
    counters = registry.quota_counters()["svc.api"]
    assert counters.learned == Rate(14, 1.0)
    assert counters.cuts == 1


def test_no_http_answer_says_nothing_of_the_rate(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(svc=policies())

    @registry.policy("svc.get")
    def get() -> None:
        raise requests.ConnectionError("refused")

    with pytest.raises(requests.ConnectionError):
        get()
    assert registry.quota_counters()["svc.api"].cuts == 0


def test_with_learn_the_headers_win(registry_of: RegistryOf, clock: FakeClock) -> None:
    registry = registry_of(
        svc=policies(more='learn = { from = "x-ratelimit", floor = "5/1s", ceiling = "50/1s" }')
    )
    get = answering(registry)
    get(429, {"X-RateLimit-Limit": "12"})
    counters = registry.quota_counters()["svc.api"]
    assert counters.learned == Rate(12, 1.0) and counters.cuts == 0
    clock.advance(1.0)  # (the refusals of the next second belong to that change)
    get(429)  # a refusal announcing nothing (a proxy's) cuts what is in force
    counters = registry.quota_counters()["svc.api"]
    assert counters.learned == Rate(8, 1.0) and counters.cuts == 1


def test_explain_says_how_the_rate_adapts(registry_of: RegistryOf) -> None:
    registry = registry_of(
        svc=policies('{ floor = "5/1s", ceiling = "50/1s", on_status = [429], algorithm = "aimd" }')
    )
    text = explain(registry.get("svc.get"))
    assert (
        "adapts its rate to HTTP 429 (x0.7 per congestion event, or 0.9 of what passed in the "
        "last period when the rate was used to 0.8 of it (never below x0.7), and a bucket's "
        "calls held after it until fewer than the new rate of those that passed are left in "
        "the last period, up "
        "again by a step per period while no refusal comes and the calls use the rate), from "
        "the limit, within 5/1s..50/1s" in text
    )


@pytest.mark.parametrize(
    ("adapt", "more", "error"),
    [
        (
            '{ floor = "5/1s" }',
            "",
            'svc.api.adapt: needs ceiling (like { floor = "5/1s", ceiling = "50/1s" })',
        ),
        (
            '{ floor = "5/1s", ceiling = "50/1m" }',
            "",
            "svc.api.adapt.ceiling: must count over the floor's period (got 50/1m; the floor "
            "is 5/1s)",
        ),
        (
            '{ floor = "30/1s", ceiling = "50/1s" }',
            "",
            "svc.api.limit: must be within adapt's bounds 30/1s..50/1s (got 20/1s: the rate "
            "starts there)",
        ),
        (
            '{ floor = "5/1m", ceiling = "50/1m" }',
            "",
            "svc.api.adapt.floor: must count over the limit's period, like 5/1s (got 5/1m; "
            "the limit is 20/1s)",
        ),
        (
            '{ floor = "5/1s", ceiling = "50/1s", on_status = [429, 200] }',
            "",
            "svc.api.adapt.on_status: must be refusals, 4xx or 5xx (got 200)",
        ),
        (
            '{ floor = "5/1s", ceiling = "50/1s", on_status = [] }',
            "",
            "svc.api.adapt.on_status: must name at least one status, like [429, 503]",
        ),
        (
            '{ floor = "5/1s", ceiling = "50/1s", on_status = [600] }',
            "",
            "svc.api.adapt.on_status[0]: must be an HTTP status from 100 to 599 (got 600)",
        ),
        (
            '{ floor = "21/1s", ceiling = "50/1s" }',
            'learn = { from = "x-ratelimit", floor = "5/1s", ceiling = "20/1s" }',
            "svc.api.adapt: bounds 21/1s..50/1s must meet learn's 5/1s..20/1s (learn.floor, "
            "learn.ceiling, adapt.floor, adapt.ceiling)",
        ),
        (
            '{ floor = "5/1s", ceiling = "50/1s", algorithm = "bbr" }',
            "",
            "svc.api.adapt.algorithm: must be one of 'cubic', 'aimd' (got 'bbr')",
        ),
        (
            '{ floor = "5/1s", ceiling = "50/1s", step = 2 }',
            "",
            "svc.api.adapt.step: unknown key",
        ),
        (
            '{ floor = "5/1s", ceiling = "50/1s" }',
            "weighted = true",
            "svc.api.adapt: cannot adapt a weighted quota (a refusal says which call was one "
            "too many, not which cost units): adapt a quota of calls next to it",
        ),
        (
            '{ floor = "5/1s", ceiling = "5000000/1s" }',
            "",
            "svc.api.adapt.ceiling: is too large for an exact sliding window",
        ),
    ],
)
def test_what_cannot_adapt_is_a_load_error(
    registry_of: RegistryOf, adapt: str, more: str, error: str
) -> None:
    with pytest.raises(PolicyError) as refused:
        registry_of(svc=policies(adapt, more))
    assert error in str(refused.value)
    assert "must name at least one status" not in str(refused.value) or "[]" in adapt


def test_learn_and_adapt_with_other_bounds_never_raise_into_a_call(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    learn = 'learn = { from = "x-ratelimit", floor = "8/1s", ceiling = "500/1s" }'
    registry = registry_of(svc=policies(more=learn))
    get = answering(registry)
    # a header above adapt's ceiling: held at the ceiling of both bounds (50), no ValueError
    assert get(200, {"X-RateLimit-Limit": "100"}).status_code == 200
    assert said(caplog) == [
        "quota svc.api: limit 20/1s -> 50/1s (X-RateLimit-Limit: 100; the ceiling is 50/1s)"
    ]
    for _ in range(8):  # refusals without headers (a proxy's): cut, never below learn's floor
        clock.advance(1.5)
        assert get(429).status_code == 429
    # (the 6th line waits: at most 5 lines per 10 seconds)
    assert registry.quota_counters()["svc.api"].learned == Rate(8, 1.0)
    clock.advance(1.5)
    assert get(200, {"X-RateLimit-Limit": "2"}).status_code == 200  # below both floors
    assert registry.quota_counters()["svc.api"].learned == Rate(8, 1.0)


def test_adapting_in_flight_slots_or_a_pool_member_is_a_load_error(
    registry_of: RegistryOf,
) -> None:
    with pytest.raises(PolicyError) as refused:
        registry_of(
            svc="""
            [quotas.slots]
            concurrency = 10
            adapt = { floor = "5/1s", ceiling = "50/1s" }
            [quotas.key]
            limit = "20/1s"
            adapt = { floor = "5/1s", ceiling = "50/1s" }
            [quotas.keys]
            pool = ["key"]
            [endpoints.get]
            quotas = ["keys"]
            """
        )
    text = str(refused.value)
    assert (
        "svc.slots.adapt: applies only to a quota with a limit (this one has concurrency)" in text
    )
    assert "svc.keys.pool[0]: 'svc.key' adapts its rate: a pool's members cannot (yet)" in text


# The calls below use 16 to 19 of the last period and a tenth (counted in tenths of a second, so
# how many depends on where the clock starts within a tenth): the probe stops at 23 once they use
# less than 0.8 of the rate; the 429 then finds the quota saturated (0.8 of 23 answered: the cut
# to 0.9 of what passed: 16 of 18, not below 0.7 of 23) or not (the cut to 0.7 of the rate).
# Both starts are pinned.
@pytest.mark.parametrize(
    ("start", "why"),
    [
        (1000.05, "a congestion event, the rate cut to 0.7 of itself"),
        (1000.0, "18 passed in the last period, the rate cut to 0.9 of it"),
    ],
)
def test_probes_are_logged_at_most_once_per_10_seconds_and_cuts_at_once(
    registry_of: RegistryOf, caplog: pytest.LogCaptureFixture, start: float, why: str
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    with fake_time(FakeClock(start)) as clock:
        registry = registry_of(
            svc=policies('{ floor = "5/1s", ceiling = "50/1s", algorithm = "aimd" }')
        )
        get = answering(registry)
        for _ in range(100):  # 6 s at 16 a second: busy, never refused
            get(200)
            clock.advance(0.06)
        get(429)
    assert said(caplog) == [
        "quota svc.api: limit 20/1s -> 21/1s (no refusal since the start: probing up (aimd))",
        f"quota svc.api: limit 23/1s -> 16/1s (HTTP 429: {why}; 2 more change(s) since the last"
        " line)",
    ]


def test_after_a_cut_a_bucket_holds_its_calls_while_the_servers_window_is_full(
    registry_of: RegistryOf,
) -> None:
    with fake_time(FakeClock(1000.0)) as clock:  # pinned: the slices of a tenth counted
        registry = registry_of(
            svc=policies(more='algorithm = "leaky-bucket"').replace('"0s"', '"10s"')
        )
        get = answering(registry)
        for _ in range(20):  # one every 51 ms (the bucket's pace and guard)
            get(200)
        get(429)  # 19 passed in the last period: cut to 17
        before = clock.now()
        get(200)
        waited = clock.now() - before
    assert registry.quota_counters()["svc.api"].learned == Rate(17, 1.0)
    # not one interval at 17/s (59 ms) but until 3 of the 19 have left the last period
    assert 0.15 < waited < 0.25


def test_a_server_that_counts_its_refusals_too_is_cut_to_0_7_saying_what_passed() -> None:
    """HAProxy's stick table counts refused requests: a client over the limit is refused all
    the last period (1 passed). The cut is x0.7 (never lower in one event), the line says
    so, and the curve's plateau is not what passed (the floor), so it probes back up."""
    rate = AdaptiveRate(BOUNDS, 20, 1.0, 0.0)
    rate.answer(0.0, 200, 20, False)
    changes = [rate.answer(i / 20, 429, rate.calls, False) for i in range(1, 40)]
    whys = [change[1] for change in changes if change is not None]
    # the first cut comes before the quota is seen saturated; a later one (its window
    # drained, refusals still coming) finds it saturated with 1 passed
    assert whys[0] == CONGESTION, whys
    clamped = f"{CONGESTION} (1 passed in the last period: never lower in one event)"
    assert clamped in whys[1:], whys
    assert not any("0.9 of it" in why for why in whys), whys
    assert rate.w_max >= rate.rate  # the plateau at the rate cut to or above, not at 1
    cut_to = rate.calls
    busy(rate, 2.0, 4.0, per_second=cut_to)  # no refusal since: it probes up again
    assert rate.calls > cut_to


def test_a_cut_stopped_by_the_floor_says_so() -> None:
    rate = blind(Adapt(Rate(16, 1.0), Rate(50, 1.0)))
    assert rate.answer(0.5, 429, 20, False) == (16, f"{CONGESTION}, at the floor", False)


@pytest.mark.parametrize("sent_known", [False, True])
def test_refusals_in_flight_at_a_cut_from_a_server_faster_than_a_period_cut_once(
    sent_known: bool,
) -> None:
    """A server answering in 0.6 s (under the period): every refusal below is of a call sent
    at the old rate before the first cut. Whether the client says when (requests, httpx) or
    not (urllib, aiohttp), they are one congestion event: one cut (it was 20 -> 8 in 0.55 s
    when the send time was not known)."""
    rate = AdaptiveRate(BOUNDS, 20, 1.0, 0.0)
    for i in range(20):  # sent at 20/s in [-0.6, 0.4), all passed, answered 0.6 s later
        rate.answer(i / 20, 200, rate.calls, False)
    cuts = []
    for i in range(12):  # sent in [0.4, 1.0), all refused, answered in [1.0, 1.6)
        sent = 0.4 + i / 20 if sent_known else None
        change = rate.answer(1.0 + i / 20, 429, rate.calls, False, sent=sent)
        if change is not None:
            cuts.append(change[0])
    assert len(cuts) == 1, cuts
