from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpolicy._config.values import UnitError, parse_duration, parse_rate
from callpolicy._model import Rate
from callpolicy._text import format_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("2min", 120.0),
        ("1h", 3600.0),
        ("0s", 0.0),
    ],
)
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 sec", 'must be a duration like "250ms", "5s", "2m" or "1h" (got \'5 sec\')'),
        ("5 s", 'must be a duration like "250ms", "5s", "2m" or "1h" (got \'5 s\')'),
        ("inf", 'must be a duration like "250ms", "5s", "2m" or "1h" (got \'inf\')'),
        ("nans", 'must be a duration like "250ms", "5s", "2m" or "1h" (got \'nans\')'),
        ("-1s", 'must be a duration like "250ms", "5s", "2m" or "1h" (got \'-1s\')'),
        ("\uff15s", 'must be a duration like "250ms", "5s", "2m" or "1h" (got \'\uff15s\')'),
        ("", 'must be a duration like "250ms", "5s", "2m" or "1h" (got \'\')'),
        (5, 'must be a duration string like "5s" (got 5) (write "5s" for seconds)'),
        (1.5, 'must be a duration string like "5s" (got 1.5) (write "1.5s" for seconds)'),
        (True, 'must be a duration string like "5s" (got True)'),
        (float("inf"), 'must be a duration string like "5s" (got inf)'),
        (float("nan"), 'must be a duration string like "5s" (got nan)'),
    ],
)
def test_bad_durations_say_what_is_expected(value: object, message: str) -> None:
    with pytest.raises(UnitError) as raised:
        parse_duration(value)
    assert str(raised.value) == message


def test_durations_beyond_a_week_are_refused() -> None:
    assert parse_duration("168h") == 7 * 24 * 3600
    with pytest.raises(UnitError, match=r"must be at most 7 days, i.e. 168h \(got '169h'\)"):
        parse_duration("169h")
    with pytest.raises(UnitError, match=r"must have a period of at most 7 days \(got '1/200h'\)"):
        parse_rate("1/200h")


def test_zero_duration_refused_where_it_means_nothing() -> None:
    with pytest.raises(UnitError, match=r"must be longer than zero \(got '0s'\)"):
        parse_duration("0s", allow_zero=False)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("180/30s", Rate(180, 30.0)),
        ("20/1s", Rate(20, 1.0)),
        ("20/s", Rate(20, 1.0)),
        ("5/min", Rate(5, 60.0)),
        ("5/m", Rate(5, 60.0)),
        ("1/500ms", Rate(1, 0.5)),
        ("1000/1h", Rate(1000, 3600.0)),
    ],
)
def test_rates_read_as_calls_per_period(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0/1s", "must allow at least 1 call per period (got '0/1s')"),
        ("20/0s", 'must be a rate "N/period" like "180/30s" or "20/s" (got \'20/0s\')'),
        (
            "20 per second",
            'must be a rate "N/period" like "180/30s" or "20/s" (got \'20 per second\')',
        ),
        ("-1/1s", 'must be a rate "N/period" like "180/30s" or "20/s" (got \'-1/1s\')'),
        (20, 'must be a rate "N/period" like "180/30s" or "20/s" (got 20)'),
    ],
)
def test_bad_rates_say_what_is_expected(value: object, message: str) -> None:
    with pytest.raises(UnitError) as raised:
        parse_rate(value)
    assert str(raised.value) == message


@given(st.integers(min_value=1, max_value=168), st.sampled_from(["ms", "s", "m", "h"]))
def test_formatted_durations_read_back_to_the_same_seconds(amount: int, unit: str) -> None:
    seconds = parse_duration(f"{amount}{unit}")
    assert parse_duration(format_seconds(seconds)) == pytest.approx(seconds)


@given(st.text(max_size=12))
def test_any_text_is_a_duration_or_a_unit_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except UnitError:
        return
    assert 0 <= seconds < float("inf")
