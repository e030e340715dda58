"""Learned limits: announced limits read strictly (hostile values ignored, warned once a
minute), a change logged once, counters keeping what they admitted, the limit belonging to
the quota (every policy naming it), errors read as answers, explain and quota_counters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from callpolicy import FakeClock, Learn, PolicyError, Rate, Registry
from callpolicy._engine.announced import announced_limit
from callpolicy._explain import explain

RegistryOf = Callable[..., Registry]
GITHUB = Learn("x-ratelimit", Rate(5, 1.0), Rate(50, 1.0))
IETF = Learn("ratelimit", Rate(5, 1.0), Rate(50, 1.0))


def answer(**headers: Any) -> SimpleNamespace:
    """A response whose headers are `headers` ("_" for "-"; a list: several values)."""
    pairs = []
    for name, value in headers.items():
        for one in value if isinstance(value, list) else [value]:
            pairs.append((name.replace("_", "-"), one))
    return SimpleNamespace(status_code=200, headers=Headers(pairs))


class Headers:
    """Headers keeping repeats apart, as httpx's do."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get_list(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k.lower() == name.lower()]


@pytest.mark.parametrize(
    ("learn", "period", "headers", "expected"),
    [
        (GITHUB, 1.0, {"X_RateLimit_Limit": "10"}, 10),
        (GITHUB, 1.0, {"x_ratelimit_limit": " 30 ", "x_ratelimit_remaining": "29"}, 30),
        (GITHUB, 1.0, {"X_RateLimit_Limit": "10", "X_RateLimit_Used": "20"}, 10),  # just dropped
        (GITHUB, 3600.0, {"X_RateLimit_Limit": "5000"}, 5000),  # over the quota's period
        (IETF, 1.0, {"RateLimit_Policy": '"default";q=10;w=1'}, 10),
        (IETF, 1.0, {"RateLimit_Policy": "default;q=10;w=1"}, 10),  # a token
        (IETF, 1.0, {"RateLimit_Policy": '"default";q=600;w=60'}, 10),  # scaled down
        (IETF, 1.0, {"RateLimit_Policy": '"a";q=100;w=1, "b";q=600;w=60'}, 10),  # the least
        (IETF, 1.0, {"RateLimit_Policy": ['"a";q=100;w=1', '"b";q=20;w=1']}, 20),  # two lines
        (IETF, 1.0, {"RateLimit_Policy": '"d";q=10;w=1', "RateLimit": '"d";r=3;t=1'}, 10),
        (IETF, 1.0, {"RateLimit_Policy": '"default";q=7'}, 7),  # w: the quota's period
        (IETF, 1.0, {"RateLimit_Limit": "100", "RateLimit_Policy": "100;w=1, 1000;w=60"}, 100),
        (IETF, 1.0, {"RateLimit_Limit": "12"}, 12),
    ],
)
def test_announced_limits_are_read(
    learn: Learn, period: float, headers: dict[str, Any], expected: int
) -> None:
    found = announced_limit(learn, period, answer(**headers), "svc.api")
    assert found is not None and found[0] == expected


def test_the_named_policy_and_resource_are_followed() -> None:
    named = Learn("ratelimit", Rate(1, 1.0), Rate(500, 1.0), name="burst")
    both = answer(RateLimit_Policy='"burst";q=100;w=1, "daily";q=1000;w=86400')
    assert announced_limit(named, 1.0, both, "q") == (
        100,
        f"RateLimit-Policy: {both.headers.pairs[0][1]}",
    )
    core = Learn("x-ratelimit", Rate(1, 3600.0), Rate(9000, 3600.0), name="core")
    search = answer(x_ratelimit_limit="30", x_ratelimit_resource="search")
    assert announced_limit(core, 3600.0, search, "q") is None  # another resource's limit
    ours = answer(x_ratelimit_limit="5000", x_ratelimit_resource="core")
    assert announced_limit(core, 3600.0, ours, "q") == (5000, "X-RateLimit-Limit: 5000")


@pytest.mark.parametrize(
    ("learn", "headers", "why"),
    [
        (GITHUB, {"X_RateLimit_Limit": "-5"}, "is not a count"),
        (GITHUB, {"X_RateLimit_Limit": "NaN"}, "is not a count"),
        (GITHUB, {"X_RateLimit_Limit": "1e3"}, "is not a count"),
        (GITHUB, {"X_RateLimit_Limit": "\uff11\uff10"}, "is not a count"),  # fullwidth digits
        (GITHUB, {"X_RateLimit_Limit": "\u0663\u0660"}, "is not a count"),  # Arabic-Indic digits
        (GITHUB, {"X_RateLimit_Limit": "10, 20"}, "is not a count"),  # joined by requests
        (GITHUB, {"X_RateLimit_Limit": ["10", "20"]}, "several values"),
        (GITHUB, {"X_RateLimit_Limit": "9" * 16}, "is not a count"),
        (GITHUB, {"X_RateLimit_Limit": "0"}, "0 is no limit"),
        (GITHUB, {"X_RateLimit_Limit": "10", "X_RateLimit_Remaining": "11"}, "more than"),
        (IETF, {"RateLimit_Policy": '"default";q=-1;w=1'}, "not a positive integer"),
        (IETF, {"RateLimit_Policy": '"default";q=0;w=1'}, "not a positive integer"),
        (IETF, {"RateLimit_Policy": '"default";q=NaN;w=1'}, "not a positive integer"),
        (IETF, {"RateLimit_Policy": '"default";q=1.5;w=1'}, "not a positive integer"),
        (IETF, {"RateLimit_Policy": '"default";q=10;w=0'}, "not a positive integer"),
        (IETF, {"RateLimit_Policy": '"default";w=1'}, "has no q"),
        (IETF, {"RateLimit_Policy": '"default";q=10;w=999999999999'}, "not one to follow"),
        (IETF, {"RateLimit_Policy": '"default";q=\uff11\uff10;w=1'}, "not ASCII"),
        (IETF, {"RateLimit_Policy": '"default" q=10'}, "unexpected"),
        (IETF, {"RateLimit_Policy": '"default";q=99999999999999999;w=1'}, "no item"),
        (IETF, {"RateLimit_Policy": '"d";q=10;w=1', "RateLimit": '"d";r=11;t=1'}, "more than q"),
        (IETF, {"RateLimit_Limit": "100", "RateLimit_Policy": "50;w=1"}, "no policy item"),
        (IETF, {"RateLimit_Limit": "100", "RateLimit_Policy": "100.0;w=1"}, "no policy item"),
        (IETF, {"RateLimit_Limit": "10", "RateLimit_Remaining": "20"}, "more than the limit"),
        (IETF, {"RateLimit_Policy": "10;w=1"}, "not a policy name"),
        (IETF, {"RateLimit_Policy": ", ".join(['"a";q=10;w=1'] * 400)}, "longer than 4096"),
    ],
)
def test_hostile_announcements_are_ignored_with_a_warning(
    learn: Learn,
    headers: dict[str, Any],
    why: str,
    caplog: pytest.LogCaptureFixture,
    fresh_throttles: None,
) -> None:
    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        assert announced_limit(learn, 1.0, answer(**headers), "svc.api") is None
        assert announced_limit(learn, 1.0, answer(**headers), "svc.api") is None
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and why in said[0] and said[0].startswith("quota svc.api: ignoring"), said


def test_a_window_shorter_than_the_period_is_not_followed(
    caplog: pytest.LogCaptureFixture, fresh_throttles: None
) -> None:
    minute = Learn("ratelimit", Rate(5, 60.0), Rate(500, 60.0))
    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        found = announced_limit(minute, 60.0, answer(RateLimit_Policy='"d";q=10;w=1'), "q")
    assert found is None
    assert "declare a limit per 1s" in caplog.records[0].getMessage()


POLICIES = """
    [quotas.api]
    limit = "20/1s"
    learn = {{ from = "ratelimit", floor = "5/1s", ceiling = "50/1s"{extra} }}
    {algorithm}

    [endpoints.get]
    quotas = ["api"]

    [endpoints.post]
    quotas = ["api"]
    retry.on_exceptions = ["requests.HTTPError"]
    retry.on_status = []
    stop.attempts = 1
    """


def registry(registry_of: RegistryOf, extra: str = "", algorithm: str = "") -> Registry:
    return registry_of(svc=POLICIES.format(extra=extra, algorithm=algorithm))


def caller(reg: Registry) -> Callable[..., SimpleNamespace]:
    """svc.get, answering with the headers it is given."""

    @reg.policy("svc.get")
    def get(headers: dict[str, Any] | None = None) -> SimpleNamespace:
        return answer(**(headers or {}))

    return get


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if ": limit " in r.getMessage()]


def test_a_change_is_logged_once_and_repeats_change_nothing(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    reg = registry(registry_of)
    get = caller(reg)
    caplog.set_level(logging.INFO, logger="callpolicy")
    for _ in range(3):
        get({"RateLimit_Policy": '"default";q=10;w=1'})
    get({"RateLimit_Policy": '"default";q=1;w=1'})  # below the floor
    get({"RateLimit_Policy": '"default";q=2;w=1'})  # the floor again: nothing
    get({"RateLimit_Policy": '"default";q=900;w=1'})  # above the ceiling
    assert said(caplog) == [
        'quota svc.api: limit 20/1s -> 10/1s (RateLimit-Policy: "default";q=10;w=1)',
        'quota svc.api: limit 10/1s -> 5/1s (RateLimit-Policy: "default";q=1;w=1; '
        "the floor is 5/1s)",
        'quota svc.api: limit 5/1s -> 50/1s (RateLimit-Policy: "default";q=900;w=1; '
        "the ceiling is 50/1s)",
    ]
    assert reg.quota_counters()["svc.api"].learned == Rate(50, 1.0)


def test_a_lower_limit_keeps_what_the_window_admitted(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    reg = registry(registry_of)
    get = caller(reg)
    for _ in range(11):
        get({})
    get({"RateLimit_Policy": '"default";q=10;w=1'})  # 12 in the window, then 10/s
    start = clock.now()
    get({})
    assert clock.now() - start == pytest.approx(1.02, abs=1e-6)  # 3 had to leave the window


@pytest.mark.parametrize("algorithm", ['algorithm = "leaky-bucket"', 'algorithm = "token-bucket"'])
def test_a_bucket_takes_the_learned_pace(
    registry_of: RegistryOf, clock: FakeClock, algorithm: str
) -> None:
    reg = registry(registry_of, algorithm=algorithm)
    get = caller(reg)
    get({"RateLimit_Policy": '"default";q=5;w=1'})
    start = clock.now()
    for _ in range(30):
        get({})
    assert 5.0 <= clock.now() - start <= 6.1  # 30 calls at 5/s, less the burst


def test_the_limit_belongs_to_the_quota_and_errors_are_read(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    reg = registry(registry_of)
    response = requests.Response()
    response.status_code = 429
    response.headers["RateLimit-Policy"] = '"default";q=8;w=1'

    @reg.policy("svc.post")
    def post() -> None:
        raise requests.HTTPError(response=response)

    with pytest.raises(requests.HTTPError):
        post()
    assert reg.quota_counters()["svc.api"].learned == Rate(8, 1.0)
    get = caller(reg)
    start = clock.now()
    for _ in range(8):
        get()
    assert clock.now() - start > 0  # svc.get counts by 8/s: the 9th in the window waited


def test_explain_shows_the_bounds(registry_of: RegistryOf) -> None:
    reg = registry(registry_of, extra=', policy = "default"')
    assert (
        "api (20/1s, sliding-window, guard 20ms, max_wait 1m; learns its limit from "
        "RateLimit-Policy (item 'default'; RateLimit-Limit per period), within 5/1s..50/1s)"
    ) in explain(reg.get("svc.get"))
    assert reg.quota_counters()["svc.api"].learned is None


def test_a_flapping_limit_writes_a_bounded_number_of_lines(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Servers behind one name that disagree: 500 answers alternating 30 and 40 change the
    limit 500 times, in at most LOG_MOST lines per 10 s, the next line counting the rest."""
    get = caller(registry(registry_of))
    caplog.set_level(logging.INFO, logger="callpolicy")
    start = clock.time
    for n in range(500):
        get({"RateLimit_Policy": f'"default";q={30 + 10 * (n % 2)};w=1'})
    tens = (clock.time - start) // 10 + 1  # the quota's waits move the clock
    lines = said(caplog)
    assert len(lines) <= 5 * tens < 100
    assert any(line.endswith(" more change(s) since the last line)") for line in lines)


def test_a_reload_that_keeps_the_limit_and_its_bounds_keeps_what_was_learned(
    registry_of: RegistryOf, clock: FakeClock, write_policies: Callable[..., Any]
) -> None:
    reg = registry(registry_of)
    caller(reg)({"RateLimit_Policy": '"default";q=8;w=1'})
    assert reg.quota_counters()["svc.api"].learned == Rate(8, 1.0)
    reg.load(write_policies(svc=POLICIES.format(extra="", algorithm='max_wait = "2s"')))
    assert reg.quota_counters()["svc.api"].learned == Rate(8, 1.0)  # max_wait only: kept


def test_a_policy_of_another_unit_is_not_a_limit_of_calls(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    reg = registry(registry_of)
    get = caller(reg)
    get({"RateLimit_Policy": '"bytes";q=1000000;qu="content-bytes";w=1, "calls";q=12;w=1'})
    assert reg.quota_counters()["svc.api"].learned == Rate(12, 1.0)


def test_what_announced_a_limit_is_kept_on_one_line(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    caller(registry(registry_of))({"RateLimit_Policy": '"a";q=10;w=1,\t"b";q=30;w=1'})
    assert said(caplog) == [
        'quota svc.api: limit 20/1s -> 10/1s (RateLimit-Policy: "a";q=10;w=1, "b";q=30;w=1)'
    ]


def test_bounds_the_quota_could_never_hold_are_load_errors(registry_of: RegistryOf) -> None:
    with pytest.raises(PolicyError) as refused:
        registry_of(
            svc='[quotas.api]\nlimit = "20/1s"\n'
            'learn = { from = "x-ratelimit", floor = "5/1s", ceiling = "5000000/1s" }\n'
            '[quotas.slow]\nlimit = "20/1m"\n'
            'learn = { from = "x-ratelimit", floor = "5/1m", ceiling = "50/1m", window = "1s" }\n'
        )
    text = str(refused.value)
    assert "svc.api.learn.ceiling: is too large for an exact sliding window" in text
    assert "svc.slow.learn.window: must be at least the limit's period, 1m (got 1s" in text
