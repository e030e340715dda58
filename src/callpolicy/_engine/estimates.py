"""Estimates a polled job gives in what it returns: a field of the returned value (a mapping
key or attribute, dotted for nesting; or of an HTTP response's JSON body) saying how long it
still needs (`{ field = "eta_seconds" }`, in any hint format) or how far it has got
(`format = "progress"`, a fraction from 0 to 1, or `"percent"`, 0 to 100).

A progress says nothing by itself: the time left is estimated from how fast it advanced
since the previous poll of the same call, `(1 - p) / rate`. The first poll, or one that did
not advance, gives no estimate: the declared backoff is used. A value that is not of its
format (a string for a progress, a fraction above 1, a bool) is ignored with a warning, once a
minute per field, as a header's hint is (see hints.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from callpolicy._clock import CLOCK
from callpolicy._engine.hints import (
    Hint,
    NotAHint,
    is_absolute,
    parse,
    server_clock,
    warn_unread,
)
from callpolicy._engine.http import json_of, status_of
from callpolicy._text import shown_value

PROGRESS_SCALES = {"progress": 1.0, "percent": 100.0}
_MISSING = object()


class Polls:
    """The previous progress seen by one call, per field: (when, fraction)."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: dict[str, tuple[float, float]] = {}


def read_field(path: str, fmt: str, obj: Any, policy: str, polls: Polls | None) -> Hint | None:
    """The estimate field `path` of `obj` gives, in format `fmt`; None when it gives none.
    Never raises on what the value holds (a number too large for a float, an object whose
    lookup or text raises): that is no estimate, said as a hostile header is."""
    try:
        return _read(path, fmt, obj, policy, polls)
    except Exception as exc:
        _unread(policy, path, None, f"unreadable: {type(exc).__name__}")
        return None


def _read(path: str, fmt: str, obj: Any, policy: str, polls: Polls | None) -> Hint | None:
    value = _lookup(obj, path)
    if value is _MISSING or value is None:
        return None
    if fmt in PROGRESS_SCALES:
        return _progress(path, fmt, value, policy, polls)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        _unread(policy, path, value, "not a number or a string")
        return None
    raw = _text(value)
    basis, now = "", 0.0
    if is_absolute(fmt, raw):
        now, basis = server_clock(obj)
    try:
        seconds = parse(fmt, raw, now)
    except NotAHint as exc:
        _unread(policy, path, value, str(exc))
        return None
    return Hint(path, raw, seconds, basis) if seconds > 0 else None


def _progress(path: str, fmt: str, value: Any, policy: str, polls: Polls | None) -> Hint | None:
    scale = PROGRESS_SCALES[fmt]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        _unread(policy, path, value, f"not a {fmt} number")
        return None
    if not 0 <= value <= scale:
        _unread(policy, path, value, f"not within 0 and {scale:g}")
        return None
    fraction, now = value / scale, CLOCK.now()
    if polls is None:
        return None
    previous = polls.seen.get(path)
    polls.seen[path] = (now, fraction)
    if previous is None or fraction >= 1:
        return None
    then, before = previous
    if fraction <= before or now <= then:  # no advance: no estimate
        return None
    left = (1 - fraction) * (now - then) / (fraction - before)
    percent = (fraction - before) * 100 / (now - then)
    return Hint(path, _text(value), left, f"left at {percent:.3g}%/s so far", estimated=True)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _lookup(obj: Any, path: str) -> Any:
    """`path` in a returned value, or in an HTTP response's JSON body."""
    value = obj
    if status_of(obj) is not None:
        value = json_of(obj)
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        else:
            try:
                value = getattr(value, part, _MISSING)
            except Exception:  # a property that raises tells us nothing
                return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _text(value: Any) -> str:
    """A number as hints.parse reads numbers (plain decimals); a string as it is."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if math.isfinite(value) else str(value)
    return str(value)[:60]


def _unread(policy: str, path: str, value: Any, why: str) -> None:
    warn_unread(policy, path, [shown_value(value, 60)], why, "field")
