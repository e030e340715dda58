"""Real HTTP clients (requests, httpx sync and async, aiohttp) against a local server: hints,
idempotency and account-level limits behave the same through every client."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from local_http import serving

from callpolicy import AccountLimit, FakeClock, Registry

Reply = tuple[int, list[tuple[str, str]], dict[str, Any]]
RegistryOf = Callable[..., Registry]


class Script:
    """What the server answers, request after request, and what it was asked."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.methods: list[str] = []

    def answer(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.methods = []


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            script.methods.append(self.command)
            status, headers, body = script.replies.pop(0) if script.replies else (200, [], {})
            if status == 0:  # served, then the connection dropped before any answer
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers:  # raw UTF-8: a hostile server sends what it likes
                self._headers_buffer.append(f"{name}: {value}\r\n".encode())  # type: ignore[attr-defined]
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _reply  # noqa: N815

        def log_message(self, *args: Any) -> None:
            return None

    with serving(Handler) as url:
        yield url, script


POLICY = """
[endpoints.call]
retry.on_status = [429, 503]
retry.on_exceptions = ["?requests.ConnectionError", "?httpx.TransportError",
                       "?aiohttp.ClientConnectionError", "urllib.error.URLError"]
retry.give_up = [{ status = 429, json = { type = "insufficient_quota" } }]
wait = { strategy = "fixed", seconds = "1s", server_hints = ["Retry-After"], hint_cap = "30s" }
stop.attempts = 3
"""

Call = Callable[[str, str, dict[str, str]], Any]  # (method, url, headers) -> status


def requests_call(method: str, url: str, headers: dict[str, str]) -> int:
    response = requests.request(method, url, headers=headers, timeout=5)
    response.raise_for_status()  # HTTPError carries the response: its status and headers
    return response.status_code


def httpx_call(method: str, url: str, headers: dict[str, str]) -> int:
    response = httpx.request(method, url, headers=headers, timeout=5)
    response.raise_for_status()
    return response.status_code


async def httpx_async_call(method: str, url: str, headers: dict[str, str]) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.request(method, url, headers=headers)
        response.raise_for_status()
        return response.status_code


async def aiohttp_call(method: str, url: str, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers) as response,
    ):
        response.raise_for_status()
        return response.status


def urllib_call(method: str, url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:  # HTTPError for 4xx/5xx
        status: int = response.status
        return status


CLIENTS: dict[str, Callable[..., Any]] = {
    "requests": requests_call,
    "urllib": urllib_call,
    "httpx": httpx_call,
    "httpx-async": httpx_async_call,
    "aiohttp": aiohttp_call,
}


@pytest.fixture(params=list(CLIENTS))
def call(request: pytest.FixtureRequest, registry_of: RegistryOf) -> Callable[..., Any]:
    """The client under test, decorated, as a plain function (async ones run to the end)."""
    import asyncio  # noqa: PLC0415 (only the async clients need it)

    decorated = registry_of(api=POLICY).policy("api.call")(CLIENTS[request.param])
    if request.param in ("httpx-async", "aiohttp"):

        def run(method: str, url: str, headers: dict[str, str] | None = None) -> Any:
            coroutine: Awaitable[Any] = decorated(method, url, headers or {})
            return asyncio.run(coroutine)  # type: ignore[arg-type]

        return run
    return lambda method, url, headers=None: decorated(method, url, headers or {})


def test_a_get_waits_what_retry_after_says(
    server: tuple[str, Script], call: Callable[..., Any], clock: FakeClock
) -> None:
    url, script = server
    script.answer((429, [("Retry-After", "7")], {}), (200, [], {}))
    assert call("GET", url) == 200
    assert clock.sleeps == [7.0]


@pytest.mark.parametrize("value", ["-1", "NaN", "9" * 400, "5 seconds", "\uff15", ""])
def test_a_hostile_retry_after_falls_back_to_the_backoff(
    server: tuple[str, Script], call: Callable[..., Any], clock: FakeClock, value: str
) -> None:
    url, script = server
    script.answer((503, [("Retry-After", value)], {}), (200, [], {}))
    assert call("GET", url) == 200
    assert clock.sleeps == [1.0]


def test_repeated_retry_after_headers_are_not_obeyed(
    server: tuple[str, Script], call: Callable[..., Any], clock: FakeClock
) -> None:
    url, script = server
    script.answer((503, [("Retry-After", "20"), ("Retry-After", "25")], {}), (200, [], {}))
    assert call("GET", url) == 200
    assert clock.sleeps == [1.0]


def test_a_post_that_may_have_been_served_is_not_repeated(
    server: tuple[str, Script],
    call: Callable[..., Any],
    clock: FakeClock,
) -> None:
    url, script = server
    script.answer((503, [], {}), (200, [], {}))
    # urllib's HTTPError does not carry its request: its method is read from the frames of
    # the client that raised it.
    with pytest.raises(Exception) as raised:
        call("POST", url)
    assert "503" in str(raised.value)
    assert script.methods == ["POST"]


def test_a_post_the_server_refused_with_a_hint_is_repeated(
    server: tuple[str, Script], call: Callable[..., Any], clock: FakeClock
) -> None:
    url, script = server
    script.answer((429, [("Retry-After", "2")], {}), (200, [], {}))
    assert call("POST", url) == 200
    assert script.methods == ["POST", "POST"]


def test_a_post_with_an_idempotency_key_is_repeated(
    server: tuple[str, Script], call: Callable[..., Any], clock: FakeClock
) -> None:
    url, script = server
    script.answer((503, [], {}), (200, [], {}))
    assert call("POST", url, {"Idempotency-Key": "order-42"}) == 200
    assert script.methods == ["POST", "POST"]


def test_a_post_that_never_left_is_repeated(call: Callable[..., Any], clock: FakeClock) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Exception):  # noqa: B017 - each client has its own error
        call("POST", f"http://127.0.0.1:{port}/")
    assert clock.sleeps == [1.0, 1.0]  # refused every time, so retried to the last attempt


def test_an_account_level_limit_stops_at_once(
    server: tuple[str, Script],
    call: Callable[..., Any],
    clock: FakeClock,
    request: pytest.FixtureRequest,
) -> None:
    url, script = server
    script.answer((429, [], {"type": "insufficient_quota"}), (200, [], {}))
    if "aiohttp" in request.node.name or "urllib" in request.node.name:
        # aiohttp's ClientResponseError carries no body and urllib's HTTPError keeps it
        # unread, so a JSON rule cannot match them (docs/policies.md says so): the 429 is
        # retried like any other.
        assert call("GET", url) == 200
        assert script.methods == ["GET", "GET"]
        return
    with pytest.raises(AccountLimit, match=r"HTTP 429, type = 'insufficient_quota'"):
        call("GET", url)
    assert clock.sleeps == []
    assert script.methods == ["GET"]


def test_a_post_whose_answer_was_lost_is_not_repeated(
    server: tuple[str, Script],
    call: Callable[..., Any],
    clock: FakeClock,
    request: pytest.FixtureRequest,
) -> None:
    url, script = server
    script.answer((0, [], {}), (200, [], {}))
    with pytest.raises(Exception):  # noqa: B017 - each client has its own error
        call("POST", url)
    assert script.methods == ["POST"]  # the server got it once: it may have done the work
