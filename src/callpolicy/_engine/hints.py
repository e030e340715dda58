"""Server hints: how long a server says to wait (Retry-After, X-RateLimit-Reset, vendors').

Every value is read strictly, in the format its header is declared with; anything else (a
negative number, NaN, more than 15 digits, non-ASCII digits, "5 seconds", an impossible date,
several values) is *not a hint*: the caller falls back to its computed backoff, and a warning
says why, at most once a minute per header. A well-formed hint is never garbage for being
large (a year-9999 date is a hint above any cap). Absolute times (HTTP dates, epoch and RFC
3339 resets) are read against the response's `Date` when it has a valid one, so a server
whose clock is off still means what it says (as browsers and gRPC do); else against ours.
Nothing here raises on a server's value.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import attrs

from callpolicy._engine.http import header_values
from callpolicy._model import HINT_FIELD
from callpolicy._text import Throttled, format_seconds

_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_IMF_FIXDATE = re.compile(rf"{_DAY}, \d\d {_MONTH} \d{{4}} \d\d:\d\d:\d\d GMT", re.ASCII)
_HTTP_DATE = re.compile(
    _IMF_FIXDATE.pattern
    + rf"|(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, \d\d-{_MONTH}-\d\d \d\d:\d\d:\d\d GMT"
    + rf"|{_DAY} {_MONTH} [ \d]\d \d\d:\d\d:\d\d \d{{4}}",  # asctime
    re.ASCII,
)
_NUMBER = re.compile(r"\d{1,15}(?:\.\d{1,9})?", re.ASCII)
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:[Zz]|[+-]\d\d:\d\d)", re.ASCII
)
_FRACTION = re.compile(r"\.\d+", re.ASCII)
_DURATION = re.compile(r"(?:\d{1,9}(?:\.\d{1,9})?(?:h|ms|m|s))+", re.ASCII)
_DURATION_PART = re.compile(r"(\d{1,9}(?:\.\d{1,9})?)(h|ms|m|s)", re.ASCII)
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_EPOCHS = {"epoch-seconds": 1.0, "epoch-millis": 1000.0}
FieldReader = Callable[[str, str], "Hint | None"]


@attrs.frozen
class Hint:
    """What a server said: `seconds` to wait from now, read from `header: raw`; `basis`
    says what an absolute time was read against ("" for a delay)."""

    header: str
    raw: str
    seconds: float
    basis: str = ""
    estimated: bool = False  # our extrapolation (a job's progress), not the server's word

    def describe(self) -> str:
        return f"{self.header}: {self.raw}"

    @property
    def read_as(self) -> str:
        """How an absolute time was read: " (read as 30s after Date: ...)"; "" for a delay."""
        shown = format_seconds(round(self.seconds, 3))  # to the ms: "824ms", not "824.455454ms"
        return f" (read as {shown} {self.basis})" if self.basis else ""


class NotAHint(ValueError):
    """A header's value is not a usable hint; the message says why."""


def parse(fmt: str, raw: str, now: float) -> float:
    """Seconds to wait from `now` (epoch seconds) by `raw` in format `fmt`, 0 for a time
    already past; NotAHint if `raw` is not exactly that format."""
    text = raw.strip()
    if fmt in ("retry-after", "delta-seconds", "delta-millis", *_EPOCHS):
        if _NUMBER.fullmatch(text):
            number = float(text)  # at most 15 digits: exact enough, never inf
            if fmt in _EPOCHS:
                return max(number / _EPOCHS[fmt] - now, 0.0)
            return number / 1000 if fmt == "delta-millis" else number
        if fmt == "retry-after" and _HTTP_DATE.fullmatch(text):
            return max(http_date(text) - now, 0.0)
        expected = "seconds or an HTTP date" if fmt == "retry-after" else "a number"
        raise NotAHint(f"not {expected}")
    if fmt == "rfc3339":
        if not _RFC3339.fullmatch(text):
            raise NotAHint("not an RFC 3339 time")
        try:
            moment = datetime.fromisoformat(_iso(text))
            return max(moment.timestamp() - now, 0.0)
        except (ValueError, OverflowError) as exc:
            raise NotAHint(f"not a real time ({exc})") from None
    if not _DURATION.fullmatch(text):
        raise NotAHint('not a duration like "6m0s" or "1.5s"')
    return sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(text))


def http_date(text: str) -> float:
    """Epoch seconds of an HTTP date already matched by its form; NotAHint if impossible."""
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, OverflowError) as exc:
        raise NotAHint(f"not a real date ({exc})") from None
    if moment.tzinfo is None:  # asctime dates are GMT
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def is_absolute(fmt: str, raw: str) -> bool:
    """Whether `raw` in format `fmt` is a moment (read against a clock), not a delay."""
    return fmt in ("rfc3339", *_EPOCHS) or (
        fmt == "retry-after" and not _NUMBER.fullmatch(raw.strip())
    )


def server_clock(obj: Any) -> tuple[float, str]:
    """The epoch seconds absolute hints in `obj` are read against, and what they are: the
    response's Date (one IMF-fixdate, RFC 9110), else our clock."""
    values = header_values(obj, "Date")
    text = values[0].strip() if len(values) == 1 else ""
    if _IMF_FIXDATE.fullmatch(text):
        try:
            return http_date(text), f"after Date: {text}"
        except NotAHint:
            pass
    if not values:
        return time.time(), "by our clock"
    shown = ", ".join(repr(v[:40]) for v in values[:2])
    return time.time(), f"by our clock, Date {shown} unread"


_ignored = Throttled(60.0)


def read_hint(
    sources: tuple[tuple[str, str], ...],
    obj: Any,
    policy: str,
    read_field: FieldReader | None = None,
) -> Hint | None:
    """The first usable hint `obj` (a response, or an error carrying one) holds, reading
    (header, format) `sources` in order; None if there is none. A hint of zero (or a time
    already past) is no reason to hurry: it counts as none. A field source ("field:<path>")
    is read by `read_field` (path, format), else skipped."""
    clock: tuple[float, str] | None = None
    for header, fmt in sources:
        if header.startswith(HINT_FIELD):
            found = read_field(header[len(HINT_FIELD) :], fmt) if read_field else None
            if found is not None:
                return found
            continue
        values = header_values(obj, header)
        if not values:
            continue
        if len(values) > 1:
            _warn(policy, header, values, "several values")
            continue
        basis, now = "", 0.0
        if is_absolute(fmt, values[0]):
            clock = clock or server_clock(obj)
            now, basis = clock
        try:
            seconds = parse(fmt, values[0], now)
        except NotAHint as exc:
            _warn(policy, header, values, str(exc))
            continue
        if seconds > 0:
            return Hint(header, values[0].strip(), seconds, basis)
    return None


def _warn(policy: str, header: str, values: list[str], why: str) -> None:
    warn_unread(policy, header, [repr(v[:60]) for v in values[:3]], why, "header")


def warn_unread(policy: str, name: str, shown: list[str], why: str, kind: str) -> None:
    """A header's (or a field's) value is no hint: said once a minute per policy and name."""
    _ignored.warn(
        (policy, kind, name.lower()),
        "%s: ignoring %s%s %s (%s); using the computed backoff (said at most once a minute)",
        policy,
        "field " if kind == "field" else "",
        name,
        ", ".join(shown),
        why,
        policy=policy,
        header=name,
    )


def _iso(text: str) -> str:
    """An RFC 3339 time as every Python's fromisoformat reads it: "T", a numeric offset, and
    microseconds (3.10 refuses "Z", a space, and more than 6 fraction digits)."""
    text = text.replace("Z", "+00:00").replace("z", "+00:00").replace("t", "T").replace(" ", "T")
    return _FRACTION.sub(lambda m: m[0][:7].ljust(7, "0"), text)
