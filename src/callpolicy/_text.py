"""Small text helpers every layer shares: did-you-mean, short values, durations in words,
URLs without secrets, and warnings said at most once per interval."""

from __future__ import annotations

import difflib
import logging
import math
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from callpolicy._forks import renew_after_fork

logger = logging.getLogger("callpolicy")


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known name closest to `name`, if one is close enough."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return close[0] if close else None


def suggestion(name: str, known: Iterable[str], list_label: str | None = None) -> str:
    """ "; did you mean 'x'?", else (with `list_label`) "; known: a, b", else ""."""
    names = list(known)
    close = did_you_mean(name, names)
    if close is not None:
        return f"; did you mean {close!r}?"
    if list_label is not None and names:
        return f"; {list_label}: {', '.join(names)}"
    return ""


def shown_value(value: object, limit: int = 80) -> str:
    """`repr(value)` for a message, cut short when long; never raises (a value whose repr
    raises, or holds an int too long to print, is shown by its type)."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}, unprintable>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_seconds(seconds: float) -> str:
    """The shortest duration string for `seconds`: 0.25 -> "250ms", 90 -> "90s", 3600 -> "1h"."""
    if seconds == 0:
        return "0s"
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


def redacted(url: str) -> str:
    """`url` with any user name or password replaced by ***, and its query dropped (query
    options may carry tokens too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    # Everything before the last "@" may be credentials, even past a "?", "#" or "/" that a
    # password held unencoded.
    _, at, host = rest.rpartition("@")
    host = host.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}{sep}***@{host}" if at else f"{scheme}{sep}{host}"


# A URL inside a message (any scheme), or the path a client names after "url: " (urllib3's
# "Max retries exceeded with url: /v1/x?api_key=..."): up to a space or a quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+|(?<=url: )/[^\s'\"<>]*")


def without_secrets(text: str) -> str:
    """`text` with every URL in it redacted (see `redacted`): no user name, password or
    query (where tokens and API keys travel) in an error's description."""
    if "://" not in text and "url: /" not in text:
        return text  # the common case, without a search
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    found = match.group()
    url = found.rstrip(").,;]")
    end = found[len(url) :]  # the sentence's punctuation, not the URL's
    shown = redacted(url) if "://" in url else url.split("?", 1)[0].split("#", 1)[0]
    return shown + end


class Throttled:
    """Warnings said at most once per `every` seconds per key: a warning a call can cause
    must not flood the log when every call causes it."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._said: dict[Any, float] = {}
        self._lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def due(self, key: Any) -> bool:
        """Whether a warning for `key` may be said now (and note that it is)."""
        now = time.monotonic()
        with self._lock:
            if now - self._said.get(key, -math.inf) < self.every:
                return False
            if len(self._said) >= 10_000:  # keys come from servers and users: bounded
                self._said.clear()
            self._said[key] = now
            return True

    def warn(self, key: Any, message: str, *args: Any, **extra: Any) -> None:
        if self.due(key):
            logger.warning(message, *args, extra=extra or None)
