"""Durations ("250ms", "5s", "2m", "1h") and rates ("180/30s", "20/s") in policy files."""

from __future__ import annotations

import math
import re

import attrs

MAX_SECONDS = 7 * 24 * 3600.0  # no wait, deadline or period beyond a week: a typo, not a plan
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
# ASCII digits only: full-width digits or "5 sec" are not durations.
_DURATION = re.compile(r"(\d{1,9})(?:\.(\d{1,9}))?(ms|s|min|m|h)", re.ASCII)
_RATE = re.compile(r"(\d{1,12})/(.+)", re.ASCII)


class UnitError(ValueError):
    """A value is not a valid duration or rate; the message reads `must be ... (got ...)`."""


def parse_duration(value: object, *, allow_zero: bool = True) -> float:
    """Seconds in a duration string such as "1.5s"; numbers without a unit are refused."""
    if isinstance(value, bool) or not isinstance(value, str):
        hint = f' (write "{value}s" for seconds)' if _is_plain_number(value) else ""
        raise UnitError(f'must be a duration string like "5s" (got {shown_value(value)}){hint}')
    match = _DURATION.fullmatch(value)
    if match is None:
        raise UnitError(
            f'must be a duration like "250ms", "5s", "2m" or "1h" (got {shown_value(value)})'
        )
    whole, fraction, unit = match.groups()
    seconds = float(f"{whole}.{fraction or 0}") * _UNIT_SECONDS[unit]
    if seconds > MAX_SECONDS:
        raise UnitError(f"must be at most 7 days, i.e. 168h (got {shown_value(value)})")
    if seconds == 0 and not allow_zero:
        raise UnitError(f"must be longer than zero (got {shown_value(value)})")
    return seconds


@attrs.frozen
class Rate:
    """`calls` calls per `period` seconds."""

    calls: int
    period: float

    def __str__(self) -> str:
        return f"{self.calls}/{format_seconds(self.period)}"


def parse_rate(value: object) -> Rate:
    """A rate "N/period": "180/30s", "20/1s" or "20/s" (a bare unit means one of it)."""
    expected = 'must be a rate "N/period" like "180/30s" or "20/s"'
    if not isinstance(value, str):
        raise UnitError(f"{expected} (got {shown_value(value)})")
    match = _RATE.fullmatch(value)
    if match is None:
        raise UnitError(f"{expected} (got {shown_value(value)})")
    calls = int(match.group(1))
    period_text = match.group(2)
    if period_text in _UNIT_SECONDS:
        period_text = "1" + period_text
    try:
        period = parse_duration(period_text, allow_zero=False)
    except UnitError as exc:
        if "at most" in str(exc):
            raise UnitError(
                f"must have a period of at most 7 days (got {shown_value(value)})"
            ) from None
        raise UnitError(f"{expected} (got {shown_value(value)})") from None
    if calls < 1:
        raise UnitError(f"must allow at least 1 call per period (got {shown_value(value)})")
    return Rate(calls, period)


def format_seconds(seconds: float) -> str:
    """The shortest duration string for `seconds`: 0.25 -> "250ms", 90 -> "90s", 3600 -> "1h"."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds < 1:
        return f"{_plain(seconds * 1000)}ms"
    return f"{_plain(seconds)}s"


def _plain(number: float) -> str:
    """`number` without an exponent or trailing zeros: 1e6 -> "1000000", 2.50 -> "2.5"."""
    return f"{number:.6f}".rstrip("0").rstrip(".")


def _is_plain_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def shown_value(value: object, limit: int = 80) -> str:
    """`repr(value)` for an error message, cut short when long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
