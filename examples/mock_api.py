"""A small HTTP API to run the examples against: a quota, random 503s, JSON routes, counters.

Standard library only: a `ThreadingHTTPServer` in a daemon thread on 127.0.0.1, free port.

    with MockAPI(quota=(50, 1.0), error_rate=0.05, seed=7) as api:

        @api.route("GET", "/tracks/<id>")
        def track(request: Request) -> object:
            return {"id": request.params["id"]}

        requests.get(f"{api.url}/tracks/42")  # 200, 429 or 503
        print(api.stats.requests, api.stats.throttled)

Order of checks for each request: the quota (429 with `Retry-After` when full), then the
injected failures (503), then the route (404 if none matches, 500 if the handler raises).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Request:
    """What a route handler sees."""

    method: str
    path: str
    params: dict[str, str]  # the <name> parts of the route pattern
    query: dict[str, str]
    body: Any  # the parsed JSON body, None without one


@dataclass(frozen=True)
class Reply:
    """A handler's answer when it is not a plain 200 with a JSON body."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


# A handler returns a JSON-serialisable value (sent with status 200) or a `Reply`.
Handler = Callable[[Request], object]


@dataclass
class Stats:
    """Counters since the server started; `MockAPI.stats` hands out copies."""

    requests: int = 0
    throttled: int = 0  # answered 429 by the quota
    unavailable: int = 0  # answered 503 by the injected failures
    successes: int = 0  # answered 2xx by a route
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request


class MockAPI:
    """An embedded JSON API with a sliding-window quota and seeded random 503s.

    `quota=(N, period)` admits at most N requests in any `period` seconds, counted on their
    arrival; requests it turns away (429) do not count. `error_rate` is the fraction of the
    admitted requests with a method in `error_methods` that get a 503, drawn from a
    `random.Random(seed)`. `routes` maps "METHOD /path/<param>" to handlers; `route()` adds more.
    """

    def __init__(
        self,
        *,
        quota: tuple[int, float] | None = None,
        error_rate: float = 0.0,
        error_methods: Collection[str] = ALL_METHODS,
        seed: int = 0,
        routes: Mapping[str, Handler] | None = None,
    ) -> None:
        if quota is not None and (quota[0] < 1 or quota[1] <= 0):
            raise ValueError(f"quota must be (calls >= 1, period > 0), got {quota!r}")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be between 0 and 1, got {error_rate!r}")
        self.quota = quota
        self.error_rate = error_rate
        self.error_methods = frozenset(m.upper() for m in error_methods)
        self._random = random.Random(seed)
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._lock = threading.Lock()
        self._window: deque[float] = deque()  # arrival times of the admitted requests
        self._stats = Stats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for spec, handler in (routes or {}).items():
            method, _, pattern = spec.partition(" ")
            self.add_route(method, pattern, handler)

    # -- routes ----------------------------------------------------------------------------
    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve `pattern` ("/jobs/<id>": <id> matches one path segment) with `handler`."""
        regex = re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method.upper(), re.compile(f"^{regex}$"), handler))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator form of `add_route`."""

        def register(handler: Handler) -> Handler:
            self.add_route(method, pattern, handler)
            return handler

        return register

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL, e.g. "http://127.0.0.1:41234"; only while running."""
        if self._server is None:
            raise RuntimeError("the mock API is not running; use it in a `with` block")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> MockAPI:
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                # serve_forever() checks for shutdown() every poll_interval (0.5 s by default)
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.01},
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> MockAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def stats(self) -> Stats:
        """A copy of the counters, consistent at the moment of the call."""
        with self._lock:
            return replace(self._stats, arrivals=list(self._stats.arrivals))

    # -- serving ---------------------------------------------------------------------------
    def answer(self, method: str, target: str, raw_body: bytes) -> Reply:
        """The reply to one request; the server calls this from its request threads."""
        with self._lock:  # arrival time taken under the lock, so the window stays in order
            now = time.monotonic()
            self._stats.requests += 1
            self._stats.arrivals.append(now)
            refused = self._admit(now) or self._inject_failure(method)
        if refused is not None:
            return refused
        reply = self._route(method, target, raw_body)
        if 200 <= reply.status < 300:
            with self._lock:
                self._stats.successes += 1
        return reply

    def _admit(self, now: float) -> Reply | None:
        if self.quota is None:
            return None
        limit, period = self.quota
        while self._window and self._window[0] <= now - period:
            self._window.popleft()
        if len(self._window) < limit:
            self._window.append(now)
            return None
        self._stats.throttled += 1
        retry_after = max(1, math.ceil(self._window[0] + period - now))
        body = {"error": f"rate limit of {limit} requests per {period:g}s exceeded"}
        return Reply(429, body, {"Retry-After": str(retry_after)})

    def _inject_failure(self, method: str) -> Reply | None:
        if method in self.error_methods and self._random.random() < self.error_rate:
            self._stats.unavailable += 1
            return Reply(503, {"error": "service unavailable (injected)"})
        return None

    def _route(self, method: str, target: str, raw_body: bytes) -> Reply:
        parts = urlsplit(target)
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError as exc:
            return Reply(400, {"error": f"body is not JSON: {exc}"})
        for route_method, regex, handler in self._routes:
            match = regex.match(parts.path)
            if route_method == method and match is not None:
                request = Request(
                    method, parts.path, match.groupdict(), dict(parse_qsl(parts.query)), body
                )
                try:
                    result = handler(request)
                except Exception as exc:
                    return Reply(500, {"error": f"{type(exc).__name__}: {exc}"})
                return result if isinstance(result, Reply) else Reply(200, result)
        return Reply(404, {"error": f"no route for {method} {parts.path}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog (socketserver's default is 5): a batch connecting at once would
    # overflow 5, and a dropped connection is retried by the client only after a second.
    request_queue_size = 128

    def __init__(self, api: MockAPI) -> None:
        self.api = api
        super().__init__(("127.0.0.1", 0), _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a requests.Session reuses its connection
    disable_nagle_algorithm = True  # else headers and body in two writes cost ~40 ms a reply
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        reply = self.server.api.answer(self.command, self.path, raw_body)
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    # http.server dispatches on these names.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the examples print their own account of what happened."""


def log_sleeps(quiet: bool = False) -> None:
    """Print callpolicy's log lines (every sleep, at INFO) on stdout, in order with the
    example's prints: milliseconds since start, then the message."""
    logging.basicConfig(
        stream=sys.stdout, level=logging.WARNING, format="%(relativeCreated)6.0fms  %(message)s"
    )
    logging.getLogger("callpolicy").setLevel(logging.WARNING if quiet else logging.INFO)
