"""More ways a request may be sent twice, or a call's outcome changed, found by review:
failover inside an except block, a GET failing while its body is read, an Idempotency-Key
behind a wrapped error, a stream nested in requests' `files=`, an actual_cost that raises,
a Redis that turns read-only while a call holds its slot, a hostile file name in a report."""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import aiohttp
import httpx
import pytest
import redis
import requests
from local_http import serving
from local_redis import RedisServer

from callpolicy import PolicyError, QuotaUnavailable, Registry
from callpolicy._engine.repeat import not_replayable

RegistryOf = Callable[..., Registry]
NETWORK = """
[endpoints.net]
extends = "http.network_only"
wait.strategy = "none"
stop.attempts = 3

[endpoints.any]
retry.on_exceptions = ["Exception"]
wait.strategy = "none"
stop.attempts = 3
"""


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """/slow answers after 1 s; /slowbody sends headers, then its body after 1 s."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(f"{self.command} {self.path}")
            if self.path == "/slow":
                time.sleep(1)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.flush()
            if self.path == "/slowbody":
                time.sleep(1)
            self.wfile.write(b"ok")

        do_GET = do_POST = _reply  # noqa: N815

        def log_message(self, *args: Any) -> None:
            return None

    with serving(Handler) as url:
        yield url, seen


def _settled(seen: list[str], count: int) -> list[str]:
    deadline = time.monotonic() + 3
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # a request wrongly repeated would have arrived by now
    return seen


def test_a_failover_post_inside_an_except_block_is_not_repeated(
    server: tuple[str, list[str]], registry_of: RegistryOf
) -> None:
    """The primary's refused connection (the error's context) says nothing of the
    secondary's request, which was in flight when it timed out."""
    url, seen = server

    def with_requests() -> Any:
        try:
            return requests.post("http://127.0.0.1:1/", data=b"x", timeout=0.3)
        except requests.ConnectionError:
            return requests.post(url + "/slow", data=b"x", timeout=0.3)

    def with_httpx() -> Any:
        try:
            return httpx.post("http://127.0.0.1:1/", content=b"x", timeout=0.3)
        except httpx.ConnectError:
            return httpx.post(url + "/slow", content=b"x", timeout=0.3)

    registry = registry_of(t=NETWORK)
    for send in (with_requests, with_httpx):
        seen.clear()
        with pytest.raises((requests.Timeout, httpx.TimeoutException)):
            registry.policy("t.net")(send)()
        assert _settled(seen, 1) == ["POST /slow"]


def test_a_get_failing_while_its_body_is_read_is_retried(
    server: tuple[str, list[str]], registry_of: RegistryOf
) -> None:
    url, seen = server

    async def get() -> bytes:
        timeout = aiohttp.ClientTimeout(sock_read=0.3)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url + "/slowbody") as response,
        ):
            return await response.read()

    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        asyncio.run(registry_of(t=NETWORK).policy("t.any")(get)())
    assert _settled(seen, 3) == ["GET /slowbody"] * 3


def test_an_idempotency_key_behind_a_wrapped_error_lets_a_post_be_repeated(
    server: tuple[str, list[str]], registry_of: RegistryOf
) -> None:
    url, seen = server

    class Failed(Exception):
        pass

    def send() -> Any:
        try:
            headers = {"Idempotency-Key": "k1"}
            return requests.post(url + "/slow", data=b"x", headers=headers, timeout=0.3)
        except requests.Timeout as error:
            raise Failed("upstream timed out") from error

    with pytest.raises(Failed):
        registry_of(t=NETWORK.replace('"Exception"', '"Exception"')).policy("t.any")(send)()
    assert _settled(seen, 3) == ["POST /slow"] * 3


@pytest.mark.parametrize(
    "argument",
    [
        {"file": ("a.txt", io.BytesIO(b"data"))},  # requests' and httpx's files=
        {"a": {"b": io.BytesIO(b"data")}},
        [("a.txt", io.BytesIO(b"data"))],
    ],
    ids=["files-tuple", "dict-of-dict", "list-of-tuple"],
)
def test_a_stream_nested_in_an_argument_is_found(argument: Any) -> None:
    streams = [v for v in _leaves(argument) if isinstance(v, io.BytesIO)]
    streams[0].read()
    assert "file already read" in (not_replayable((argument,), {}) or "")


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


@pytest.mark.parametrize(
    "make", [lambda: iter(collections.deque([1])), lambda: iter(bytearray(b"ab"))]
)
def test_built_in_iterators_of_any_module_are_read_once(make: Callable[[], Any]) -> None:
    assert "iterator, read only once" in (not_replayable((make(),), {}) or "")


def test_an_actual_cost_that_raises_keeps_the_result_and_sends_nothing_again(
    registry_of: RegistryOf, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def reply() -> dict[str, int]:
        calls.append(1)
        return {"id": 1}

    registry = registry_of(
        w='[quotas.t]\nlimit = "1000/1m"\nweighted = true\n[endpoints.m]\nquotas = ["t"]\n'
        'retry.on_exceptions = ["Exception"]\nwait.strategy = "none"\n'
    )
    send = registry.policy("w.m", cost=10, actual_cost=lambda r: r["usage"]["total"])(reply)
    assert send() == {"id": 1}
    assert calls == [1]
    assert "actual_cost raised KeyError" in caplog.text


def test_a_redis_turning_read_only_during_a_call_changes_nothing_it_returns_or_raises(
    redis_server: RedisServer, registry_of: RegistryOf
) -> None:
    """After a failover the old primary is a replica: giving the slot back fails (READONLY),
    and the call still returns (or raises) what the function did."""
    url = redis_server.url
    registry = registry_of(
        r=f'[quotas.slot]\nconcurrency = 2\nstorage = "{url}"\non_unavailable = "fail-open"\n'
        '[endpoints.e]\nquotas = ["slot"]\n'
    )
    client = redis.Redis.from_url(url)

    class Failed(Exception):
        pass

    def demote_then(value: Any) -> Any:
        client.replicaof("127.0.0.1", "1")
        if isinstance(value, Exception):
            raise value
        return value

    try:
        decorated = registry.policy("r.e")(demote_then)
        assert decorated(42) == 42
        client.replicaof("no", "one")
        with pytest.raises(Failed):
            decorated(Failed("the function's own"))
        assert decorated(7) == 7  # admitted fail-open while read-only
    finally:
        client.replicaof("no", "one")


def test_a_file_name_cannot_fake_a_line_of_a_report(tmp_path: Any) -> None:
    (tmp_path / "a\x1b[31mRED\nfake.toml").write_text("[endpoints.x]\nstop.attempts = 0\n")
    with pytest.raises(PolicyError) as raised:
        Registry(tmp_path)
    assert "\x1b" not in str(raised.value) and "\nfake.toml" not in str(raised.value)
    assert "\\x1b[31mRED\\nfake.toml" in str(raised.value)


def test_a_report_shows_at_most_200_problems(tmp_path: Any) -> None:
    keys = "\n".join(f"bad{i} = 1" for i in range(1000))
    (tmp_path / "s.toml").write_text(f"[endpoints.x]\n{keys}\n")
    with pytest.raises(PolicyError) as raised:
        Registry(tmp_path)
    assert len(raised.value.problems) == 1000
    assert str(raised.value).count("\n") == 201  # header, 200 problems, "... and 800 more"
    assert str(raised.value).endswith("... and 800 more")


def test_a_database_cursor_argument_is_given_again(registry_of: RegistryOf) -> None:
    import sqlite3  # noqa: PLC0415 (this test only)

    attempts = []

    def insert(cursor: sqlite3.Cursor, value: int) -> int:
        attempts.append(value)
        if len(attempts) == 1:
            raise sqlite3.OperationalError("database is locked")
        cursor.execute("select ?", (value,))
        return int(cursor.fetchone()[0])

    policy = '[endpoints.e]\nretry.on_exceptions = ["sqlite3.OperationalError"]\n'
    registry = registry_of(db=policy + 'wait.strategy = "none"\n')
    cursor = sqlite3.connect(":memory:").cursor()
    assert registry.policy("db.e")(insert)(cursor, 5) == 5
    assert attempts == [5, 5]


def test_a_consumed_csv_reader_is_read_once() -> None:
    import csv  # noqa: PLC0415 (this test only)

    reader = csv.DictReader(io.StringIO("a,b\n1,2\n3,4\n"))
    next(reader)
    assert "iterator, read only once" in (not_replayable((reader,), {}) or "")


def test_a_refused_post_wrapped_without_from_is_retried(registry_of: RegistryOf) -> None:
    """The wrapper's error has no trace of the client; its context proves nothing left."""

    class ServiceDown(Exception):
        pass

    attempts = []

    def send() -> Any:
        attempts.append(1)
        try:
            return requests.post("http://127.0.0.1:1/", data=b"x", timeout=1)
        except requests.ConnectionError:
            raise ServiceDown("down")  # noqa: B904 (what a user writes)

    with pytest.raises(ServiceDown):
        registry_of(t=NETWORK).policy("t.any")(send)()
    assert len(attempts) == 3


@pytest.mark.parametrize("client", ["urllib3", "http.client"])
def test_a_failover_post_of_any_client_is_not_repeated(
    server: tuple[str, list[str]], registry_of: RegistryOf, client: str
) -> None:
    import http.client  # noqa: PLC0415 (this test only)

    import urllib3  # noqa: PLC0415 (this test only)

    url, seen = server
    port = int(url.rsplit(":", 1)[1])

    def send() -> Any:
        try:
            return requests.get("http://127.0.0.1:1/status", timeout=1)
        except requests.ConnectionError:
            if client == "urllib3":
                pool = urllib3.PoolManager(retries=False, timeout=0.3)
                return pool.request("POST", url + "/slow", body=b"x")
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=0.3)
            connection.request("POST", "/slow", body=b"x")
            return connection.getresponse()

    with pytest.raises(Exception):  # noqa: B017 (each client's own timeout)
        registry_of(t=NETWORK).policy("t.any")(send)()
    assert _settled(seen, 1) == ["POST /slow"]


@pytest.mark.parametrize("mode", ["fail-closed", "fail-open"])
def test_a_redis_mistake_does_what_on_unavailable_says_and_is_logged_as_failing(
    redis_server: RedisServer,
    registry_of: RegistryOf,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    """WRONGTYPE (another application's key) is never raised as is: the quota does what
    on_unavailable says, with the error chained, and the log says "failing", not
    "unreachable"."""
    url = redis_server.url
    registry = registry_of(
        r=f'[quotas.rate]\nlimit = "5/1m"\nstorage = "{url}"\non_unavailable = "{mode}"\n'
        '[endpoints.e]\nquotas = ["rate"]\n'
    )

    def one() -> int:
        return 1

    call = registry.policy("r.e")(one)
    assert call() == 1
    client = redis.Redis.from_url(url)
    keys = client.keys("{callpolicy:*")
    assert keys
    for key in keys:
        client.delete(key)
        client.set(key, "someone else's")
    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        if mode == "fail-open":
            assert call() == 1
        else:
            with pytest.raises(QuotaUnavailable) as down:
                call()
            assert isinstance(down.value.__cause__, redis.ResponseError)
            assert "WRONGTYPE" in str(down.value)
    assert "failing (WRONGTYPE" in caplog.text


def test_a_unicode_file_name_is_shown_as_it_is(tmp_path: Any) -> None:
    (tmp_path / "日本\u3000語.toml").write_text("[endpoints.x]\nstop.attempts = 0\n")
    with pytest.raises(PolicyError) as raised:
        Registry(tmp_path)
    assert "日本\u3000語.toml" in str(raised.value)
