"""May a call be sent again? The request's method and Idempotency-Key, where an error was
raised (inside an HTTP client, a request was in flight), whether it never left, and whether
the call's arguments can be given again (a consumed generator or a read file cannot)."""

from __future__ import annotations

import collections
import inspect
import io
import socket
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

from callpolicy._engine.http import (
    header_values,
    method_of,
    request_and_method,
    safe_getattr,
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
# Code of these packages sends HTTP requests: an error raised in it was raised while one was
# in flight, whatever its type (aiohttp's timeouts are the builtin TimeoutError).
_HTTP_CLIENTS = ("aiohttp", "requests", "httpx", "httpcore", "urllib3")
_HTTP_MODULES = ("urllib.request", "http.client")  # of the standard library: these only
# Errors raised before a request could reach a server, by class name, wherever the client
# keeps them: httpx, urllib3 (inside requests' ConnectionError), aiohttp.
_NEVER_SENT = frozenset(
    {"ConnectError", "NewConnectionError", "NameResolutionError", "ClientConnectorDNSError"}
)
_MAX_ERRORS = 12  # errors of a chain looked at
_MAX_FRAMES = 2000  # frames of one traceback looked at
_MAX_DEPTH = 3  # how deep into lists, tuples and dicts an argument is looked into
_MAX_ITEMS = 100  # items of a list or dict argument looked at


class InFlight:
    """An HTTP request that an error was raised while sending: its method and request, as
    far as the client's frames tell (None when they do not)."""

    __slots__ = ("method", "request")

    def __init__(self, method: str | None, request: Any) -> None:
        self.method = method
        self.request = request


def may_repeat(obj: Any) -> bool:
    """Whether sending the request behind `obj` (a response, or an error) twice is safe: an
    idempotent method, an Idempotency-Key header, or no HTTP request at all. An error raised
    inside an HTTP client whose request cannot be told may have been served: not safe."""
    request, method = request_and_method(obj)
    if method is None and isinstance(obj, BaseException):
        flight = in_flight(obj)
        if flight is None:  # not raised inside an HTTP client: an HTTP client's error type
            return _module_of(obj) not in _HTTP_CLIENTS  # still says it may have been sent
        method, request = flight.method, flight.request or request
    elif method is None:
        return _module_of(obj) not in _HTTP_CLIENTS
    if method in IDEMPOTENT_METHODS:
        return True
    return bool(request is not None and header_values(request, "Idempotency-Key"))


def in_flight(exc: BaseException) -> InFlight | None:
    """The HTTP request `exc` (or an error of its chain) was raised while sending, if it was
    raised inside an HTTP client's code; None if not."""
    for error in _chain(exc):  # the error's own frames first: a context may be an earlier
        found = _in_flight_in(error)  # request's (a failover in an except block)
        if found is not None:
            return found
    return None


def _in_flight_in(error: BaseException) -> InFlight | None:
    """What the HTTP client frames of `error`'s own traceback were sending, if it has any."""
    found: InFlight | None = None
    for frame in _frames(error):
        if not _in_http_client(frame):
            continue
        method, request = _request_in(frame)
        if request is not None:  # a request object: its headers tell Idempotency-Key
            return InFlight(method, request)
        if method is not None and (found is None or found.method is None):
            found = InFlight(method, None)
        found = found or InFlight(None, None)
    return found


def never_sent(exc: BaseException) -> bool:
    """Whether `exc` proves its request never reached a server: refused connection, DNS
    failure (searched through causes and wrapped reasons; through contexts too when `exc`
    was not raised by an HTTP client itself but by code wrapping its error)."""
    contexts = _in_flight_in(exc) is None  # else a context is an earlier request's (failover)
    for error in _chain(exc, contexts):
        if isinstance(error, (ConnectionRefusedError, socket.gaierror)):
            return True
        if type(error).__name__ in _NEVER_SENT:
            return True
    return False


def not_replayable(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """Why the call's arguments cannot be given to the function again (an argument read
    only once, already read), naming the argument; None if they can."""
    for index, value in enumerate(args):
        why = _spent_within(value)
        if why is not None:
            return f"argument {index + 1} {why}"
    for key, value in kwargs.items():
        why = _spent_within(value)
        if why is not None:
            return f"argument {key!r} {why}"
    return None


_ONE_SHOT_MODULES = frozenset(
    {"builtins", "itertools", "collections", "_collections", "array", "csv", "_csv"}
)


_PLAIN = frozenset({str, bytes, bytearray, int, float, bool, type(None), range})


def _spent_within(value: Any, depth: int = _MAX_DEPTH) -> str | None:
    """Why `value`, or an item of a list, tuple or dict `value` (nested as in requests'
    `files={"f": ("name", stream)}`), would not be the same if given again; None if it
    would."""
    if type(value) in _PLAIN:
        return None
    if isinstance(value, Mapping):
        items: list[Any] = list(value.values())[:_MAX_ITEMS]
    elif isinstance(value, (list, tuple)):
        items = list(value)[:_MAX_ITEMS]
    else:
        return _spent(value)
    if depth <= 1:
        return None
    for item in items:
        why = _spent_within(item, depth - 1)
        if why is not None:
            return why
    return None


def _spent(value: Any) -> str | None:
    """Why `value` would not be the same if given again; None if it would."""
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        return None
    if inspect.isgenerator(value):
        if inspect.getgeneratorstate(value) == inspect.GEN_CREATED:
            return None
        return "is a generator already iterated: it cannot be sent again"
    if inspect.isasyncgen(value):
        return "is an async generator, read only once: it cannot be sent again"
    if isinstance(value, io.IOBase):
        try:
            position = value.tell()
        except Exception:
            return "is a stream that cannot say its position: it cannot be sent again"
        if position != 0:
            return f"is a file already read to position {position}: it cannot be sent again"
        return None
    if isinstance(value, Iterator) and type(value).__module__ in _ONE_SHOT_MODULES:
        # iter(), map(), zip(), itertools, a deque's, a csv reader: read once. Another
        # object that happens to be an iterator (a database cursor, a decorated __next__'s
        # self) may well be given again.
        return "is an iterator, read only once: it cannot be sent again"
    return None


def _chain(exc: BaseException, contexts: bool = True) -> list[BaseException]:
    """`exc`, its causes, contexts, wrapped reasons and error arguments, each once."""
    if (
        exc.__cause__ is None
        and (exc.__context__ is None or not contexts)
        and not any(isinstance(arg, BaseException) for arg in exc.args)
        and safe_getattr(exc, "reason") is None
    ):
        return [exc]  # the common case, found without a search
    seen: dict[int, BaseException] = {}  # in order: the error first, then breadth first
    todo: collections.deque[Any] = collections.deque([exc])
    while todo and len(seen) < _MAX_ERRORS:
        error = todo.popleft()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen[id(error)] = error
        todo += [error.__cause__, safe_getattr(error, "reason")]
        todo += [arg for arg in error.args if isinstance(arg, BaseException)]
        if contexts:
            todo.append(error.__context__)
    return list(seen.values())


def _frames(error: BaseException) -> list[FrameType]:
    frames: list[FrameType] = []
    traceback = error.__traceback__
    while traceback is not None and len(frames) < _MAX_FRAMES:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    return frames


def _request_in(frame: FrameType) -> tuple[str | None, Any]:
    """The method (and request) an HTTP client's frame was sending, from its locals."""
    names = frame.f_locals
    method = names.get("method")
    for key in ("request", "req", "request_info"):
        request = names.get(key)
        found = method_of(request) if request is not None else None
        if found is not None:
            return found, request
        get_method = safe_getattr(request, "get_method")  # urllib.request.Request
        if callable(get_method):
            try:
                return str(get_method()).upper(), request
            except Exception:
                pass
    own = names.get("self")  # a response reading its body, a connection sending
    if own is not None:
        own_request, own_method = request_and_method(own)
        if own_method is not None:
            return own_method, own_request
    if isinstance(method, str):
        return method.upper(), None
    own = safe_getattr(own, "_method")  # http.client.HTTPConnection
    return (own.upper(), None) if isinstance(own, str) else (None, None)


def _module_of(obj: Any) -> str:
    return type(obj).__module__.partition(".")[0]


def _in_http_client(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__")
    if not isinstance(name, str):
        return False
    return name.partition(".")[0] in _HTTP_CLIENTS or name.startswith(_HTTP_MODULES)
