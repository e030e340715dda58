"""Real rate limiters (nginx, HAProxy): each library's own "10 per second", and callpolicy's.

    python benchmarks/real_limiters.py            # full run (about 5.5 minutes)
    python benchmarks/real_limiters.py --quick    # 30 calls a row (about 80 s)
    python benchmarks/real_limiters.py --json results.json

Three servers on 127.0.0.1 (examples/limiting_servers.py), a fresh one for every row:

  nginx-burst0  nginx `limit_req` at rate=10r/s, no burst (`limit_req_status 429`)
  nginx-burst5  the same with `burst=5 nodelay`
  haproxy       HAProxy, `stick-table ... store http_req_rate(1s)`, `http-request deny
                deny_status 429 if { sc_http_req_rate(0) gt 10 }`

Each row sends N GET requests (100, `--quick` 30) through one library's own recipe for "10 per
second", sequentially (one thread) or from 4 threads (`--threads`) taking the N calls from a
shared counter, each thread with its own `requests.Session`; async rows use asyncio tasks
sharing one `httpx.AsyncClient`. No library retries: a 429 is counted, not repeated.

  limits          MovingWindowRateLimiter(MemoryStorage()) and limits.parse("10/second"):
                  `hit()`, else sleep until `get_window_stats().reset_time`, and again
  pyrate-limiter  Limiter(Rate(10, Duration.SECOND)): `try_acquire(name)`, which blocks by
                  default (pyrate-limiter 4; version 3's `max_delay` is gone)
  ratelimit       @sleep_and_retry @limits(calls=10, period=1), built just before the row
  aiolimiter      AsyncLimiter(10, 1): `async with limiter:` (async only: 1 task and 4 tasks)
  callpolicy      the policy text of POLICIES[server] (below) in a Registry of its own:
                  `@registry.policy("real.q")` on the request function (sync and async)

Columns: the 200s and 429s the server logged, the time from the start of the row to the last
response (client side), and % of best = best / elapsed, where best is the least time the
server allows for N calls with no 429 (first request to last, a round trip not included):

* nginx, rate R per second, burst B, nodelay: B + 1 at once, then one per 1/R (nginx counts
  only accepted requests): (N - 1 - B) / R, or 0 when N <= B + 1. 10r/s: 9.9 s for N = 100
  with no burst, 9.4 s with burst 5.
* HAProxy, deny when the rate is `gt L` over a period P: the rate a request sees is
  c + floor(p x (P - e) / P), where c counts this period's requests so far, itself and refused
  ones included, p the previous period's, e the time into this period; the first request
  starts the first period. So no period can hold more than L accepted requests, and when the
  previous period held L, the k-th request of a period passes only when e > (k - 1) x P / L.
  N > L needs ceil(N / L) periods; all of them but the last must be full, so in the last the
  r-th request (r = N - (ceil(N / L) - 1) x L) goes just after e = (r - 1) x P / L: the last
  of N arrives (N - 1) x P / L after the first, as if paced evenly, even though the first L
  may come at once (a schedule doing that: L at once, then from P on one just after every
  P / L). 0 when N <= L. 9.9 s for N = 100, L = 10, P = 1 s.

% of best means something only with 0 429s (refused calls are quick). The target, printed as
PASS or MISS (the exit status is 0 either way; it is a benchmark, not a test): callpolicy with
0 429s and at least 97 % of the best in every row. A policy that fails to load is reported on
its row; the other rows still run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiolimiter
import httpx
import limits
import limits.storage
import limits.strategies
import pyrate_limiter
import ratelimit
import requests

import callpolicy

# The nginx and HAProxy starters, shared with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from limiting_servers import HAProxyLimiter, LimitingServer, NginxLimiter, server_version

TARGET_SHARE = 0.97  # callpolicy: at least 97 % of the best in every row, and no 429

# callpolicy's policy for each server: a quota `q` (the recipe of docs/policies.md, "Match
# your server's limiter") and the endpoint `q` using it, with no retry rule (a 429 is
# returned, and counted). Loaded from a temporary directory as `real.toml`, so the endpoint
# is "real.q".
POLICIES: dict[str, str] = {
    "nginx-burst0": """\
[quotas.q]
limit = "10/1s"
algorithm = "leaky-bucket"

[endpoints.q]
quotas = ["q"]
""",
    "nginx-burst5": """\
[quotas.q]
limit = "10/1s"
algorithm = "leaky-bucket"
burst = 5

[endpoints.q]
quotas = ["q"]
""",
    "haproxy": """\
[quotas.q]
limit = "10/1s"
spread = true

[endpoints.q]
quotas = ["q"]
""",
}

Fetch = Callable[[requests.Session, str], requests.Response]
AFetch = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]
Close = Callable[[], None]


# -- the servers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Server:
    key: str
    label: str
    start: Callable[[], LimitingServer]  # a new server, not started
    best: Callable[[int], float]  # seconds, for N calls


def nginx_best(calls: int, rate: float, burst: int) -> float:
    return max(calls - 1 - burst, 0) / rate


def haproxy_best(calls: int, limit: int, period: float) -> float:
    return (calls - 1) * period / limit if calls > limit else 0.0


SERVERS = [
    Server(
        "nginx-burst0",
        "nginx limit_req 10r/s, no burst",
        lambda: NginxLimiter(rate=10),
        lambda n: nginx_best(n, 10, 0),
    ),
    Server(
        "nginx-burst5",
        "nginx limit_req 10r/s, burst=5 nodelay",
        lambda: NginxLimiter(rate=10, burst=5, nodelay=True),
        lambda n: nginx_best(n, 10, 5),
    ),
    Server(
        "haproxy",
        "HAProxy http_req_rate(1s) gt 10",
        lambda: HAProxyLimiter(limit=10, period=1.0),
        lambda n: haproxy_best(n, 10, 1.0),
    ),
]


# -- the libraries' recipes -------------------------------------------------------------------
def get(session: requests.Session, url: str) -> requests.Response:
    return session.get(url, timeout=10)


async def aget(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.get(url, timeout=10)


def _nothing() -> None:
    pass


def with_limits(server: str) -> tuple[Fetch, Close]:
    limiter = limits.strategies.MovingWindowRateLimiter(limits.storage.MemoryStorage())
    item = limits.parse("10/second")

    def fetch(session: requests.Session, url: str) -> requests.Response:
        while not limiter.hit(item, "real"):
            reset = limiter.get_window_stats(item, "real").reset_time
            time.sleep(max(reset - time.time(), 0.0))
        return get(session, url)

    return fetch, _nothing


def with_pyrate(server: str) -> tuple[Fetch, Close]:
    installed = metadata.version("pyrate-limiter")
    if int(installed.split(".")[0]) < 4:  # 3.x returns at once unless given a max_delay
        raise RuntimeError(f"this recipe is pyrate-limiter 4's; {installed} is installed")
    limiter = pyrate_limiter.Limiter(pyrate_limiter.Rate(10, pyrate_limiter.Duration.SECOND))

    def fetch(session: requests.Session, url: str) -> requests.Response:
        limiter.try_acquire("real")  # blocks until admitted
        return get(session, url)

    return fetch, limiter.close


def with_ratelimit(server: str) -> tuple[Fetch, Close]:
    # ratelimit has no type hints: applied as calls, so mypy sees an untyped value.
    fetch: Fetch = ratelimit.sleep_and_retry(ratelimit.limits(calls=10, period=1)(get))
    return fetch, _nothing


def load_registry(text: str) -> callpolicy.Registry:
    """A registry holding `real.q`, loaded from a temporary policy file."""
    with tempfile.TemporaryDirectory(prefix="real-limiters-") as directory:
        path = Path(directory) / "real.toml"
        path.write_text(text, encoding="utf-8")
        registry = callpolicy.Registry(path)
    registry.get("real.q")  # an unknown name fails here, not on the first call
    return registry


def with_callpolicy(server: str) -> tuple[Fetch, Close]:
    fetch: Fetch = load_registry(POLICIES[server]).policy("real.q")(get)
    return fetch, _nothing


def with_aiolimiter(server: str) -> AFetch:
    limiter = aiolimiter.AsyncLimiter(10, 1)

    async def fetch(client: httpx.AsyncClient, url: str) -> httpx.Response:
        async with limiter:
            return await aget(client, url)

    return fetch


def with_callpolicy_async(server: str) -> AFetch:
    fetch: AFetch = load_registry(POLICIES[server]).policy("real.q")(aget)
    return fetch


SEQ, THREADS, ASYNC_1, ASYNC_N = "seq", "threads", "async-1", "async-n"


@dataclass(frozen=True)
class Library:
    key: str
    label: str
    modes: tuple[str, ...]
    sync: Callable[[str], tuple[Fetch, Close]] | None = None  # server key -> fetch, close
    async_: Callable[[str], AFetch] | None = None  # built inside the event loop


LIBRARIES = [
    Library("limits", "limits moving window", (SEQ, THREADS), sync=with_limits),
    Library("pyrate-limiter", "pyrate-limiter", (SEQ, THREADS), sync=with_pyrate),
    Library("ratelimit", "ratelimit", (SEQ, THREADS), sync=with_ratelimit),
    Library("aiolimiter", "aiolimiter", (ASYNC_1, ASYNC_N), async_=with_aiolimiter),
    Library(
        "callpolicy",
        "callpolicy",
        (SEQ, THREADS, ASYNC_N),
        sync=with_callpolicy,
        async_=with_callpolicy_async,
    ),
]


# -- running -----------------------------------------------------------------------------------
@dataclass
class Row:
    server: str
    library: str
    label: str
    mode: str
    calls: int
    best: float
    ok: int = 0  # 200s the server logged
    refused: int = 0  # 429s it logged
    other: int = 0  # any other status it logged
    elapsed: float = 0.0  # start of the row to the last response, client side
    failed: int = 0  # calls that raised (client side)
    errors: list[str] = field(default_factory=list)  # the first few exceptions
    error: str | None = None  # why the row could not run at all
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # server: (s, status)

    @property
    def share(self) -> float:
        """best / elapsed (1.0 when best is 0 and the row took no time)."""
        if self.elapsed <= 0:
            return 0.0
        return self.best / self.elapsed if self.best > 0 else 1.0

    @property
    def clean(self) -> bool:
        return self.error is None and self.refused == 0 and self.other == 0 and self.failed == 0


def mode_label(mode: str, workers: int) -> str:
    return {
        SEQ: "seq",
        THREADS: f"{workers} threads",
        ASYNC_1: "async 1 task",
        ASYNC_N: f"async {workers} tasks",
    }[mode]


class Tally:
    """What the workers of a row saw: calls made, exceptions, when each finished."""

    def __init__(self, total: int) -> None:
        self._indexes = iter(range(total))
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.errors: list[str] = []
        self.finished: list[float] = []

    def take(self) -> bool:
        with self._lock:
            return next(self._indexes, None) is not None

    def record(self, error: BaseException | None) -> None:
        with self._lock:
            self.sent += 1
            if error is not None:
                self.failed += 1
                if len(self.errors) < 3:
                    self.errors.append(f"{type(error).__name__}: {error}")

    def done(self) -> None:
        with self._lock:
            self.finished.append(time.monotonic())


def run_threads(fetch: Fetch, url: str, tally: Tally, workers: int) -> float:
    """`workers` threads released together; returns the start."""
    started: list[float] = []
    barrier = threading.Barrier(workers, action=lambda: started.append(time.monotonic()))

    def work() -> None:
        with requests.Session() as session:
            session.trust_env = False  # no proxy from the environment: 127.0.0.1 only
            barrier.wait()
            while tally.take():
                try:
                    fetch(session, url)
                except Exception as exc:  # counted, never fatal
                    tally.record(exc)
                else:
                    tally.record(None)
            tally.done()

    threads = [threading.Thread(target=work, name=f"client-{n}") for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started[0]


async def run_tasks(
    make: Callable[[str], AFetch], key: str, url: str, tally: Tally, tasks: int
) -> float:
    """`tasks` asyncio tasks sharing one client; returns the start."""
    async with httpx.AsyncClient(trust_env=False) as client:
        fetch = make(key)

        async def work() -> None:
            while tally.take():
                try:
                    await fetch(client, url)
                except Exception as exc:  # counted, never fatal
                    tally.record(exc)
                else:
                    tally.record(None)
            tally.done()

        start = time.monotonic()
        await asyncio.gather(*(work() for _ in range(tasks)))
        return start


def run_row(server: Server, library: Library, mode: str, calls: int, workers: int) -> Row:
    row = Row(
        server.key,
        library.key,
        library.label,
        mode_label(mode, workers),
        calls,
        server.best(calls),
    )
    tally = Tally(calls)
    try:
        limiter = server.start()
    except Exception as exc:
        row.error = f"{type(exc).__name__}: {exc}"
        return row
    try:
        limiter.start()
        if mode in (SEQ, THREADS):
            assert library.sync is not None
            fetch, close = library.sync(server.key)  # just before the row: ratelimit's window
            try:
                start = run_threads(fetch, limiter.url, tally, 1 if mode == SEQ else workers)
            finally:
                close()
        else:
            assert library.async_ is not None
            tasks = 1 if mode == ASYNC_1 else workers
            start = asyncio.run(run_tasks(library.async_, server.key, limiter.url, tally, tasks))
    except Exception as exc:  # a policy that does not load, a recipe that breaks: this row only
        row.error = f"{type(exc).__name__}: {exc}"
        limiter.close()
        return row
    logged = limiter.entries(at_least=tally.sent - tally.failed)
    limiter.close()
    row.elapsed = max(tally.finished) - start
    row.failed, row.errors = tally.failed, tally.errors
    row.ok = sum(1 for e in logged if e.status == 200)
    row.refused = sum(1 for e in logged if e.status == 429)
    row.other = len(logged) - row.ok - row.refused
    first = logged[0].at if logged else 0.0
    row.arrivals = [(round(e.at - first, 3), e.status) for e in logged]
    return row


# -- reporting ---------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    passed: bool
    detail: str


def targets(rows: list[Row]) -> list[Target]:
    found = []
    for r in rows:
        if r.library != "callpolicy":
            continue
        name = f"callpolicy {r.server} {r.mode}: 0 429s and >= {TARGET_SHARE:.0%} of the best"
        if r.error is not None:
            found.append(Target(name, False, f"did not run ({r.error.splitlines()[0]})"))
            continue
        detail = f"{r.refused} 429s, {r.share:.2%} of the best"
        if r.failed or r.other:
            detail += f", {r.failed} raised, {r.other} other statuses"
        found.append(Target(name, r.clean and r.share >= TARGET_SHARE, detail))
    return found


def versions() -> dict[str, str]:
    found = {}
    for package in (
        "callpolicy",
        "limits",
        "pyrate-limiter",
        "ratelimit",
        "aiolimiter",
        "requests",
        "httpx",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "?"
    for binary in ("nginx", "haproxy"):
        found[binary] = server_version(binary)
    return found


def report(rows: list[Row], servers: list[Server], args: argparse.Namespace) -> None:
    print(
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    print(
        f"{args.calls} calls a row, a fresh server each; 429s are counted, not retried. "
        "elapsed: start to last response; % best = best / elapsed (means something with 0 429s)."
    )
    header = f"  {'library':<22}{'mode':<16}{'200s':>6}{'429s':>6}{'elapsed s':>11}{'% best':>9}"
    for server in servers:
        print()
        print(f"{server.label} ({server.key}): best {server.best(args.calls):.2f} s")
        print(header)
        print("  " + "-" * (len(header) - 2))
        for r in (r for r in rows if r.server == server.key):
            if r.error is not None:
                print(f"  {r.label:<22}{r.mode:<16}  error: {_one_line(r.error)}")
                continue
            extra = f"  ({r.other} other statuses)" if r.other else ""
            extra += f"  ({r.failed} raised: {r.errors[0]})" if r.failed else ""
            print(
                f"  {r.label:<22}{r.mode:<16}{r.ok:6d}{r.refused:6d}{r.elapsed:11.2f}"
                f"{r.share:9.1%}{extra}"
            )
    print()
    print("Target (callpolicy):")
    for found in targets(rows):
        print(f"  [{'PASS' if found.passed else 'MISS'}] {found.name}: {found.detail}")


def _one_line(text: str, width: int = 200) -> str:
    flat = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def to_json(rows: list[Row], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "versions": versions(),
        "mode": "quick" if args.quick else "full",
        "calls": args.calls,
        "workers": args.threads,
        "policies": POLICIES,
        "rows": [asdict(r) | {"share_of_best": r.share} for r in rows],
        "targets": [asdict(t) for t in targets(rows)],
    }


# -- main --------------------------------------------------------------------------------------
def _pick(
    wanted: str | None, known: list[str], what: str, parser: argparse.ArgumentParser
) -> set[str]:
    if wanted is None:
        return set(known)
    chosen = {key.strip() for key in wanted.split(",") if key.strip()}
    if unknown := chosen - set(known):
        parser.error(f"unknown {what} {sorted(unknown)}; known: {known}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="30 calls a row (CI smoke test)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the rows here")
    parser.add_argument("--calls", type=int, help="calls a row (default 100, quick 30)")
    parser.add_argument("--threads", type=int, default=4, help="threads or tasks (default 4)")
    parser.add_argument("--servers", metavar="KEY,...", help="only these servers")
    parser.add_argument("--only", metavar="KEY,...", help="only these libraries")
    args = parser.parse_args(argv)
    args.calls = args.calls or (30 if args.quick else 100)
    if args.calls < 1 or args.threads < 1:
        parser.error("--calls and --threads must be >= 1")
    server_keys = _pick(args.servers, [s.key for s in SERVERS], "server(s)", parser)
    library_keys = _pick(args.only, [lib.key for lib in LIBRARIES], "library(ies)", parser)
    servers = [s for s in SERVERS if s.key in server_keys]
    rows = []
    for server in servers:
        for library in (lib for lib in LIBRARIES if lib.key in library_keys):
            for mode in library.modes:
                row = run_row(server, library, mode, args.calls, args.threads)
                rows.append(row)
                state = row.error.splitlines()[0] if row.error else f"{row.refused} 429s"
                print(f"  ... {server.key} {row.label} {row.mode}: {state}", file=sys.stderr)
                time.sleep(0.1)  # let the machine settle between rows
    report(rows, servers, args)
    # Daemon threads (pyrate-limiter's leaker ends at its next tick after close()) may stay.
    leftover = [
        t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    if leftover:
        print(f"WARNING: threads still running: {leftover}")
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(rows, args), indent=2) + "\n", "utf-8")
        print(f"Results written to {args.json}")


if __name__ == "__main__":
    main()
