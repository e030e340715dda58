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
    for candidate in (obj, safe_getattr(obj, "response")):
        if candidate is None:
            continue
        for attribute in _STATUS_ATTRIBUTES:
            value = safe_getattr(candidate, attribute)
            # bool is an int; HTTPStatus is an IntEnum and counts.
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return int(value)
    return None


def header_values(obj: Any, name: str) -> list[str]:
    """Every value of header `name` (any case) in `obj`'s headers or its response's: one per
    occurrence where the client keeps repeats apart (httpx, aiohttp, urllib), as joined by
    the client otherwise (requests). Never raises."""
    for candidate in (obj, safe_getattr(obj, "response")):
        headers = safe_getattr(candidate, "headers") if candidate is not None else None
        if headers is None:
            continue
        try:
            return [_text(v) for v in _values(headers, name) if v is not None]
        except Exception:  # an odd headers object (or value) tells us nothing
            continue
    return []


def _values(headers: Any, name: str) -> list[Any]:
    for method in ("get_list", "getall", "get_all"):  # httpx, aiohttp, urllib/email
        many = getattr(headers, method, None)
        if callable(many):
            found = many(name, []) if method == "getall" else many(name)
            return list(found or [])
    if hasattr(headers, "items"):
        wanted = name.lower()
        return [v for k, v in headers.items() if _text(k).lower() == wanted]
    return []


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def safe_getattr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property that raises tells us nothing
        return None


def request_of(obj: Any) -> Any:
    """The request behind a response or an error, or None."""
    for candidate in (obj, safe_getattr(obj, "response")):
        if candidate is None:
            continue
        request = safe_getattr(candidate, "request")
        if request is not None:
            return request
        info = safe_getattr(candidate, "request_info")  # aiohttp
        if info is not None:
            return info
    return None


def method_of(obj: Any) -> str | None:
    """The HTTP method of the request behind `obj`, upper case, or None if unknown."""
    return request_and_method(obj)[1]


def request_and_method(obj: Any) -> tuple[Any, str | None]:
    """The request behind `obj` (or None) and its method, upper case (or None)."""
    request = request_of(obj)
    method = safe_getattr(request, "method") if request is not None else None
    if method is None:
        method = safe_getattr(obj, "method")  # aiohttp ClientResponse
    return request, method.upper() if isinstance(method, str) else None


def json_of(obj: Any) -> Any:
    """The JSON body of a response (or of an error's response) if the client parsed it or
    can parse it without I/O; None otherwise. Never raises."""
    for candidate in (obj, safe_getattr(obj, "response")):
        parse = safe_getattr(candidate, "json") if candidate is not None else None
        if callable(parse):
            try:
                body = parse()
            except Exception:
                continue
            if hasattr(body, "__await__"):  # aiohttp: the body is not read yet
                body.close()
                continue
            return body
    return None
