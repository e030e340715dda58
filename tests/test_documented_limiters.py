"""The lines of docs/policies.md "Match your server's limiter" with no real server to start
(tests/test_real_limiters.py has nginx and HAProxy): each against a local HTTP server counting
the way the server or API documents it, answering 429 when its limiter refuses. No call is
refused, made sequentially, from threads (requests) and from asyncio tasks (aiohttp).

The models are written here from the servers' documentation, independently of callpolicy's
counters; each counts a request when its handler starts (the request line and headers read):

* Envoy's local rate limit (`token_bucket: max_tokens, tokens_per_fill, fill_interval`). Up to
  1.30 a timer added `tokens_per_fill` to the bucket once every `fill_interval`, all at once
  (`TimerTokenBucket`); since 1.31.0 (its changelog: "non-timer based token bucket"; the
  runtime guard `envoy.reloadable_features.no_timer_based_rate_limit_token_bucket` brought the
  timer back until it was removed) the bucket refills continuously at
  `tokens_per_fill / fill_interval` (`AtomicTokenBucketImpl`). Both start full. The two need
  different recipes: a token bucket matches the continuous one and is refused by the timer,
  whose fill comes a whole interval after the bucket emptied; a sliding window of max_tokens
  per fill_interval is safe against both (a timer's fill opens a fixed window; a continuous
  bucket of that size and rate admits whatever a sliding window of that size and period
  does).
* AWS API Gateway throttling: a token bucket, the rate refilled continuously, the burst its
  size (one token a request).
* "N per rolling window" (Spotify's rolling 30 s window): at most N in any (t - P, t].
* Fixed windows aligned to the clock (GitHub's hourly limit, reset at a stated epoch): at most
  N in each [k x P, (k + 1) x P) of time.time(). A sliding window is safe against any fixed
  window; callpolicy's fixed window is not, as its windows open at the first call, not at the
  server's boundaries (shown below).

Periods are scaled down to a second; the servers refuse without counting the refusal.

The window recipes rely on the windows' default guard (20 ms): a window counts a call when it
is admitted, the server when the call reaches it, and the first call of a new connection
reaches it later than the next ones (see RECIPES)."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import requests
from local_http import running
from recipe_calls import ATTEMPTS, recipe_policies, statuses_from_threads, statuses_in_mode

from callpolicy import Registry

if TYPE_CHECKING:
    from conftest import WritePolicies


# -- the models ------------------------------------------------------------------------------
class Limiter(Protocol):
    def clock(self) -> float: ...
    def accepts(self, now: float) -> bool: ...


class EnvoyTimerBucket:
    """Envoy's local rate limit up to 1.30: `max_tokens` at first; every `fill_interval` a
    timer adds `tokens_per_fill`, never above `max_tokens`; a request takes a token or is
    refused. The timer is armed when Envoy loads the filter: here, at the first request (so
    the first fill comes one interval after it). A real timer fires a little late, never early:
    its fixed windows are at least one interval long."""

    def __init__(self, max_tokens: int, tokens_per_fill: int, fill_interval: float) -> None:
        self.max_tokens, self.per_fill, self.interval = max_tokens, tokens_per_fill, fill_interval
        self.tokens = max_tokens
        self.armed: float | None = None
        self.fills = 0

    def clock(self) -> float:
        return time.monotonic()

    def accepts(self, now: float) -> bool:
        if self.armed is None:
            self.armed = now
        due = math.floor((now - self.armed) / self.interval)
        if due > self.fills:
            self.tokens = min(self.max_tokens, self.tokens + (due - self.fills) * self.per_fill)
            self.fills = due
        if self.tokens == 0:
            return False
        self.tokens -= 1
        return True


class TokenBucket:
    """A token bucket refilled continuously: `size` tokens at first, `rate` more a second,
    never above `size`; a request takes one or is refused. AWS API Gateway (rate, burst =
    size) and Envoy's local rate limit since 1.31, kept as Envoy's AtomicTokenBucketImpl keeps
    it: the one instant at which the bucket was (or would have been) empty."""

    def __init__(self, size: int, rate: float) -> None:
        self.size, self.rate = size, rate
        self.empty_at = -math.inf  # full

    def clock(self) -> float:
        return time.monotonic()

    def accepts(self, now: float) -> bool:
        tokens = min(self.size, (now - self.empty_at) * self.rate)
        if tokens < 1:
            return False
        self.empty_at = now - (tokens - 1) / self.rate
        return True


class RollingWindow:
    """At most `limit` accepted requests in any (t - period, t]."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit, self.period = limit, period
        self.accepted: deque[float] = deque()

    def clock(self) -> float:
        return time.monotonic()

    def accepts(self, now: float) -> bool:
        while self.accepted and self.accepted[0] <= now - self.period:
            self.accepted.popleft()
        if len(self.accepted) >= self.limit:
            return False
        self.accepted.append(now)
        return True


class ClockWindows:
    """At most `limit` accepted requests in each [k x period, (k + 1) x period) of the wall
    clock (time.time()), whenever the client started."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit, self.period = limit, period
        self.counts: Counter[int] = Counter()

    def clock(self) -> float:
        return time.time()

    def accepts(self, now: float) -> bool:
        window = math.floor(now / self.period)
        if self.counts[window] >= self.limit:
            return False
        self.counts[window] += 1
        return True


def test_the_models_count_as_documented() -> None:
    timer = EnvoyTimerBucket(5, 5, 1.0)
    early = [timer.accepts(t) for t in (10.0, 10.0, 10.0, 10.0, 10.0, 10.2, 10.99)]
    assert early == [True] * 5 + [False] * 2  # no token comes back before the fill
    assert [timer.accepts(11.0) for _ in range(6)] == [True] * 5 + [False]  # all 5 at the fill
    bucket = TokenBucket(5, 10.0)
    assert [bucket.accepts(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert [bucket.accepts(t) for t in (0.09, 0.1001, 0.15, 0.2002)] == [False, True, False, True]
    assert [bucket.accepts(10.0) for _ in range(6)] == [True] * 5 + [False]  # full, no more
    rolling = RollingWindow(10, 1.0)
    assert [rolling.accepts(t / 10) for t in range(10)] == [True] * 10
    assert (rolling.accepts(0.999), rolling.accepts(1.0), rolling.accepts(1.0)) == (
        False,
        True,  # the one at 0.0 is out of (0.0, 1.0]
        False,
    )
    clock = ClockWindows(10, 1.0)
    assert [clock.accepts(5.95) for _ in range(11)] == [True] * 10 + [False]
    assert [clock.accepts(6.0) for _ in range(10)] == [True] * 10  # 20 within 50 ms


# -- the server --------------------------------------------------------------------------------
class LimitedServer(ThreadingHTTPServer):
    """Answers every GET 200 if `limiter` accepts it, else 429; logs (seconds from the first
    request, status). `handshake`: seconds the first request of each connection takes to
    reach the limiter (a TLS handshake, say)."""

    daemon_threads = True

    def __init__(self, limiter: Limiter, handshake: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), LimitedHandler)
        self.limiter = limiter
        self.handshake = handshake
        self.lock = threading.Lock()
        self.log: list[tuple[float, int]] = []
        self.first: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def answer(self) -> int:
        with self.lock:
            now = self.limiter.clock()
            status = 200 if self.limiter.accepts(now) else 429
            if self.first is None:
                self.first = now
            self.log.append((round(now - self.first, 4), status))
            return status

    def statuses(self) -> Counter[int]:
        with self.lock:
            return Counter(status for _, status in self.log)


class LimitedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real servers do
    warm = False  # a request came on this connection already

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, LimitedServer)
        if not self.warm:
            time.sleep(server.handshake)
            self.warm = True
        status = server.answer()
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def limited(limiter: Limiter, handshake: float = 0.0) -> Iterator[LimitedServer]:
    with running(LimitedServer(limiter, handshake)) as server:
        yield server


# -- the recipes -------------------------------------------------------------------------------
TOKEN_BUCKET_5 = 'limit = "5/1s"\nalgorithm = "token-bucket"\nburst = 5'
# A window counts a call when it is admitted; the server, when the call reaches it. The guard
# must cover how much later one call reaches it than another: here the first call of a new
# connection (this server accepts it and starts a thread) reached it up to ~10 ms after its
# admission, the next ones 0.3-1 ms. A 2 ms guard was refused by RollingWindow in 2 of 12
# runs of 3 threads (test_a_window_guard_must_cover_a_new_connection below shows why); the
# windows' default, 20 ms, never was.

# (the server's limiter, calls, the recipe's quota keys): the table of docs/policies.md
RECIPES: dict[str, tuple[Callable[[], Limiter], int, str]] = {
    "Envoy 1.31+ max_tokens=5 tokens_per_fill=5 fill_interval=1s": (
        lambda: TokenBucket(5, 5.0),
        20,
        TOKEN_BUCKET_5,
    ),
    "Envoy 1.31+, the window recipe": (lambda: TokenBucket(5, 5.0), 20, 'limit = "5/1s"'),
    "Envoy up to 1.30 (timer fills), the window recipe": (
        lambda: EnvoyTimerBucket(5, 5, 1.0),
        20,
        'limit = "5/1s"',
    ),
    "AWS API Gateway rate 10 burst 5": (
        lambda: TokenBucket(5, 10.0),
        30,
        'limit = "10/1s"\nalgorithm = "token-bucket"\nburst = 5',
    ),
    "10 per rolling 1 s window": (lambda: RollingWindow(10, 1.0), 30, 'limit = "10/1s"'),
    "not documented (a rolling window)": (
        lambda: RollingWindow(10, 1.0),
        30,
        'limit = "10/1s"\nalgorithm = "leaky-bucket"',
    ),
    "not documented (Envoy up to 1.30, timer fills)": (
        lambda: EnvoyTimerBucket(5, 5, 1.0),
        20,
        'limit = "5/1s"\nalgorithm = "leaky-bucket"',
    ),
    "10 per 1 s window of the clock": (
        lambda: ClockWindows(10, 1.0),
        30,
        'limit = "10/1s"',
    ),
}


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("mode", ["sequential", "3 threads", "3 tasks"])
def test_the_recipe_is_never_refused_by_the_documented_limiter(
    recipe: str, mode: str, write_policies: WritePolicies
) -> None:
    make, calls, keys = RECIPES[recipe]
    for attempt in range(ATTEMPTS):  # again only after a stall beyond the guard (STALL)
        registry = Registry(recipe_policies(write_policies, keys))
        with limited(make()) as server:
            statuses = statuses_in_mode(registry, server.url, calls, mode)
        if not statuses.again(calls, attempt):
            break
    assert statuses == {200: calls}, (server.log, f"longest call {statuses.longest:.3f}s")
    assert server.statuses() == {200: calls}  # what the server answered


# -- the recipes that are not safe --------------------------------------------------------------
def test_a_token_bucket_is_refused_by_envoys_timer_fills(write_policies: WritePolicies) -> None:
    """Envoy up to 1.30 refills all at once, a whole fill_interval after its timer's last
    fill: the continuous token bucket that matches Envoy 1.31+ sends the 6th call when one
    token has trickled back (0.2 s), which the timer has not yet added."""
    registry = Registry(recipe_policies(write_policies, TOKEN_BUCKET_5))
    with limited(EnvoyTimerBucket(5, 5, 1.0)) as server:
        statuses = statuses_from_threads(registry, server.url, 8, 1)
        assert statuses[429] >= 1, server.log
        assert server.log[5][1] == 429, server.log  # the 6th, at about 0.2 s


def _straddling_load(registry: Registry, url: str) -> tuple[Counter[int], int]:
    """One call 0.3 s into a second of the clock, then 19 more from 20 ms into the next one,
    sequentially; returns the statuses and the second the 19 went in."""
    statuses: Counter[int] = Counter()
    with requests.Session() as session:
        session.trust_env = False

        @registry.policy("api.get")
        def fetch() -> int:
            return session.get(url, timeout=30).status_code

        time.sleep((0.3 - time.time()) % 1.0)
        statuses[fetch()] += 1
        second = math.floor(time.time()) + 1
        time.sleep(max(second + 0.02 - time.time(), 0.0))
        for _ in range(19):
            statuses[fetch()] += 1
    return statuses, second


@pytest.mark.parametrize("algorithm", ["sliding-window", "fixed-window"])
def test_only_a_sliding_window_is_safe_against_windows_of_the_clock(
    algorithm: str, write_policies: WritePolicies
) -> None:
    """A fixed window of callpolicy's opens at its first call (0.3 s into second k) and
    closes 1.02 s later, in second k + 1: the 9 calls it still admits there and the 10 of
    the next window it opens are all in the server's window k + 1, which takes 10. A sliding
    window admits no more than 10 in any 1.02 s, so in no second of the clock either."""
    keys = f'limit = "10/1s"\nalgorithm = "{algorithm}"'
    registry = Registry(recipe_policies(write_policies, keys))
    with limited(ClockWindows(10, 1.0)) as server:
        statuses, second = _straddling_load(registry, server.url)
    if algorithm == "sliding-window":
        assert statuses == {200: 20}, server.log
    else:
        assert statuses[429] >= 1, server.log  # 9 when every call is on time
    assert isinstance(server.limiter, ClockWindows)
    assert server.limiter.counts[second] == 10  # the server's window k + 1 was filled


@pytest.mark.parametrize("guard", ["2ms", "50ms"])
def test_a_window_guard_must_cover_a_new_connection(
    guard: str, write_policies: WritePolicies
) -> None:
    """The first call opens the connection and reaches a rolling window 30 ms after its
    admission, the next ones at once. The 11th is admitted one period and the guard after the
    first: with 2 ms (the default), the server still holds the first in its window, and
    refuses; a guard above 30 ms waits it out."""
    registry = Registry(recipe_policies(write_policies, f'limit = "10/1s"\nguard = "{guard}"'))
    with limited(RollingWindow(10, 1.0), handshake=0.03) as server:
        statuses = statuses_from_threads(registry, server.url, 20, 1)
    if guard == "2ms":
        assert statuses[429] >= 1, server.log
        assert server.log[10][1] == 429, server.log  # the 11th
    else:
        assert statuses == {200: 20}, server.log
