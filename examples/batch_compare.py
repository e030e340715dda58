"""The batch seed's comparison: 1,000 lookups against a server that fails 10% of requests,
throttles, and goes down for 20 s in the middle; three ways to make them.

    python examples/batch_calls.py --compare                    # 1,000 calls, 20 s outage
    python examples/batch_calls.py --compare --calls 300 --outage 5 --plot outage.png

  serial      a plain loop, one call after another, each tried once
  unprotected 30 threads, each call retried at once up to 3 times (a hand-written loop)
  callpolicy  30 threads through `@policy("outage.lookup")` (examples/policies/outage.toml):
              30 slots, a paced rate under the server's, retries with backoff that follow
              Retry-After, a retry budget, and a circuit breaker. A call the breaker refuses
              (`CircuitOpen`) is put back and made again when the breaker probes
              (`retry_in`): the batch waits out the outage instead of failing through it.

The server (mock_api.MockAPI) answers 429 with Retry-After beyond 200 requests in any
second, 503 to 10% of the requests it admits, and 503 to every request during the outage,
which starts at its request number calls / 2, whatever the requests before were. The table
says, for each: the time, the calls that failed, the requests sent beyond one per call
(retries), and the requests that reached the server during the outage. With matplotlib
installed, `--plot` draws the requests per 100 ms of each run with the outage shaded.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from mock_api import MockAPI, Reply, Request

import callpolicy
from callpolicy import CircuitOpen, policy

POLICY = Path(__file__).resolve().parent / "policies" / "outage.toml"
THREADS = 30
SERVER_QUOTA = (200, 1.0)
ERROR_RATE = 0.10
LATENCY = 0.01  # seconds the server takes per lookup


class Outage:
    """The server's outage: from the `start_after`th request it gets (of any kind), down
    for `seconds`."""

    def __init__(self, start_after: int, seconds: float) -> None:
        self.start_after = start_after
        self.seconds = seconds
        self.started: float | None = None
        self.seen = 0
        self._lock = threading.Lock()

    def down(self) -> bool:
        """Counts a request; whether it arrived during the outage."""
        now = time.monotonic()
        with self._lock:
            self.seen += 1
            if self.started is None and self.seen >= self.start_after:
                self.started = now
            return self.started is not None and now < self.started + self.seconds

    def during(self, arrivals: list[float]) -> int:
        """How many of `arrivals` (every request the server got) came during the outage."""
        if self.started is None:
            return 0
        end = self.started + self.seconds
        return sum(1 for t in arrivals if self.started <= t < end)


class OutageAPI(MockAPI):
    """The mock API, down for every request during the outage (before its quota)."""

    def __init__(self, outage: Outage, **options: Any) -> None:
        super().__init__(**options)
        self.outage = outage

    def answer(self, method: str, target: str, raw_body: bytes) -> Reply:
        if self.outage.down():
            with self._lock:
                self._stats.requests += 1
                self._stats.arrivals.append(time.monotonic())
            return Reply(503, {"error": "down for maintenance"})
        return super().answer(method, target, raw_body)


def lookup(request: Request) -> object:
    time.sleep(LATENCY)
    return {"id": request.params["id"]}


class Session(threading.local):
    """One requests.Session (keep-alive) per thread."""

    def __init__(self) -> None:
        self.http = requests.Session()


@dataclass
class Run:
    name: str
    calls: int
    failed: int = 0
    requests: int = 0
    during_outage: int = 0
    elapsed: float = 0.0
    arrivals: list[float] = field(default_factory=list)  # seconds since the run began
    outage: tuple[float, float] | None = None

    @property
    def retries(self) -> int:
        return self.requests - self.calls


def get(session: Session, base: str, n: int) -> Any:
    response = session.http.get(f"{base}/lookup/{n}", timeout=5)
    response.raise_for_status()
    return response.json()


def serial(base: str, ids: list[int]) -> int:
    session, failed = Session(), 0
    for n in ids:
        try:
            get(session, base, n)
        except requests.RequestException:
            failed += 1
    return failed


def unprotected(base: str, ids: list[int]) -> int:
    session = Session()

    def one(n: int) -> bool:
        for _ in range(3):  # retried at once, as a hand-written loop does
            try:
                get(session, base, n)
            except requests.RequestException:
                continue
            return True
        return False

    with ThreadPoolExecutor(THREADS) as pool:
        return sum(not ok for ok in pool.map(one, ids))


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.session = Session()

    @policy("outage.lookup")
    def lookup(self, n: int) -> Any:
        return get(self.session, self.base, n)


class Refusals:
    """Calls the open breaker refused (made again later), and why calls failed."""

    def __init__(self) -> None:
        self.refused = 0
        self.failed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, refused: int = 0, failed: str | None = None) -> None:
        with self._lock:
            self.refused += refused
            if failed is not None:
                self.failed[failed] += 1


REFUSALS = Refusals()


def protected(base: str, ids: list[int]) -> int:
    client = Client(base)

    def one(n: int) -> bool:
        while True:
            try:
                client.lookup(n)
            except CircuitOpen as refused:  # no call made: come back when it probes
                REFUSALS.add(refused=1)
                time.sleep(max(refused.retry_in, 0.05))
                continue
            except (requests.RequestException, callpolicy.QuotaExceeded) as error:
                REFUSALS.add(failed=" ".join(str(error).split()[:3]))
                return False
            return True

    with ThreadPoolExecutor(THREADS) as pool:
        return sum(not ok for ok in pool.map(one, ids))


def run(name: str, batch: Callable[[str, list[int]], int], calls: int, outage_s: float) -> Run:
    outage = Outage(start_after=calls // 2, seconds=outage_s)
    api = OutageAPI(
        outage,
        quota=SERVER_QUOTA,
        error_rate=ERROR_RATE,
        seed=5,
        routes={"GET /lookup/<id>": lookup},
    )
    with api:
        began = time.monotonic()
        failed = batch(api.url, list(range(calls)))
        elapsed = time.monotonic() - began
    stats = api.stats
    found = Run(name, calls, failed, stats.requests, outage.during(stats.arrivals), elapsed)
    found.arrivals = [t - began for t in stats.arrivals]
    if outage.started is not None:
        found.outage = (outage.started - began, outage.started - began + outage_s)
    return found


def compare(calls: int, outage: float, plot: str | None) -> int:
    callpolicy.load(POLICY)
    runs = [
        run("serial loop", serial, calls, outage),
        run("unprotected, 30 threads", unprotected, calls, outage),
        run("callpolicy, 30 threads", protected, calls, outage),
    ]
    print(
        f"\n{calls} calls; the server allows {SERVER_QUOTA[0]}/s, fails {ERROR_RATE:.0%}, "
        f"and is down for {outage:g} s from its request number {calls // 2}"
    )
    print(f"  {'':<26}{'time':>8}{'failed':>8}{'retries':>9}{'requests in outage':>20}")
    for r in runs:
        print(f"  {r.name:<26}{r.elapsed:7.1f}s{r.failed:>8}{r.retries:>9}{r.during_outage:>20}")
    stats = callpolicy.policy_stats()["outage.lookup"]
    failures = ", ".join(f"{why} x{n}" for why, n in REFUSALS.failed.most_common()) or "none"
    print(
        f"  callpolicy: {REFUSALS.refused} calls refused by the open breaker (no request; made "
        f"again when it probed); failed: {failures}"
    )
    print(
        f"  its statistics: {stats.calls} calls ({stats.failures} failed, the breaker's "
        f"refusals included: {stats.failure_rate:.1%}), {stats.retries} retries, "
        f"{stats.give_ups} give-ups"
    )
    if plot:
        draw(runs, plot)
    serial_run, storm, ours = runs
    better = ours.failed < min(serial_run.failed, storm.failed) and (
        ours.during_outage < storm.during_outage
    )
    return 0 if better else 1


def draw(runs: list[Run], path: str) -> None:
    try:
        import matplotlib  # noqa: PLC0415 (an optional extra)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("  (no plot: pip install 'callpolicy[plot]' for matplotlib)")
        return
    figure, axes = plt.subplots(len(runs), 1, sharex=True, figsize=(9, 2.4 * len(runs)))
    for ax, r in zip(axes, runs, strict=True):
        end = max(r.arrivals, default=0.0)
        bins = [i * 0.1 for i in range(int(end / 0.1) + 2)]
        ax.hist(r.arrivals, bins=bins, color="tab:blue")
        if r.outage is not None:
            ax.axvspan(*r.outage, color="tab:red", alpha=0.15, label="outage")
        ax.set_title(f"{r.name}: {r.failed} failed, {r.during_outage} requests in the outage")
        ax.set_ylabel("requests / 100 ms")
    axes[-1].set_xlabel("seconds since the batch began")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"  plot: {path}")
