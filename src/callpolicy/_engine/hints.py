"""Server hints: how long a server says to wait (Retry-After, X-RateLimit-Reset, vendors').

Every value is read strictly, in the format its header is declared with; anything else (a
negative or huge number, NaN, non-ASCII digits, "5 seconds", an impossible date, several
values) is *not a hint*: the caller falls back to its computed backoff, and a warning says
why, at most once a minute per header. Nothing here raises on a server's value.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import attrs

from callpolicy._engine.http import header_values
from callpolicy._model import MAX_SECONDS
from callpolicy._text import Throttled

MAX_HINT = MAX_SECONDS  # past a week a value is garbage, whatever the cap

_NUMBER = re.compile(r"\d{1,15}(?:\.\d{1,9})?", re.ASCII)
_HTTP_DATE = re.compile(
    r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"  # IMF-fixdate
    r"|[A-Z][a-z]{5,8}, \d\d-[A-Z][a-z]{2}-\d\d \d\d:\d\d:\d\d GMT"  # RFC 850
    r"|[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}",  # asctime
    re.ASCII,
)
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:[Zz]|[+-]\d\d:\d\d)", re.ASCII
)
_DURATION = re.compile(r"(?:\d{1,9}(?:\.\d{1,9})?(?:h|ms|m|s))+", re.ASCII)
_DURATION_PART = re.compile(r"(\d{1,9}(?:\.\d{1,9})?)(h|ms|m|s)", re.ASCII)
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@attrs.frozen
class Hint:
    """What a server said: `seconds` to wait from now, read from `header: raw`."""

    header: str
    raw: str
    seconds: float

    def describe(self) -> str:
        return f"{self.header}: {self.raw}"


class NotAHint(ValueError):
    """A header's value is not a usable hint; the message says why."""


def parse(fmt: str, raw: str, now: float) -> float:
    """Seconds to wait from `now` (epoch seconds) by `raw` in format `fmt`; NotAHint if not."""
    text = raw.strip()
    if fmt in ("retry-after", "delta-seconds", "epoch-seconds", "epoch-millis"):
        if _NUMBER.fullmatch(text):
            number = float(text)
            if fmt == "epoch-seconds":
                return _until(number, now)
            if fmt == "epoch-millis":
                return _until(number / 1000, now)
            return _checked(number)
        if fmt == "retry-after" and _HTTP_DATE.fullmatch(text):
            try:
                moment = parsedate_to_datetime(text)
            except (ValueError, OverflowError) as exc:
                raise NotAHint(f"not a real date ({exc})") from None
            if moment.tzinfo is None:  # asctime dates are GMT
                moment = moment.replace(tzinfo=timezone.utc)
            return _until(moment.timestamp(), now)
        expected = "seconds or an HTTP date" if fmt == "retry-after" else "a number"
        raise NotAHint(f"not {expected}")
    if fmt == "rfc3339":
        if not _RFC3339.fullmatch(text):
            raise NotAHint("not an RFC 3339 time")
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise NotAHint(f"not a real time ({exc})") from None
        return _until(moment.timestamp(), now)
    if not _DURATION.fullmatch(text):
        raise NotAHint('not a duration like "6m0s" or "1.5s"')
    return _checked(sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(text)))


def _until(moment: float, now: float) -> float:
    return _checked(moment - now, allow_past=True)


def _checked(seconds: float, allow_past: bool = False) -> float:
    if not math.isfinite(seconds) or seconds > MAX_HINT:
        raise NotAHint(f"more than a week ({seconds:.0f}s)")
    if seconds < 0 and not allow_past:
        raise NotAHint("negative")
    return max(seconds, 0.0)


_ignored = Throttled(60.0)


def read_hint(sources: tuple[tuple[str, str], ...], obj: Any, policy: str) -> Hint | None:
    """The first usable hint `obj` (a response, or an error carrying one) holds, reading
    (header, format) `sources` in order; None if there is none. A hint of zero (or a time
    already past) is no reason to hurry: it counts as none."""
    now = time.time()
    for header, fmt in sources:
        values = header_values(obj, header)
        if not values:
            continue
        if len(values) > 1:
            _warn(policy, header, values, "several values")
            continue
        try:
            seconds = parse(fmt, values[0], now)
        except NotAHint as exc:
            _warn(policy, header, values, str(exc))
            continue
        if seconds > 0:
            return Hint(header, values[0].strip(), seconds)
    return None


def _warn(policy: str, header: str, values: list[str], why: str) -> None:
    shown = ", ".join(repr(v[:60]) for v in values[:3])
    _ignored.warn(
        (policy, header.lower()),
        "%s: ignoring %s %s (%s); using the computed backoff (said at most once a minute)",
        policy,
        header,
        shown,
        why,
        policy=policy,
        header=header,
    )
