"""HTTP status out of responses and exceptions of any client, duck-typed, nothing imported.

requests and httpx responses have `.status_code`; aiohttp responses and errors and urllib's
`HTTPError` have `.status`; requests' `HTTPError` and httpx's `HTTPStatusError` carry the
response in `.response`.
"""

from __future__ import annotations

import socket
from typing import Any

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_HTTP_CLIENTS = frozenset({"aiohttp", "requests", "httpx", "httpcore", "urllib3"})
# Errors raised before a request could reach a server, by class name, wherever the client
# keeps them: httpx, urllib3 (inside requests' ConnectionError), aiohttp.
_NEVER_SENT = frozenset(
    {"ConnectError", "NewConnectionError", "NameResolutionError", "ClientConnectorDNSError"}
)

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


def header_values(obj: Any, name: str) -> list[str]:
    """Every value of header `name` (any case) in `obj`'s headers or its response's: one per
    occurrence where the client keeps repeats apart (httpx, aiohttp, urllib), as joined by
    the client otherwise (requests). Never raises."""
    for candidate in (obj, _safe_getattr(obj, "response")):
        headers = _safe_getattr(candidate, "headers") if candidate is not None else None
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


def _safe_getattr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property that raises tells us nothing
        return None


def request_of(obj: Any) -> Any:
    """The request behind a response or an error, or None."""
    for candidate in (obj, _safe_getattr(obj, "response")):
        if candidate is None:
            continue
        request = _safe_getattr(candidate, "request")
        if request is not None:
            return request
        info = _safe_getattr(candidate, "request_info")  # aiohttp
        if info is not None:
            return info
    return None


def method_of(obj: Any) -> str | None:
    """The HTTP method of the request behind `obj`, upper case, or None if unknown."""
    request = request_of(obj)
    method = _safe_getattr(request, "method") if request is not None else None
    if method is None:
        method = _safe_getattr(obj, "method")  # aiohttp ClientResponse
    return method.upper() if isinstance(method, str) else None


def may_repeat(obj: Any) -> bool:
    """Whether sending the request behind `obj` twice is safe: an idempotent method, an
    Idempotency-Key header, or no HTTP request at all. An HTTP client's error that does not
    say its request (aiohttp's disconnects, requests' ChunkedEncodingError) may have been
    served: not safe."""
    method = method_of(obj)
    if method is None:
        return type(obj).__module__.partition(".")[0] not in _HTTP_CLIENTS
    if method in IDEMPOTENT_METHODS:
        return True
    request = request_of(obj)
    return bool(request is not None and header_values(request, "Idempotency-Key"))


def never_sent(exc: BaseException) -> bool:
    """Whether `exc` proves its request never reached a server: refused connection, DNS
    failure (searched through causes, contexts and wrapped reasons)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo and len(seen) < 12:
        error = todo.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, (ConnectionRefusedError, socket.gaierror)):
            return True
        if type(error).__name__ in _NEVER_SENT:
            return True
        todo += [error.__cause__, error.__context__, _safe_getattr(error, "reason")]
        todo += [arg for arg in error.args if isinstance(arg, BaseException)]
    return False


def json_of(obj: Any) -> Any:
    """The JSON body of a response (or of an error's response) if the client parsed it or
    can parse it without I/O; None otherwise. Never raises."""
    for candidate in (obj, _safe_getattr(obj, "response")):
        parse = _safe_getattr(candidate, "json") if candidate is not None else None
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
