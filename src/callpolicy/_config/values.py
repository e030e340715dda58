"""Values in policy files: durations ("250ms", "5s", "2m", "1h"), rates ("180/30s", "20/s"),
HTTP statuses, dotted Python paths and header names (storage URLs: storage.py). Each parser
takes the value as TOML gave it and returns the model's value, or raises `UnitError` whose
message reads `must be ... (got ...)`."""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import math
import re
from concurrent.futures import CancelledError
from typing import Any

from callpolicy._model import (
    MAX_ATTEMPTS,
    MAX_BURST,
    MAX_LEASE,
    MAX_MULTIPLIER,
    MAX_SECONDS,
    MAX_SLOTS,
    MIN_LEASE,
    NEVER_RETRIED,
    Rate,
)
from callpolicy._text import shown_value

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
# ASCII digits only: full-width digits or "5 sec" are not durations.
_DURATION = re.compile(r"(\d{1,9})(?:\.(\d{1,9}))?(ms|s|min|m|h)", re.ASCII)
_RATE = re.compile(r"(\d{1,12})/(.+)", re.ASCII)
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}", re.ASCII)


class UnitError(ValueError):
    """A value is not valid; the message reads `must be ... (got ...)`."""


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


def parse_positive_duration(value: object) -> float:
    return parse_duration(value, allow_zero=False)


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


def _is_plain_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_text(value: object) -> str:
    if not isinstance(value, str):
        raise UnitError(f"must be a string (got {shown_value(value)})")
    return value


def parse_flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise UnitError(f"must be true or false (got {shown_value(value)})")
    return value


def parse_attempts(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UnitError(f"must be an integer (got {shown_value(value)})")
    if value < 1:
        raise UnitError(f"must be >= 1 (got {shown_value(value)})")
    if value > MAX_ATTEMPTS:
        raise UnitError(f"must be at most {MAX_ATTEMPTS:,} (got {shown_value(value)})")
    return value


def _count(value: object, least: int, most: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise UnitError(f"must be an integer >= {least} (got {shown_value(value)})")
    if value > most:
        raise UnitError(f"must be at most {most:,} (got {shown_value(value)})")
    return value


def parse_slots(value: object) -> int:
    return _count(value, 1, MAX_SLOTS)


def parse_burst(value: object) -> int:
    return _count(value, 0, MAX_BURST)


def parse_lease(value: object) -> float:
    """An in-flight slot's lease in Redis: from 1s (it is renewed every third of it) to 1h
    (a crashed worker's slot is lost that long)."""
    seconds = parse_duration(value)
    if not MIN_LEASE <= seconds <= MAX_LEASE:
        raise UnitError(
            f"must be from {MIN_LEASE:g}s (it is renewed every third of it) to "
            f"{MAX_LEASE / 3600:g}h (a crashed worker's slot is lost that long) "
            f"(got {shown_value(value)})"
        )
    return seconds


def parse_multiplier(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UnitError(f"must be a number (got {shown_value(value)})")
    if value < 1:
        raise UnitError(f"must be >= 1 (got {shown_value(value)})")
    if value > MAX_MULTIPLIER:
        raise UnitError(f"must be at most {MAX_MULTIPLIER:g} (got {shown_value(value)})")
    return float(value)


def parse_header(value: object) -> str:
    if not isinstance(value, str) or not _HEADER.fullmatch(value):
        raise UnitError(f"must be a header name (got {shown_value(value)})")
    return value


def is_header(value: object) -> bool:
    return isinstance(value, str) and _HEADER.fullmatch(value) is not None


def parse_statuses(value: object) -> frozenset[int]:
    """One status entry: 429, "5xx" or "500-504"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 100 <= value <= 599:
            return frozenset({value})
        raise UnitError(f"must be an HTTP status from 100 to 599 (got {shown_value(value)})")
    if isinstance(value, str):
        if len(value) == 3 and value[0] in "12345" and value[1:] == "xx":
            first = int(value[0]) * 100
            return frozenset(range(first, first + 100))
        low, dash, high = value.partition("-")
        if dash and low.isascii() and high.isascii() and low.isdigit() and high.isdigit():
            lo, hi = int(low), int(high)
            if 100 <= lo <= hi <= 599:
                return frozenset(range(lo, hi + 1))
    raise UnitError(f'must be a status like 429, "5xx" or "500-504" (got {shown_value(value)})')


def resolve_dotted(path: str) -> Any:
    """Import `package.module.attribute`; a bare name is a builtin. Raises LookupError."""
    parts = _dotted_parts(path)
    if len(parts) == 1:
        if hasattr(builtins, path):
            return getattr(builtins, path)
        raise LookupError(f"{path!r} is not a builtin; write its module too, e.g. 'package.{path}'")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # try a shorter module path
            raise LookupError(f"importing {module_name!r} for {path!r} failed: {exc}") from None
        except Exception as exc:
            raise LookupError(f"importing {module_name!r} for {path!r} failed: {exc!r}") from None
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                raise LookupError(f"{'.'.join(parts[:split])!r} has no attribute {attribute!r}")
            obj = getattr(obj, attribute)
        return obj
    raise LookupError(f"cannot import {parts[0]!r} (no module named {parts[0]!r})")


def _dotted_parts(path: str) -> list[str]:
    parts = path.split(".")
    if not all(part.isidentifier() for part in parts):
        raise LookupError(f"must be a dotted Python path like 'package.module.Name' (got {path!r})")
    return parts


def resolve_exception(value: object) -> type[Exception] | None:
    """The exception class at `path`. A leading '?' makes a missing package fine (None)."""
    path = parse_text(value)
    optional = path.startswith("?")
    name = path[1:] if optional else path
    _dotted_parts(name)  # a malformed path is an error even when optional
    try:
        obj = resolve_dotted(name)
    except LookupError:
        top = name.split(".")[0]
        if optional and importlib.util.find_spec(top) is None:
            return None
        raise
    if isinstance(obj, type) and issubclass(obj, CancelledError):
        raise LookupError(f"{name!r} is never retried ({NEVER_RETRIED} always propagate)")
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    if isinstance(obj, type) and issubclass(obj, BaseException):
        raise LookupError(f"{name!r} is never retried ({NEVER_RETRIED} always propagate)")
    raise LookupError(f"must name an Exception subclass ({name!r} is {_kind(obj)})")


def resolve_predicate(value: object) -> Any:
    path = parse_text(value)
    obj = resolve_dotted(path)
    if not callable(obj):
        raise LookupError(f"must name a callable ({path!r} is {_kind(obj)})")
    return obj


def _kind(obj: object) -> str:
    """What `obj` is, in words, without its (address-bearing) repr."""
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    return f"a {type(obj).__name__}"
