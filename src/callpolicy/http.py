"""HTTP status out of responses and exceptions of any client, duck-typed, nothing imported.

requests and httpx responses have `.status_code`; aiohttp responses and errors and urllib's
`HTTPError` have `.status`; requests' `HTTPError` and httpx's `HTTPStatusError` carry the
response in `.response`.
"""

from __future__ import annotations

from typing import Any

_STATUS_ATTRIBUTES = ("status_code", "status")


def status_of(obj: Any) -> int | None:
    """The HTTP status `obj` carries, or None. Never raises."""
    for candidate in (obj, _safe_getattr(obj, "response")):
        if candidate is None:
            continue
        for attribute in _STATUS_ATTRIBUTES:
            value = _safe_getattr(candidate, attribute)
            # bool is an int; HTTPStatus is an IntEnum and counts.
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return int(value)
    return None


def describe_status(status: int) -> str:
    return f"HTTP {status}"


def _safe_getattr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property that raises tells us nothing
        return None
