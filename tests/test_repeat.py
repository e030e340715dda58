"""Nothing sent twice that may have been served: a request in flight when its client raised
(a timeout of any type, from any client) is repeated only for idempotent methods, and a call
whose arguments were read once (a generator, a file, an iterator) is never repeated with
something else than what the first attempt sent."""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from local_http import serving

from callpolicy import Registry, RetryExhausted
from callpolicy._engine.repeat import in_flight, may_repeat, not_replayable

RegistryOf = Callable[..., Registry]


class Seen:
    """What the server received: (method, body) per request; `delay` before answering."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self.lock = threading.Lock()


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self) -> None:
            if self.headers.get("Transfer-Encoding") == "chunked":
                body = self._chunks()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with seen.lock:
                seen.requests.append((self.command, body))
                status = seen.statuses.pop(0) if seen.statuses else 200
            time.sleep(seen.delay)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _chunks(self) -> bytes:
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                chunk = self.rfile.read(size + 2)[:size]
                if not size:
                    return data
                data += chunk

        do_GET = do_POST = do_PUT = _reply  # noqa: N815

        def log_message(self, *args: Any) -> None:
            return None

    with serving(Handler) as url:
        yield url, seen


TIMEOUTS = """
[endpoints.call]
retry.on_exceptions = ["TimeoutError", "asyncio.TimeoutError", "?requests.Timeout",
                       "?httpx.TimeoutException", "?aiohttp.ServerTimeoutError", "OSError"]
wait.strategy = "none"
stop.attempts = 3
"""
TIMEOUT = 0.2  # the client's; the server answers after 0.5 s


def requests_send(method: str, url: str) -> int:
    return requests.request(method, url, timeout=TIMEOUT).status_code


def httpx_send(method: str, url: str) -> int:
    return httpx.request(method, url, timeout=TIMEOUT).status_code


def urllib_send(method: str, url: str) -> int:
    request = urllib.request.Request(url, method=method, data=b"x" if method != "GET" else None)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        status: int = response.status
        return status


async def aiohttp_send(method: str, url: str) -> int:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url) as response,
    ):
        return response.status


async def httpx_async_send(method: str, url: str) -> int:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        return (await client.request(method, url)).status_code


async def asyncio_timeout_send(method: str, url: str) -> int:
    """The caller's own timeout around aiohttp: the TimeoutError is raised in asyncio, with
    aiohttp's cancelled request as its context."""

    async def send(session: aiohttp.ClientSession) -> int:
        async with session.request(method, url) as response:
            return response.status

    async with aiohttp.ClientSession() as session:
        return await asyncio.wait_for(send(session), TIMEOUT)


SENDERS: dict[str, Callable[..., Any]] = {
    "requests": requests_send,
    "httpx": httpx_send,
    "urllib": urllib_send,
    "aiohttp": aiohttp_send,
    "httpx-async": httpx_async_send,
    "aiohttp-in-wait_for": asyncio_timeout_send,
}


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    outcome = fn(*args)
    return asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome


@pytest.mark.parametrize("client", list(SENDERS))
@pytest.mark.parametrize(("method", "sent"), [("POST", 1), ("GET", 3)])
def test_a_request_that_timed_out_is_repeated_only_if_idempotent(
    server: tuple[str, Seen], registry_of: RegistryOf, client: str, method: str, sent: int
) -> None:
    url, seen = server
    seen.delay = 0.5
    send = registry_of(api=TIMEOUTS).policy("api.call")(SENDERS[client])
    with pytest.raises(Exception) as raised:  # each client raises its own
        _run(send, method, url)
    assert "imeout" in type(raised.value).__name__ + repr(raised.value)
    deadline = time.monotonic() + 2
    while len(seen.requests) < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # a request wrongly repeated would have arrived by now
    assert [m for m, _ in seen.requests] == [method] * sent


def test_the_shipped_network_only_policy_does_not_repeat_a_timed_out_post(
    server: tuple[str, Seen], tmp_path: Any
) -> None:
    url, seen = server
    seen.delay = 0.5
    (tmp_path / "api.toml").write_text('[endpoints.post]\nextends = "http.network_only"\n')
    registry = Registry(tmp_path)
    send = registry.policy("api.post")(aiohttp_send)
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        asyncio.run(send("POST", url))
    time.sleep(0.1)
    assert [m for m, _ in seen.requests] == ["POST"]


BODY_POLICY = """
[endpoints.put]
retry.on_exceptions = ["?requests.HTTPError"]
retry.on_status = [503]
wait.strategy = "none"
stop.attempts = 3
"""


def put(url: str, data: Any) -> int:
    response = requests.put(url, data=data, timeout=5)
    response.raise_for_status()
    return response.status_code


def put_status(url: str, data: Any) -> requests.Response:
    return requests.put(url, data=data, timeout=5)


@pytest.mark.parametrize(
    ("make_body", "why"),
    [
        (lambda: (part for part in [b"a", b"b"]), "generator already iterated"),
        (lambda: iter([b"a", b"b"]), "iterator, read only once"),
        (lambda: io.BytesIO(b"ab"), "file already read to position 2"),
    ],
    ids=["generator", "iterator", "file"],
)
def test_a_body_read_once_is_never_sent_again(
    server: tuple[str, Seen],
    registry_of: RegistryOf,
    make_body: Callable[[], Any],
    why: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, seen = server
    seen.statuses = [503, 200]
    registry = registry_of(api=BODY_POLICY)
    with pytest.raises(requests.HTTPError) as raised:
        registry.policy("api.put")(put)(url, make_body())
    assert seen.requests == [("PUT", b"ab")]
    notes = getattr(raised.value, "__notes__", None)
    if notes is not None:  # Python 3.11+
        assert any(why in note for note in notes)
    assert why in caplog.text
    # Retrying on the returned response instead: RetryExhausted says why.
    seen.statuses = [503, 200]
    seen.requests.clear()
    with pytest.raises(RetryExhausted, match=why):
        registry.policy("api.put")(put_status)(url, make_body())
    assert seen.requests == [("PUT", b"ab")]


def test_a_body_that_can_be_sent_again_is_sent_again_whole(
    server: tuple[str, Seen], registry_of: RegistryOf
) -> None:
    url, seen = server
    seen.statuses = [503, 200]
    assert registry_of(api=BODY_POLICY).policy("api.put")(put)(url, b"ab") == 200
    assert seen.requests == [("PUT", b"ab"), ("PUT", b"ab")]


@pytest.mark.parametrize(
    "value",
    [
        b"bytes",
        "text",
        [1, 2, 3],
        {"a": 1},
        (x for x in "unstarted"),
        io.BytesIO(b"at position 0"),
        range(3),
        None,
        42,
    ],
    ids=repr,
)
def test_arguments_that_can_be_given_again(value: Any) -> None:
    assert not_replayable((value,), {"also": value}) is None


def _consumed_generator() -> Any:
    generator = (x for x in "ab")
    next(generator)
    return generator


async def _agen() -> Any:
    yield b"x"


def _read_file() -> io.BytesIO:
    stream = io.BytesIO(b"abc")
    stream.read(1)
    return stream


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (_consumed_generator(), "generator already iterated"),
        (map(str, [1]), "iterator, read only once"),
        (itertools.count(), "iterator, read only once"),
        (_read_file(), "file already read to position 1"),
        ({"files": _read_file()}, "file already read"),
        ([b"ok", iter([1])], "iterator, read only once"),
    ],
    ids=["generator", "map", "count", "file", "dict-of-file", "list-of-iterator"],
)
def test_arguments_read_once_are_named(value: Any, why: str) -> None:
    assert why in (not_replayable((), {"data": value}) or "")
    assert "argument 'data'" in (not_replayable((), {"data": value}) or "")
    assert "argument 1" in (not_replayable((value,), {}) or "")


def test_an_async_generator_argument_is_read_once() -> None:
    agen = _agen()
    assert "async generator" in (not_replayable((agen,), {}) or "")
    asyncio.run(agen.aclose())


def test_an_error_raised_outside_any_http_client_may_be_repeated() -> None:
    def fail() -> None:
        raise TimeoutError("our own")

    try:
        fail()
    except TimeoutError as error:
        assert in_flight(error) is None
        assert may_repeat(error)
