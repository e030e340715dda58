"""A local HTTP server whose limit changes mid-run (20/s, then 10/s, then 30/s), announcing it
in one header style and enforcing it: a sliding window of one second over the requests it
accepted, 429 for the rest. The phases start with the first request and each lasts
`phase_seconds`; every response names its phase in `X-Phase`.

Styles: "github" (x-ratelimit-limit, -remaining, -used, -reset, -resource), "ietf"
(RateLimit-Policy "default";q=N;w=1 and RateLimit "default";r=..;t=..), "ietf-old"
(RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset and RateLimit-Policy N;w=1), or
"none" (SILENT: no header at all, not even Retry-After; only the 429s say anything).
Used by examples/learned_limit.py, examples/adaptive_rate.py, benchmarks/adaptive.py and the
tests of learned limits and adaptive rates.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PHASES = (20, 10, 30)
STYLES = ("github", "ietf", "ietf-old")
SILENT = "none"  # a server announcing nothing


class ChangingLimit:
    """The server's state: when it started, what it accepted, what it answered."""

    def __init__(self, style: str, phase_seconds: float) -> None:
        self.style = style
        self.phase_seconds = phase_seconds
        self.started: float | None = None
        self.accepted: deque[float] = deque()
        self.answered: list[tuple[int, int]] = []  # (phase, status)
        self.lock = threading.Lock()

    def answer(self) -> tuple[int, dict[str, str]]:
        with self.lock:
            now = time.monotonic()
            if self.started is None:
                self.started = now
            phase = min(int((now - self.started) / self.phase_seconds), len(PHASES) - 1)
            limit = PHASES[phase]
            while self.accepted and self.accepted[0] <= now - 1.0:
                self.accepted.popleft()
            status = 200 if len(self.accepted) < limit else 429
            if status == 200:
                self.accepted.append(now)
            self.answered.append((phase, status))
            remaining = max(limit - len(self.accepted), 0)
            reset = 1.0 - (now - self.accepted[0]) if self.accepted else 0.0
        headers = {"X-Phase": str(phase), **announce(self.style, limit, remaining, reset)}
        if status == 429 and self.style != SILENT:
            headers["Retry-After"] = "1"
        return status, headers

    def refusals(self) -> list[int]:
        """429s answered in each phase."""
        return [sum(1 for p, s in self.answered if p == i and s == 429) for i in range(3)]

    def accepted_in(self) -> list[int]:
        """Requests accepted (200) in each phase."""
        return [sum(1 for p, s in self.answered if p == i and s == 200) for i in range(3)]


def announce(style: str, limit: int, remaining: int, reset: float) -> dict[str, str]:
    seconds = max(int(reset + 0.999), 0)
    if style == SILENT:
        return {}
    if style == "github":
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-used": str(limit - remaining),
            "x-ratelimit-reset": str(int(time.time()) + seconds),
            "x-ratelimit-resource": "core",
        }
    if style == "ietf":
        return {
            "RateLimit-Policy": f'"default";q={limit};w=1',
            "RateLimit": f'"default";r={remaining};t={seconds}',
        }
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(seconds),
        "RateLimit-Policy": f"{limit};w=1",
    }


def handler_for(state: ChangingLimit) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # kept-alive connections

        def do_GET(self) -> None:
            status, headers = state.answer()
            body = b"ok" if status == 200 else b"slow down"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def changing_server(style: str, phase_seconds: float = 1.5) -> Iterator[tuple[str, ChangingLimit]]:
    """(base URL, state) of a server changing its limit, for the block."""
    state = ChangingLimit(style, phase_seconds)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
