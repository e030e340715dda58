"""Goodput against a rate-limited server: callpolicy beside tenacity, stamina and backoff.

    python benchmarks/goodput.py            # full run (about 2 minutes)
    python benchmarks/goodput.py --quick    # about 10 seconds, for CI smoke tests
    python benchmarks/goodput.py --json results.json

A local HTTP server on 127.0.0.1 allows 20 requests in any 1 s (a sliding window, counted on
arrival; refused requests do not count) and answers 429 beyond that, with `Retry-After` in
whole seconds, rounded up. Every response carries `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (seconds until the oldest request counted leaves the window, rounded
up). 4 client threads, each with its own `requests.Session`, share 400 GET requests, which go
through each case in turn, with a fresh server each time:

  (a) callpolicy with the quota declared ("20/1s", a 20 ms guard), retrying 429 on Retry-After
  (b) callpolicy with no quota, learning from the headers: Retry-After only, and, when the
      installed callpolicy has a `pause` table, with `pause` on X-RateLimit-Remaining/Reset
  (c) tenacity, retry_if_result(429) and a wait function reading Retry-After
  (d) stamina, a backoff hook returning Retry-After for an exception carrying the 429
  (e) backoff, on_predicate(backoff.runtime) with Retry-After as the value

For each: the time from the first request to the last response, the theoretical best
(requests x period / quota), best / elapsed as a percentage, the 429s the server sent and
the requests it received. Targets are printed as PASS or MISS; the exit status is 0 either
way (it is a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import backoff
import requests
import stamina
import stamina.instrumentation
import tenacity

import callpolicy

Fetch = Callable[[requests.Session, str], requests.Response]

MAX_ATTEMPTS = 20  # every library: enough that no request gives up in these runs
DECLARED_429S = 0  # target: with the quota declared, no 429 at all...
DECLARED_SHARE = 0.99  # ...and at least 99 % of the theoretical best
HEADERS_SHARE = 0.97  # target with headers only: at least 97 % of the best...
HEADERS_429_RATE = 0.02  # ...and 429s under 2 % of the requests sent


# -- the server ------------------------------------------------------------------------------
@dataclass
class Arrival:
    at: float  # time.monotonic() when the server counted the request
    status: int  # 200, or 429 when the window was full


class QuotaServer:
    """A sliding window of `limit` requests per `period` seconds, counted on arrival.

    A refused request (429) does not count. Every response says how many requests the window
    has left and in how many seconds (rounded up) its oldest request leaves it; a 429 also
    carries that as `Retry-After` (at least 1).
    """

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.arrivals: list[Arrival] = []
        self._window: deque[float] = deque()
        self._lock = threading.Lock()
        self._server = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and join every thread: the clients must have closed their sessions."""
        self._server.shutdown()
        self._server.server_close()  # joins the connection threads (block_on_close)
        self._thread.join()

    def answer(self) -> tuple[int, dict[str, str]]:
        with self._lock:  # arrival time taken under the lock, so the window stays in order
            now = time.monotonic()
            window = self._window
            while window and window[0] <= now - self.period:
                window.popleft()
            status = 200 if len(window) < self.limit else 429
            if status == 200:
                window.append(now)
            self.arrivals.append(Arrival(now, status))
            remaining = self.limit - len(window)
            # The 1e-9 keeps float noise (1.0000000002 s) from rounding up a whole second.
            reset = math.ceil(window[0] + self.period - now - 1e-9) if window else 0
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if status == 429:
            headers["Retry-After"] = str(max(1, reset))
        return status, headers


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the threads serving connections

    def __init__(self, quota: QuotaServer) -> None:
        self.quota = quota
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: each Session reuses its connection
    disable_nagle_algorithm = True  # else headers and body in two writes cost ~40 ms a reply
    timeout = 30  # an idle connection's thread ends by itself, should a client not close it
    server: _HTTPServer

    def do_GET(self) -> None:  # http.server dispatches on this name
        status, headers = self.server.quota.answer()
        body = b'{"ok": true}' if status == 200 else b'{"error": "rate limit exceeded"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


# -- the clients -------------------------------------------------------------------------------
def retry_after(response: requests.Response) -> float:
    """The response's Retry-After in seconds (this server sends whole seconds); 1 if none."""
    try:
        return max(float(response.headers["Retry-After"]), 0.0)
    except (KeyError, ValueError):
        return 1.0


def is_throttled(response: requests.Response) -> bool:
    return response.status_code == 429


def get(session: requests.Session, url: str) -> requests.Response:
    return session.get(url, timeout=10)


def policy_text(limit: int, period: float, guard_ms: float) -> dict[str, str]:
    """The policy files of the callpolicy cases: one registry each, so quotas never mix."""
    rate = f"{limit}/{period * 1000:g}ms"
    retry = f"""
retry.on_status = [429]
wait.strategy = "fixed"
wait.seconds = "1s"                      # only when a 429 carried no usable Retry-After
wait.server_hints = ["Retry-After"]
stop.attempts = {MAX_ATTEMPTS}
"""
    return {
        "declared": f"""
[quotas.api]
limit = "{rate}"
guard = "{guard_ms:g}ms"
max_wait = "60s"

[endpoints.get]
quotas = ["api"]
{retry}""",
        "hints": f"""
[endpoints.get]
{retry}""",
        "pause": f"""
[endpoints.get]
{retry}
pause.remaining = "X-RateLimit-Remaining"
pause.reset = "X-RateLimit-Reset"
""",
    }


def load_registry(text: str) -> callpolicy.Registry:
    """A registry holding `goodput.get`, loaded from a temporary policy file."""
    with tempfile.TemporaryDirectory(prefix="goodput-") as directory:
        path = Path(directory) / "goodput.toml"
        path.write_text(text, encoding="utf-8")
        return callpolicy.Registry(path)


def with_callpolicy(text: str) -> Callable[[], Fetch]:
    def make() -> Fetch:
        return load_registry(text).policy("goodput.get")(get)

    return make


def with_tenacity() -> Fetch:
    def wait_retry_after(state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        if outcome is None or outcome.failed:
            return 1.0
        response: requests.Response = outcome.result()
        return retry_after(response)

    decorate = tenacity.retry(
        retry=tenacity.retry_if_result(is_throttled),
        wait=wait_retry_after,
        stop=tenacity.stop_after_attempt(MAX_ATTEMPTS),
    )
    fetch: Fetch = decorate(get)
    return fetch


class Throttled(Exception):
    """A 429, raised for stamina (which retries on exceptions only), carrying the response."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP 429, Retry-After: {response.headers.get('Retry-After')}")
        self.response = response


def with_stamina() -> Fetch:
    def backoff_hook(exc: Exception) -> bool | float:
        # stamina (26.1 here): a float returned by the `on` hook is the wait before the retry.
        return retry_after(exc.response) if isinstance(exc, Throttled) else False

    @stamina.retry(on=backoff_hook, attempts=MAX_ATTEMPTS, timeout=None)
    def fetch(session: requests.Session, url: str) -> requests.Response:
        response = get(session, url)
        if is_throttled(response):
            raise Throttled(response)
        return response

    return fetch


def with_backoff() -> Fetch:
    # backoff has no type hints: applied as a call, so mypy sees an untyped value, not an
    # untyped decorator.
    decorate: Any = backoff.on_predicate(
        backoff.runtime,
        predicate=is_throttled,
        value=retry_after,
        jitter=None,
        max_tries=MAX_ATTEMPTS,
    )
    fetch: Fetch = decorate(get)
    return fetch


# -- the cases -------------------------------------------------------------------------------
DECLARED = "declared"  # the quota is declared in the client
HEADERS = "headers"  # the client learns from the server's headers only


@dataclass
class Case:
    key: str
    label: str
    kind: str  # DECLARED or HEADERS
    make: Callable[[], Fetch] | None
    is_callpolicy: bool
    skipped: str | None = None  # why the case cannot run with the installed packages


def pause_support(text: str) -> str | None:
    """None when the installed callpolicy loads the `pause` policy, else why not."""
    try:
        load_registry(text)
    except callpolicy.PolicyError as exc:
        first = exc.problems[0] if exc.problems else None
        why = f"{first.key}: {first.message}" if first is not None else str(exc)
        return f"this callpolicy has no `pause` table ({why})"
    return None


def build_cases(limit: int, period: float, guard_ms: float) -> list[Case]:
    texts = policy_text(limit, period, guard_ms)
    return [
        Case(
            "callpolicy_declared",
            f"(a) callpolicy, quota declared, guard {guard_ms:g} ms",
            DECLARED,
            with_callpolicy(texts["declared"]),
            True,
        ),
        Case(
            "callpolicy_hints",
            "(b) callpolicy, Retry-After only",
            HEADERS,
            with_callpolicy(texts["hints"]),
            True,
        ),
        Case(
            "callpolicy_pause",
            "(b) callpolicy, Retry-After + pause",
            HEADERS,
            with_callpolicy(texts["pause"]),
            True,
            pause_support(texts["pause"]),
        ),
        Case("tenacity", "(c) tenacity, Retry-After wait", HEADERS, with_tenacity, False),
        Case("stamina", "(d) stamina, Retry-After hook", HEADERS, with_stamina, False),
        Case("backoff", "(e) backoff, runtime(Retry-After)", HEADERS, with_backoff, False),
    ]


# -- running ---------------------------------------------------------------------------------
@dataclass
class Result:
    key: str
    label: str
    kind: str
    is_callpolicy: bool
    requests: int
    best: float  # requests x period / limit
    floor: float  # (ceil(requests / limit) - 1) x period: the earliest the last can arrive
    elapsed: float = 0.0  # first request sent to last response received
    sent: int = 0  # requests the server received
    throttled: int = 0  # 429s it sent
    failed: int = 0  # requests that did not end in a 200
    errors: list[str] = field(default_factory=list)  # the first few exceptions raised
    last_admitted: float = 0.0  # from the start to the last admitted arrival, server side
    max_in_window: int = 0  # most requests the server admitted in any period (<= limit)
    latency_ms: float = 0.0  # median of one 200 round trip, client side
    sleeps: dict[str, float] = field(default_factory=dict)  # callpolicy: seconds by source
    sleep_counts: dict[str, int] = field(default_factory=dict)
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (s from start, status)
    skipped: str | None = None

    @property
    def share(self) -> float:
        return self.best / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def pace(self) -> float | None:
        """floor / last admitted arrival: 100 % when every window of the run was full."""
        if self.floor <= 0 or self.last_admitted <= 0:
            return None
        return self.floor / self.last_admitted

    @property
    def throttled_rate(self) -> float:
        return self.throttled / self.sent if self.sent else 0.0


@contextmanager
def callpolicy_sleeps(result: Result) -> Iterator[None]:
    """Add up callpolicy's sleeps (backoff, quota, pause) for the case."""
    lock = threading.Lock()

    def hook(event: callpolicy.SleepEvent) -> None:
        with lock:
            source = str(event.source)
            result.sleeps[source] = result.sleeps.get(source, 0.0) + event.seconds
            result.sleep_counts[source] = result.sleep_counts.get(source, 0) + 1

    remove = callpolicy.add_sleep_hook(hook)
    try:
        yield
    finally:
        remove()


def max_in_window(times: list[float], period: float) -> int:
    """The most of `times` (sorted) in any half-open window [t, t + period)."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - period:
            first += 1
        most = max(most, last - first + 1)
    return most


class Load:
    """`clients` threads, each with its own Session, sharing `total` requests through `fetch`.

    They start together (a barrier); the run lasts from the release to the last response.
    """

    def __init__(self, fetch: Fetch, url: str, total: int, clients: int, result: Result) -> None:
        self.fetch = fetch
        self.url = url
        self.clients = clients
        self.result = result
        self.latencies: list[float] = []  # seconds, of the requests that ended in a 200
        self.started: list[float] = []
        self.finished: list[float] = []
        self._indexes = iter(range(total))
        self._take_lock = threading.Lock()
        self._record_lock = threading.Lock()
        self._barrier = threading.Barrier(
            clients, action=lambda: self.started.append(time.monotonic())
        )

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._client, name=f"client-{n}") for n in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _take(self) -> int | None:
        with self._take_lock:
            return next(self._indexes, None)

    def _client(self) -> None:
        session = requests.Session()
        session.trust_env = False  # no proxy from the environment: 127.0.0.1 only
        try:
            self._barrier.wait()
            while (index := self._take()) is not None:
                before = time.monotonic()
                try:
                    response = self.fetch(session, f"{self.url}/items/{index}")
                    error = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except Exception as exc:  # a library that gave up: counted, never fatal
                    error = f"{type(exc).__name__}: {exc}"
                self._record(time.monotonic() - before, error)
            with self._record_lock:
                self.finished.append(time.monotonic())
        finally:
            session.close()

    def _record(self, seconds: float, error: str | None) -> None:
        with self._record_lock:
            if error is None:
                self.latencies.append(seconds)
                return
            self.result.failed += 1
            if len(self.result.errors) < 5:
                self.result.errors.append(error)


def run_case(case: Case, requests_total: int, clients: int, limit: int, period: float) -> Result:
    """Run one case against a fresh server; the server and every thread are stopped after."""
    result = Result(
        case.key,
        case.label,
        case.kind,
        case.is_callpolicy,
        requests_total,
        requests_total * period / limit,
        (math.ceil(requests_total / limit) - 1) * period,
        skipped=case.skipped,
    )
    if case.make is None or case.skipped is not None:
        return result
    fetch = case.make()
    server = QuotaServer(limit, period)
    server.start()
    load = Load(fetch, server.url, requests_total, clients, result)
    try:
        counting: AbstractContextManager[None] = (
            callpolicy_sleeps(result) if case.is_callpolicy else nullcontext()
        )
        with counting:
            load.run()
    finally:
        server.stop()
    start = load.started[0]
    result.elapsed = max(load.finished) - start
    result.sent = len(server.arrivals)
    result.throttled = sum(1 for a in server.arrivals if a.status == 429)
    admitted = [a.at for a in server.arrivals if a.status == 200]
    result.max_in_window = max_in_window(admitted, period)
    result.last_admitted = max(admitted, default=start) - start
    result.latency_ms = statistics.median(load.latencies) * 1000 if load.latencies else 0.0
    result.arrivals = [(round(a.at - start, 6), a.status) for a in server.arrivals]
    return result


# -- reporting ---------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    key: str
    passed: bool
    detail: str


def judged(results: list[Result]) -> list[Result]:
    """The callpolicy cases the targets judge: the declared quota, and of the headers-only
    cases the complete one (Retry-After + pause); Retry-After alone is a reference."""
    mine = [r for r in results if r.is_callpolicy and r.skipped is None]
    headers = [r for r in mine if r.kind != DECLARED]
    complete = [r for r in headers if "pause" in r.label] or headers[-1:]
    return [r for r in mine if r.kind == DECLARED or r in complete]


def targets(results: list[Result]) -> list[Target]:
    found = []
    for r in judged(results):
        if r.kind == DECLARED:
            found.append(
                Target(
                    f"{r.label}: 0 429s",
                    r.key,
                    r.throttled <= DECLARED_429S,
                    f"{r.throttled} 429s",
                )
            )
            found.append(
                Target(
                    f"{r.label}: >= {DECLARED_SHARE:.0%} of the best",
                    r.key,
                    r.share >= DECLARED_SHARE,
                    f"{r.share:.1%}",
                )
            )
        else:
            found.append(
                Target(
                    f"{r.label}: >= {HEADERS_SHARE:.0%} of the best",
                    r.key,
                    r.share >= HEADERS_SHARE,
                    f"{r.share:.1%}",
                )
            )
            found.append(
                Target(
                    f"{r.label}: 429s < {HEADERS_429_RATE:.0%} of requests sent",
                    r.key,
                    r.throttled_rate < HEADERS_429_RATE,
                    f"{r.throttled} of {r.sent} = {r.throttled_rate:.1%}",
                )
            )
    return found


def versions() -> dict[str, str]:
    found = {}
    for package in ("callpolicy", "tenacity", "stamina", "backoff", "requests"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "?"
    return found


def report(results: list[Result], args: argparse.Namespace) -> None:
    limit, period = args.limit, args.period
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) "
        f"on {platform.system()} {platform.machine()}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    print(
        f"Server on 127.0.0.1: {limit} requests per {period:g} s, sliding window on arrival, "
        f"429 + Retry-After (whole seconds, rounded up). {args.clients} client threads, "
        f"{args.requests} requests per case; best = {args.requests} x {period:g} s / {limit} "
        f"= {args.requests * period / limit:g} s."
    )
    print()
    header = (
        f"  {'case':<42}{'elapsed s':>10}{'% best':>8}{'% pace':>8}"
        f"{'429s':>6}{'sent':>6}{'failed':>7}{'max/win':>8}{'rtt ms':>8}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in results:
        if r.skipped is not None:
            print(f"  {r.label:<42}  skipped: {r.skipped}")
            continue
        pace = "-" if r.pace is None else f"{r.pace:.1%}"
        print(
            f"  {r.label:<42}{r.elapsed:10.2f}{r.share:8.1%}{pace:>8}"
            f"{r.throttled:6d}{r.sent:6d}{r.failed:7d}{r.max_in_window:8d}{r.latency_ms:8.2f}"
        )
    floor = (math.ceil(args.requests / limit) - 1) * period
    best = args.requests * period / limit
    notes = [
        "elapsed: first request sent to last response. % best = best / elapsed. A sliding",
        f"window lets the first {limit} through at once, so a perfect client ends after about "
        f"{floor:g} s",
        f"plus a round trip: up to {best / floor if floor else math.inf:.0%} is possible. "
        f"% pace (server side) = {floor:g} s / the last admitted",
        "arrival, 100 % when every window was full. max/win: most admitted in any "
        f"{period:g} s (<= {limit}).",
        "rtt: median round trip of a request answered 200.",
    ]
    print()
    for line in notes:
        print(f"  {line}")
    for r in results:
        if r.errors:
            print(f"  {r.label}: {r.failed} failed, e.g. {r.errors[0]}")
        if r.sleeps:
            slept = ", ".join(
                f"{source} {r.sleep_counts[source]} sleeps, {seconds:.2f} s in all"
                for source, seconds in sorted(r.sleeps.items())
            )
            print(f"  {r.label}: callpolicy slept (all clients) {slept}")
    print()
    print("Targets (callpolicy):")
    for found in targets(results):
        status = "PASS" if found.passed else "MISS"
        print(f"  [{status}] {found.name}: {found.detail}")
    chosen = judged(results)
    peers = [r for r in results if r.skipped is None and r not in chosen and r.kind != DECLARED]
    if peers:
        print("For reference, against the headers-only bar (not targets):")
        for r in peers:
            ok = r.share >= HEADERS_SHARE and r.throttled_rate < HEADERS_429_RATE
            print(
                f"  [{'pass' if ok else 'miss'}] {r.label}: {r.share:.1%} of the best, "
                f"429s {r.throttled_rate:.1%} of requests sent"
            )
    print(
        f"(Shared {_cores()}-core machine: expect run-to-run noise of a few tens of ms per case.)"
    )


def _cores() -> str:
    return str(os.cpu_count() or "?")


def to_json(results: list[Result], args: argparse.Namespace) -> dict[str, object]:
    cases = {}
    for r in results:
        data = asdict(r)
        data["share_of_best"] = r.share
        data["throttled_rate"] = r.throttled_rate
        cases[r.key] = data
    return {
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions(),
        "mode": "quick" if args.quick else "full",
        "server": {"limit": args.limit, "period_s": args.period},
        "clients": args.clients,
        "requests": args.requests,
        "guard_ms": args.guard_ms,
        "cases": cases,
        "targets": [asdict(t) for t in targets(results)],
    }


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (CI smoke test)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    parser.add_argument("--requests", type=int, help="requests per case (default 400, quick 40)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--limit", type=int, default=20, help="server quota (default 20)")
    parser.add_argument(
        "--period", type=float, default=1.0, help="server quota period in seconds (default 1)"
    )
    parser.add_argument(
        "--guard-ms", type=float, default=20.0, help="guard of the declared quota (default 20)"
    )
    parser.add_argument("--only", metavar="KEY,...", help="run only these cases (keys as in JSON)")
    args = parser.parse_args(argv)
    args.requests = args.requests or (40 if args.quick else 400)
    if args.requests < 1 or args.clients < 1 or args.limit < 1 or args.period <= 0:
        parser.error("--requests, --clients and --limit must be >= 1, --period > 0")

    # stamina logs every retry at WARNING by default; the others log nothing unless configured.
    stamina.instrumentation.set_on_retry_hooks([])
    cases = build_cases(args.limit, args.period, args.guard_ms)
    if args.only:
        wanted = {key.strip() for key in args.only.split(",")}
        unknown = wanted - {case.key for case in cases}
        if unknown:
            parser.error(f"unknown case(s) {sorted(unknown)}; known: {[c.key for c in cases]}")
        cases = [case for case in cases if case.key in wanted]
    results = []
    for case in cases:
        results.append(run_case(case, args.requests, args.clients, args.limit, args.period))
        time.sleep(0.2)  # let the machine settle between cases
    leftover = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    report(results, args)
    if leftover:
        print(f"WARNING: threads still running: {leftover}")
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(results, args), indent=2) + "\n", "utf-8")
        print(f"Results written to {args.json}")


if __name__ == "__main__":
    main()
