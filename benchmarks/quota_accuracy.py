"""Quota accuracy: how closely each rate limiter keeps to N calls per period, and how much of
N it actually lets through, next to ratelimit, limits, pyrate-limiter and aiolimiter.

    python benchmarks/quota_accuracy.py            # full run (about 2.5 minutes)
    python benchmarks/quota_accuracy.py --quick    # about 15 seconds, for CI smoke tests
    python benchmarks/quota_accuracy.py --json results.json
    python benchmarks/quota_accuracy.py --only callpolicy-sliding-window --guard-ms 1

Every admitted call records `time.monotonic()` inside the limited function. For callpolicy,
the benchmark also records the instant each call was admitted on callpolicy's own clock (the
`now` its counter admitted it at, by wrapping the in-memory counters' `admit` and `take` in
this process during callpolicy's runs): its guarantee is on admissions, and what the function
sees adds the scheduler's delay between admission and the call running. The other libraries
expose no admission instant: they are measured in the function only. Two workloads run
against a fresh limiter each, at 1, 4 and 16 threads and as 500 asyncio tasks:

  burst   every worker calls back to back, blocking (waiting for admission)
  hammer  every worker calls back to back, non-blocking (a refused call is counted, and the
          worker calls again at once; tasks yield with asyncio.sleep(0) after each call)

For each run: the most admissions in any window of one period (for each admission time t, the
admissions in [t, t + period)), and the throughput share: the admissions inside the run
divided by (run length / period) x N; for callpolicy both at admission and in the function,
and the delay from one to the other.

Then Redis: a redis-server on 127.0.0.1 (started and stopped here), 8 processes (spawn)
sharing one sliding-window quota for a few seconds in blocking mode; each records
`time.time()` in the function (one host, one clock: comparable across processes) and the
server's TIME of each admission. And the latency of one callpolicy admission against Redis
(a decorated no-op under a quota that never throttles) beside a plain redis-py PING,
interleaved in the same run.

callpolicy's targets are judged at admission (in-process: callpolicy's clock; Redis: the
server's TIME); the in-function figures are printed beside them. Targets are printed as PASS
or MISS; the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import platform
import queue
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from multiprocessing.queues import Queue as MPQueue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier as MPBarrier
from multiprocessing.synchronize import Event as MPEvent
from pathlib import Path
from typing import Any

import aiolimiter
import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies
import pyrate_limiter
import ratelimit
import redis

import callpolicy

# The one redis-server starter, shared with the Redis example and the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from local_redis import RedisServer

Record = Callable[[], None]
ARecord = Callable[[], Awaitable[None]]
SyncCall = Callable[[], bool]  # True: admitted (and recorded); False: refused
AsyncCall = Callable[[], Awaitable[bool]]
Close = Callable[[], None]
Stamp = tuple[float, object]  # (a time, who: the thread or task, or the process)

TARGET_SUBJECT = "callpolicy-sliding-window"
TARGET_SHARE = 0.995
REDIS_TARGET_SHARE = 0.97
LATENCY_TARGET = 2.0


def _nothing() -> None:
    return None


# -- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    limit: int  # N calls ...
    period: float  # ... per this many seconds
    periods: float  # length of one in-process run, in periods
    threads: tuple[int, ...]
    tasks: int
    repeats: int  # runs of the target rows (callpolicy sliding-window, burst)
    redis_processes: int
    redis_seconds: float
    latency_rounds: int
    latency_batch: int
    quick: bool
    guard_ms: int = 0  # callpolicy's quotas declare period + guard; judged on the period
    only: tuple[str, ...] = ()  # limiter keys to run (all when empty)

    @property
    def duration(self) -> float:
        return self.periods * self.period

    @property
    def period_ms(self) -> int:
        return round(self.period * 1000)


@dataclass(frozen=True)
class Concurrency:
    kind: str  # "threads" or "tasks"
    n: int

    @property
    def label(self) -> str:
        unit = ("thread" if self.n == 1 else "threads") if self.kind == "threads" else "tasks"
        return f"{self.n} {unit}"


# -- the limiters ---------------------------------------------------------------------------
class Subject:
    """One limiter set up for N per period. `sync`/`async_` build a fresh limiter around
    `record` and return the call and what to close afterwards, or None when unsupported."""

    key = ""
    label = ""
    threads = True  # supports threads (a sync API)
    tasks = True  # supports asyncio tasks

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def sync(self, blocking: bool, record: Record) -> tuple[SyncCall, Close] | None:
        return None

    def async_(self, blocking: bool, record: ARecord) -> tuple[AsyncCall, Close] | None:
        return None


# The guard the benchmark's quotas declare: in-process and over loopback Redis a call reaches
# the function within a few ms of its admission (the default, 20 ms for windows, also covers
# a new connection's handshake, which these runs do not make).
GUARD_MS = 2

POLICY = """\
[quotas.q]
limit = "{limit}/{period_ms}ms"
algorithm = "{algorithm}"
guard = "{guard_ms}ms"
max_wait = "60s"
storage = "{storage}"

[quotas.free]
limit = "1000000/1s"
algorithm = "sliding-window"
max_wait = "1s"
storage = "{storage}"

[endpoints.e]
quotas = ["q"]

[endpoints.free]
quotas = ["free"]
"""


def write_policy(directory: Path, cfg: Config, algorithm: str, storage: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = POLICY.format(
        limit=cfg.limit,
        period_ms=cfg.period_ms + cfg.guard_ms,
        guard_ms=GUARD_MS,
        algorithm=algorithm,
        storage=storage,
    )
    (directory / "bench.toml").write_text(text, encoding="utf-8")
    return directory


class Callpolicy(Subject):
    def __init__(self, cfg: Config, algorithm: str, root: Path) -> None:
        super().__init__(cfg)
        self.key = f"callpolicy-{algorithm}"
        self.label = f"callpolicy {algorithm}"
        self.directory = write_policy(root / algorithm, cfg, algorithm, "memory://")

    def sync(self, blocking: bool, record: Record) -> tuple[SyncCall, Close]:
        fn = callpolicy.Registry(self.directory).policy("bench.e")(record)
        if blocking:

            def call() -> bool:
                fn()
                return True

            return call, _nothing

        def try_call() -> bool:
            with callpolicy.call_options(blocking=False):
                try:
                    fn()
                except callpolicy.QuotaExceeded:
                    return False
            return True

        return try_call, _nothing

    def async_(self, blocking: bool, record: ARecord) -> tuple[AsyncCall, Close]:
        fn = callpolicy.Registry(self.directory).policy("bench.e")(record)
        if blocking:

            async def call() -> bool:
                await fn()
                return True

            return call, _nothing

        async def try_call() -> bool:
            with callpolicy.call_options(blocking=False):
                try:
                    await fn()
                except callpolicy.QuotaExceeded:
                    return False
            return True

        return try_call, _nothing


class Ratelimit(Subject):
    key = "ratelimit"
    label = "ratelimit @limits"
    tasks = False

    def sync(self, blocking: bool, record: Record) -> tuple[SyncCall, Close]:
        decorator = ratelimit.limits(calls=self.cfg.limit, period=self.cfg.period)
        # Its first window starts when it is built; backdate that by a period, as if it had
        # been built at import time: the first call then opens a window, as in real use.
        decorator.last_reset -= self.cfg.period
        limited = decorator(record)
        if blocking:
            waiting = ratelimit.sleep_and_retry(limited)

            def call() -> bool:
                waiting()
                return True

            return call, _nothing

        def try_call() -> bool:
            try:
                limited()
            except ratelimit.RateLimitException:
                return False
            return True

        return try_call, _nothing


class _FractionalItem(limits.RateLimitItemPerSecond):
    """limits' rate items count whole seconds; this one hands its storage a fractional
    period (its memory storages compute with float seconds throughout)."""

    __slots__ = ["period"]  # rate items have slots

    def __init__(self, amount: int, period: float) -> None:
        super().__init__(amount, 1)
        self.period = period

    def get_expiry(self) -> int:
        return self.period  # type: ignore[return-value]


class Limits(Subject):
    def __init__(self, cfg: Config, strategy: str) -> None:
        super().__init__(cfg)
        self.strategy = strategy
        self.key = f"limits-{strategy}"
        self.label = f"limits {strategy}"
        self.item: limits.RateLimitItem
        if cfg.period == int(cfg.period):
            self.item = limits.RateLimitItemPerSecond(cfg.limit, int(cfg.period))
        else:
            self.item = _FractionalItem(cfg.limit, cfg.period)

    def sync(self, blocking: bool, record: Record) -> tuple[SyncCall, Close]:
        storage = limits.storage.MemoryStorage()
        limiter: limits.strategies.RateLimiter
        if self.strategy == "moving-window":
            limiter = limits.strategies.MovingWindowRateLimiter(storage)
        else:
            limiter = limits.strategies.FixedWindowRateLimiter(storage)
        item = self.item

        def call() -> bool:
            while not limiter.hit(item):
                if not blocking:
                    return False
                reset = limiter.get_window_stats(item).reset_time
                time.sleep(max(reset - time.time(), 0.0))
            record()
            return True

        return call, _nothing

    def async_(self, blocking: bool, record: ARecord) -> tuple[AsyncCall, Close]:
        storage = limits.aio.storage.MemoryStorage()
        limiter: limits.aio.strategies.RateLimiter
        if self.strategy == "moving-window":
            limiter = limits.aio.strategies.MovingWindowRateLimiter(storage)
        else:
            limiter = limits.aio.strategies.FixedWindowRateLimiter(storage)
        item = self.item

        async def call() -> bool:
            while not await limiter.hit(item):
                if not blocking:
                    return False
                reset = (await limiter.get_window_stats(item)).reset_time
                await asyncio.sleep(max(reset - time.time(), 0.0))
            await record()
            return True

        return call, _nothing


class Pyrate(Subject):
    key = "pyrate-limiter"
    label = "pyrate-limiter"

    def _limiter(self) -> pyrate_limiter.Limiter:
        rate = pyrate_limiter.Rate(self.cfg.limit, self.cfg.period_ms)
        return pyrate_limiter.Limiter(rate)  # an InMemoryBucket; default buffer_ms

    def sync(self, blocking: bool, record: Record) -> tuple[SyncCall, Close]:
        limiter = self._limiter()

        def call() -> bool:
            got = limiter.try_acquire("bench", blocking=blocking)
            if got is not True and got is not False:  # only an async bucket returns awaitables
                raise TypeError(f"unexpected {got!r} from a sync bucket")
            if got:
                record()
            return got

        return call, limiter.close

    def async_(self, blocking: bool, record: ARecord) -> tuple[AsyncCall, Close]:
        limiter = self._limiter()

        async def call() -> bool:
            got = await limiter.try_acquire_async("bench", blocking=blocking)
            if got:
                await record()
            return got

        return call, limiter.close


class Aiolimiter(Subject):
    key = "aiolimiter"
    label = "aiolimiter AsyncLimiter"
    threads = False

    def async_(self, blocking: bool, record: ARecord) -> tuple[AsyncCall, Close]:
        limiter = aiolimiter.AsyncLimiter(self.cfg.limit, self.cfg.period)

        async def call() -> bool:
            if not blocking and not limiter.has_capacity():
                return False
            await limiter.acquire()  # does not suspend when it has capacity
            await record()
            return True

        return call, _nothing


def subjects(cfg: Config, root: Path) -> list[Subject]:
    return [
        Callpolicy(cfg, "sliding-window", root),
        Callpolicy(cfg, "token-bucket", root),
        Callpolicy(cfg, "fixed-window", root),
        Ratelimit(cfg),
        Limits(cfg, "moving-window"),
        Limits(cfg, "fixed-window"),
        Pyrate(cfg),
        Aiolimiter(cfg),
    ]


# -- metrics --------------------------------------------------------------------------------
def window_counts(times: Sequence[float], period: float) -> Iterator[int]:
    """For each admission t (sorted), the admissions in [t, t + period)."""
    j = 0
    for i, t in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < t + period:
            j += 1
        yield j - i


@dataclass
class Accuracy:
    admitted: int  # inside [start, end)
    recorded: int  # all, including calls admitted while the workers stopped
    max_window: int
    over: int  # admissions t whose window [t, t + period) holds more than N
    share: float  # admitted / (run length / period x N)
    # How much less than a period the closest N + 1 admissions spanned (0: never N + 1 in a
    # period): the guard a limiter would have needed to keep every window at N.
    short_ms: float


def accuracy(
    times: Sequence[float], start: float, end: float, limit: int, period: float
) -> Accuracy:
    ordered = sorted(times)
    counts = list(window_counts(ordered, period))
    admitted = sum(1 for t in ordered if start <= t < end)
    spans = [ordered[i + limit] - ordered[i] for i in range(len(ordered) - limit)]
    return Accuracy(
        admitted=admitted,
        recorded=len(ordered),
        max_window=max(counts, default=0),
        over=sum(1 for c in counts if c > limit),
        share=admitted / ((end - start) / period * limit),
        short_ms=max(0.0, period - min(spans, default=period)) * 1000,
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def delay_summary(delays: Sequence[float]) -> dict[str, float]:
    """min, median, p99 and max of delays (ms); empty when there are none."""
    ordered = sorted(delays)
    if not ordered:
        return {}
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
    }


def admission_delays(admissions: Sequence[Stamp], calls: Sequence[Stamp]) -> list[float]:
    """Milliseconds from each admission to its function running. A thread (or task) runs
    the function it was admitted for before it asks again, so the two pair up in order per
    thread or task (a task cancelled at the end may leave its last admission unpaired)."""
    admitted: dict[object, list[float]] = {}
    for t, who in admissions:
        admitted.setdefault(who, []).append(t)
    ran: dict[object, list[float]] = {}
    for t, who in calls:
        ran.setdefault(who, []).append(t)
    return [
        (c - a) * 1000
        for who, times in ran.items()
        for a, c in zip(admitted.get(who, []), times, strict=False)
    ]


@dataclass
class Run:
    subject: str
    workload: str
    concurrency: str
    repeat: int
    elapsed: float = 0.0
    refused: int = 0
    accuracy: Accuracy | None = None  # on time.monotonic() taken in the function
    # callpolicy only: the same on its own clock of admission (the figure judged), and the
    # delay (ms) from admission to the function running
    admission: Accuracy | None = None
    delay_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None


# -- admissions on callpolicy's clock -------------------------------------------------------
# The in-memory counters whose `admit` / `take` return an Entry for an admitted call.
TAPPED = ("SlidingWindow", "FixedWindow", "Bucket")  # in _quotas.algorithms or .buckets


@contextlib.contextmanager
def admissions_tapped(
    sink: list[Stamp], who: Callable[[], object], enabled: bool = True
) -> Iterator[bool]:
    """While open, record (now, who) for every call a callpolicy in-memory counter admits:
    `now` is the instant callpolicy's clock admitted it at. Done by wrapping the counters'
    `admit` and `take` in this process only, restored on exit. Yields False when it is not
    possible (or not enabled)."""
    algorithms: Any = None
    buckets: Any = None
    if enabled:
        try:
            from callpolicy._quotas import algorithms  # noqa: PLC0415 (internal)
        except ImportError:
            algorithms = None
        try:
            from callpolicy._quotas import buckets  # noqa: PLC0415 (internal)
        except ImportError:
            buckets = None
    entry_type = getattr(algorithms, "Entry", None)
    if not isinstance(entry_type, type):
        yield False
        return
    last: list[object] = [None]  # an admit() that calls take(): one admission, one record

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: object, now: float, cost: float) -> Any:
            out = original(self, now, cost)
            # Callers hold the storage's lock: no other admission runs in between.
            if isinstance(out, entry_type) and out is not last[0]:
                last[0] = out
                sink.append((now, who()))
            return out

        return method

    saved: list[tuple[type, str, Any]] = []
    try:
        for name in TAPPED:
            cls = getattr(algorithms, name, None) or getattr(buckets, name, None)
            if not isinstance(cls, type):
                continue
            for method in ("admit", "take"):
                original = vars(cls).get(method)
                if callable(original):
                    saved.append((cls, method, original))
                    setattr(cls, method, wrap(original))
        yield bool(saved)
    finally:
        for cls, method, original in reversed(saved):
            setattr(cls, method, original)


def guard_ms(cfg: Config) -> float:
    """How long callpolicy's sliding windows pad each call's stay: the benchmark's quotas'
    guard, plus --guard-ms."""
    return GUARD_MS + cfg.guard_ms


# -- running one workload -------------------------------------------------------------------
@dataclass
class Outcome:
    calls: list[Stamp]  # (time.monotonic() in the function, the thread or task)
    start: float
    end: float
    refused: int
    errors: list[str] = field(default_factory=list)


def run_threads(call: SyncCall, threads: int, duration: float, calls: list[Stamp]) -> Outcome:
    go = threading.Event()
    bounds = [0.0, 0.0]
    refused = [0] * threads
    errors: list[str] = []

    def work(index: int) -> None:
        go.wait()
        end = bounds[1]
        count = 0
        try:
            while time.monotonic() < end:
                if not call():
                    count += 1
        except Exception as exc:
            errors.append(repr(exc))
        refused[index] = count

    workers = [
        threading.Thread(target=work, args=(i,), name=f"bench-{i}", daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    start = time.monotonic()
    bounds[:] = [start, start + duration]
    go.set()
    # Blocking workers finish the call they are in (waiting at most about a period).
    grace = duration + 30.0
    for worker in workers:
        worker.join(max(start + grace - time.monotonic(), 0.0))
    stuck = sum(worker.is_alive() for worker in workers)
    if stuck:
        errors.append(f"{stuck} threads still waiting {grace:.0f}s after the start")
    return Outcome(list(calls), start, start + duration, sum(refused), errors)


async def run_tasks(
    make: Callable[[], tuple[AsyncCall, Close]],
    tasks: int,
    duration: float,
    hammer: bool,
    calls: list[Stamp],
) -> Outcome:
    call, close = make()  # inside the loop: some limiters bind to it
    go = asyncio.Event()
    bounds = [0.0, 0.0]
    refused = [0]

    async def work() -> None:
        await go.wait()
        end = bounds[1]
        while time.monotonic() < end:
            if not await call():
                refused[0] += 1
            if hammer:
                await asyncio.sleep(0)  # a refusal never suspends: let the others run

    workers = [asyncio.create_task(work()) for _ in range(tasks)]
    errors: list[str] = []
    try:
        await asyncio.sleep(0)
        start = time.monotonic()
        bounds[:] = [start, start + duration]
        go.set()
        await asyncio.sleep(duration)
        # Calls still queued at the end are cancelled (a task never holds an admission
        # across a suspension: it records as soon as it is admitted).
        for worker in workers:
            worker.cancel()
        for result in await asyncio.gather(*workers, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                errors.append(repr(result))
    finally:
        for worker in workers:
            worker.cancel()
        close()
    return Outcome(list(calls), start, start + duration, refused[0], errors)


def run_one(
    subject: Subject, workload: str, conc: Concurrency, cfg: Config, repeat: int
) -> Run | None:
    blocking = workload == "burst"
    if not (subject.threads if conc.kind == "threads" else subject.tasks):
        return None
    calls: list[Stamp] = []
    append = calls.append
    admissions: list[Stamp] = []
    # Who made a call: the thread, or the task (all tasks share one thread).
    who: Callable[[], object] = (
        threading.get_ident if conc.kind == "threads" else asyncio.current_task
    )
    run = Run(subject.key, workload, conc.label, repeat)
    tap = isinstance(subject, Callpolicy)
    try:
        with admissions_tapped(admissions, who, enabled=tap) as tapped:
            if conc.kind == "threads":

                def record() -> None:
                    append((time.monotonic(), who()))

                made = subject.sync(blocking, record)
                assert made is not None
                call, close = made
                try:
                    outcome = run_threads(call, conc.n, cfg.duration, calls)
                finally:
                    close()
            else:

                async def arecord() -> None:
                    append((time.monotonic(), who()))

                def make() -> tuple[AsyncCall, Close]:
                    made = subject.async_(blocking, arecord)
                    assert made is not None
                    return made

                outcome = asyncio.run(run_tasks(make, conc.n, cfg.duration, not blocking, calls))
            admitted = list(admissions)
    except Exception as exc:
        run.error = repr(exc)
        return run
    run.elapsed = outcome.end - outcome.start
    run.refused = outcome.refused
    times = [t for t, _ in outcome.calls]
    run.accuracy = accuracy(times, outcome.start, outcome.end, cfg.limit, cfg.period)
    if tapped:
        run.admission = accuracy(
            [t for t, _ in admitted], outcome.start, outcome.end, cfg.limit, cfg.period
        )
        run.delay_ms = delay_summary(admission_delays(admitted, outcome.calls))
    if outcome.errors:
        run.error = "; ".join(sorted(set(outcome.errors)))[:300]
    return run


# -- Redis ----------------------------------------------------------------------------------
def capture_server_times(sink: list[float], round_trips: list[int]) -> bool:
    """Record the server-clock time (Redis TIME) of every admission this process gets, and
    count the script's round trips, by wrapping RunScript.sync (one script round trip) in
    this worker process only.
    False if that is not possible."""
    try:
        from callpolicy._quotas.redis import storage as redis_storage  # noqa: PLC0415 (optional, internal)
    except ImportError:
        return False
    step = getattr(redis_storage, "RunScript", None)
    original = getattr(step, "sync", None)
    if step is None or original is None:
        return False

    def sync(self: Any) -> Any:
        reply = original(self)
        round_trips[0] += 1
        args = self.args
        admitting = self.lone or (args and args[0] == "admit")  # redis_lone.lua only admits
        if admitting and reply and int(reply[0]) == 1:
            sink.append(int(reply[1]) / 1e6)
        return reply

    step.sync = sync
    return True


@dataclass
class WorkerResult:
    index: int
    times: list[float] = field(default_factory=list)  # time.time() in the function
    server: list[float] = field(default_factory=list)  # Redis TIME of the same admissions
    round_trips: int = 0  # script calls (admissions and refusals)
    error: str | None = None


def redis_worker(
    directory: str,
    ready: MPBarrier,
    go: MPEvent,
    start_at: Synchronized[float],
    duration: float,
    results: MPQueue[WorkerResult],
    index: int,
) -> None:
    """One of the processes sharing the Redis quota: a blocking burst, recording time.time()
    of every admission (and the server's clock of it, when it can be read)."""
    out = WorkerResult(index)
    times, server, round_trips = out.times, out.server, [0]
    try:
        try:
            registry = callpolicy.Registry(directory)
            captured = capture_server_times(server, round_trips)

            def record() -> None:
                times.append(time.time())

            fn = registry.policy("bench.e")(record)
            registry.policy("bench.free")(_nothing)()  # connect and load the script
            server.clear()
            round_trips[0] = 0
        except BaseException:
            ready.abort()  # the parent stops waiting at once
            raise
        ready.wait(60)
        if not go.wait(60):
            raise RuntimeError("no start signal")
        start = start_at.value
        time.sleep(max(start - time.time(), 0.0))
        end = start + duration
        while time.time() < end:
            fn()
        if not captured:
            server.clear()
        out.round_trips = round_trips[0]
    except Exception as exc:
        out.error = repr(exc)
    results.put(out)


@dataclass
class RedisShared:
    processes: int
    seconds: float
    accuracy: Accuracy | None = None  # on time.time() taken in the function
    server_accuracy: Accuracy | None = None  # the same, on the server's clock of admission
    client_delay_ms: dict[str, float] = field(default_factory=dict)
    round_trips_per_admission: float = math.nan
    errors: list[str] = field(default_factory=list)


def run_redis_shared(cfg: Config, url: str, directory: Path) -> RedisShared:
    ctx = multiprocessing.get_context("spawn")
    n = cfg.redis_processes
    ready = ctx.Barrier(n + 1)
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    results: MPQueue[WorkerResult] = ctx.Queue()
    result = RedisShared(n, cfg.redis_seconds)
    processes = [
        ctx.Process(
            target=redis_worker,
            args=(str(directory), ready, go, start_at, cfg.redis_seconds, results, i),
            name=f"bench-redis-{i}",
            daemon=True,
        )
        for i in range(n)
    ]
    got: list[WorkerResult] = []
    try:
        for process in processes:
            process.start()
        ready.wait(120)  # every process imported, connected and loaded the script
        start = time.time() + 0.2
        start_at.value = start
        go.set()
        deadline = time.monotonic() + cfg.redis_seconds + 60
        while len(got) < n and time.monotonic() < deadline:
            try:
                got.append(results.get(timeout=0.5))
            except queue.Empty:
                if not any(process.is_alive() for process in processes):
                    break
        for process in processes:
            process.join(10)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join(5)
        results.close()
        results.join_thread()
    end = start + cfg.redis_seconds
    result.errors = [f"process {r.index}: {r.error}" for r in got if r.error]
    if len(got) < n:
        result.errors.append(f"{n - len(got)} processes sent no result")
    times = [t for r in got for t in r.times]
    result.accuracy = accuracy(times, start, end, cfg.limit, cfg.period)
    if times and all(len(r.server) == len(r.times) for r in got):
        server_times = [t for r in got for t in r.server]
        result.server_accuracy = accuracy(server_times, start, end, cfg.limit, cfg.period)
        result.client_delay_ms = delay_summary(
            [(c - s) * 1000 for r in got for c, s in zip(r.times, r.server, strict=True)]
        )
        result.round_trips_per_admission = sum(r.round_trips for r in got) / len(times)
    return result


@dataclass
class Latency:
    samples: int
    ping_us: dict[str, float]
    callpolicy_us: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.callpolicy_us["median"] / self.ping_us["median"]


def run_latency(cfg: Config, port: int, directory: Path) -> Latency:
    """One admission through a never-throttling Redis quota vs one PING, interleaved."""
    fn = callpolicy.Registry(directory).policy("bench.free")(_nothing)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        ping: Callable[[], object] = client.ping
        samples: dict[str, list[float]] = {"ping": [], "callpolicy": []}
        cases: list[tuple[str, Callable[[], object]]] = [("ping", ping), ("callpolicy", fn)]
        for _, warm in cases:
            for _ in range(200):
                warm()
        clock = time.perf_counter_ns
        for round_no in range(cfg.latency_rounds):
            for name, call in cases if round_no % 2 == 0 else cases[::-1]:
                sink = samples[name]
                for _ in range(cfg.latency_batch):
                    began = clock()
                    call()
                    sink.append((clock() - began) / 1000)
    finally:
        client.close()

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"median": statistics.median(ordered), "p99": percentile(ordered, 0.99)}

    return Latency(len(samples["ping"]), summary(samples["ping"]), summary(samples["callpolicy"]))


@dataclass
class RedisPart:
    version: str = "?"
    shared: RedisShared | None = None
    latency: Latency | None = None
    error: str | None = None


def run_redis(cfg: Config, root: Path) -> RedisPart:
    part = RedisPart()
    server = RedisServer(root / "redis")
    try:
        server.start()
        info = redis.Redis(host="127.0.0.1", port=server.port)
        part.version = str(info.info("server").get("redis_version", "?"))
        info.close()
        directory = write_policy(root / "redis-policies", cfg, "sliding-window", server.url)
        print(f"  Redis: {cfg.redis_processes} processes sharing one quota ...", flush=True)
        part.shared = run_redis_shared(cfg, server.url, directory)
        print("  Redis: admission latency ...", flush=True)
        part.latency = run_latency(cfg, server.port, directory)
    except Exception as exc:
        part.error = repr(exc)
    finally:
        server.stop()
    return part


# -- reporting ------------------------------------------------------------------------------
WORKLOADS = {
    "burst": "burst: every worker calls back to back, blocking (waits for admission)",
    "hammer": "hammer: every worker calls back to back, non-blocking (refusals counted)",
}


def versions() -> dict[str, str]:
    found = {}
    for package in ("callpolicy", "ratelimit", "limits", "pyrate-limiter", "aiolimiter", "redis"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "?"
    return found


@dataclass
class Cell:
    """Some runs (of one subject, workload and concurrency). Figures are at admission when
    every run recorded it (callpolicy), else in the function; with fn=True, in the function."""

    runs: list[Run]

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.accuracy is not None and r.error is None]

    @property
    def tapped(self) -> bool:
        """Every run has its admissions on callpolicy's clock."""
        good = self.good
        return bool(good) and all(r.admission is not None for r in good)

    def ok(self, fn: bool = False) -> list[Accuracy]:
        at_admission = not fn and self.tapped
        found = [r.admission if at_admission else r.accuracy for r in self.good]
        return [a for a in found if a is not None]

    def worst_max(self, fn: bool = False) -> int:
        return max(a.max_window for a in self.ok(fn))

    def over(self, fn: bool = False) -> int:
        return sum(a.over for a in self.ok(fn))

    def short_ms(self, fn: bool = False) -> float:
        return max(a.short_ms for a in self.ok(fn))

    def median_share(self, fn: bool = False) -> float:
        return statistics.median(a.share for a in self.ok(fn))

    def delay_ms(self) -> dict[str, float]:
        """From admission to the function running: the median of the runs' medians, the
        worst p99 and the worst max."""
        found = [r.delay_ms for r in self.good if r.delay_ms]
        if not found:
            return {}
        return {
            "median": statistics.median(d["median"] for d in found),
            "p99": max(d["p99"] for d in found),
            "max": max(d["max"] for d in found),
        }

    @property
    def tries_per_s(self) -> float:
        return statistics.median(
            (r.refused + r.accuracy.admitted) / r.elapsed
            for r in self.runs
            if r.accuracy and r.elapsed
        )


def cells(runs: list[Run]) -> dict[tuple[str, str, str], Cell]:
    found: dict[tuple[str, str, str], Cell] = {}
    for run in runs:
        found.setdefault((run.subject, run.workload, run.concurrency), Cell([])).runs.append(run)
    return found


Row = tuple[str, Callable[[str], str]]  # a label, and the text of its cell in a column


def print_matrix(title: str, rows: list[Row], concs: list[Concurrency], width: int = 16) -> None:
    """One line per row, one column per concurrency (at least `width` wide, more if a cell
    needs it)."""
    texts = [[text(conc.label) for conc in concs] for _, text in rows]
    width = max([width, *(len(t) + 2 for line in texts for t in line)])
    label_width = max([28, *(len(label) + 2 for label, _ in rows)])
    print()
    print(title)
    print(f"  {'limiter':<{label_width}}" + "".join(f"{c.label:>{width}}" for c in concs))
    print("  " + "-" * (label_width + width * len(concs)))
    for (label, _), line in zip(rows, texts, strict=True):
        print(f"  {label:<{label_width}}" + "".join(f" {t:>{width - 1}}" for t in line))


def partial_text(text: Callable[[str, str], str], key: str) -> Callable[[str], str]:
    """text(key, column label), as a function of the column label."""
    return lambda conc: text(key, conc)


def subject_rows(subjects_: Sequence[Subject], text: Callable[[str, str], str]) -> list[Row]:
    """One row per limiter; text(subject key, column label)."""
    return [(s.label, partial_text(text, s.key)) for s in subjects_]


def cell_text(
    table: dict[tuple[str, str, str], Cell], workload: str, show: Callable[[Cell], str]
) -> Callable[[str, str], str]:
    def text(subject: str, conc: str) -> str:
        cell = table.get((subject, workload, conc))
        if cell is None:
            return "-"
        return show(cell) if cell.good else "error"

    return text


def accuracy_text(limit: int) -> Callable[[Cell], str]:
    def show(cell: Cell) -> str:
        worst = cell.worst_max()
        if cell.tapped:  # callpolicy: at admission, then in the function
            fn = cell.worst_max(fn=True)
            mark, fn_mark = ("!" if worst > limit else ""), ("!" if fn > limit else "")
            text = f"{worst}{mark} ({fn}{fn_mark} fn)"
        else:
            text = f"{worst}{'!' if worst > limit else ' '}"
        return f"{text} {cell.median_share():7.1%}"

    return show


def short_text(cell: Cell | None, fn: bool = False) -> str:
    if cell is None:
        return "-"
    if not cell.good:
        return "error"
    short = cell.short_ms(fn)
    return ms_text(short) if short > 0 else "-"


def ms_text(ms: float) -> str:
    if ms >= 10:
        return f"{ms:.0f}"
    return "<0.001" if 0 < ms < 0.0005 else f"{ms:.3f}"


def short_phrase(ms: float) -> str:
    """How close N + 1 admissions came, in words."""
    if ms <= 0:
        return "never N + 1 within a period"
    return f"N + 1 within a period less {ms_text(ms)} ms"


def delay_phrase(delay: dict[str, float]) -> str:
    return (
        f"{ms_text(delay['median'])} ms median (p99 {ms_text(delay['p99'])}, "
        f"max {ms_text(delay['max'])})"
    )


def guarantee(late_ms: float, guard: float) -> str:
    return (
        f"the guarantee is on admissions; a call that starts {ms_text(late_ms)} ms late is "
        f"the scheduler's, the guard absorbs up to {guard:g} ms"
    )


@dataclass
class Target:
    name: str
    value: str
    passed: bool
    note: str = ""  # information beside the judged figure


def targets(
    cfg: Config, table: dict[tuple[str, str, str], Cell], concs: list[Concurrency], part: RedisPart
) -> list[Target]:
    found = []
    guard = guard_ms(cfg)
    target_cells = [table.get((TARGET_SUBJECT, "burst", c.label)) for c in concs]
    present = [c for c in target_cells if c is not None and c.good]
    complete = len(present) == len(concs)
    every = Cell([r for c in present for r in c.runs])  # all the target runs together
    tapped = every.tapped
    where = "at admission (callpolicy's clock)" if tapped else "in the function"
    if present:
        worst, over, short = every.worst_max(), every.over(), every.short_ms()
        low = min(c.median_share() for c in present)
    else:
        worst, over, low, short = 0, 0, 0.0, 0.0
    fn_note = share_note = ""
    if present and tapped:
        delay = every.delay_ms()
        fn_note = (
            f"in the function (information): most in a window {every.worst_max(fn=True)}, "
            f"{every.over(fn=True)} over N, {short_phrase(every.short_ms(fn=True))}"
        )
        if delay:
            fn_note += f"; the function ran after admission by {delay_phrase(delay)}: " + guarantee(
                delay["max"], guard
            )
        share_note = "in the function (information): lowest median share " + (
            f"{min(c.median_share(fn=True) for c in present):.2%}"
        )
    elif present:
        fn_note = "admission times could not be recorded: judged in the function"
    found.append(
        Target(
            f"callpolicy sliding-window, in-process burst: 0 windows over N {where}",
            f"{over} over N in {len(every.good)} runs; most in a window {worst} of "
            f"{cfg.limit}; {short_phrase(short)}",
            complete and over == 0,
            fn_note,
        )
    )
    found.append(
        Target(
            f"callpolicy sliding-window, in-process burst: >= {TARGET_SHARE:.1%} of N per "
            f"period {where}",
            f"lowest median share {low:.2%}",
            complete and low >= TARGET_SHARE,
            share_note,
        )
    )
    shared = part.shared
    fn_acc = shared.accuracy if shared is not None and not shared.errors else None
    server = shared.server_accuracy if shared is not None and fn_acc is not None else None
    acc = server or fn_acc
    where = "at admission (the server's TIME)" if server else "in the function"
    fn_note = share_note = ""
    if shared is not None and server is not None and fn_acc is not None:
        delay = shared.client_delay_ms
        fn_note = (
            f"in the function (time.time(); information): most in a window "
            f"{fn_acc.max_window}, {fn_acc.over} over N, {short_phrase(fn_acc.short_ms)}; "
            f"the function ran after the server admitted it by {delay_phrase(delay)}: "
            + guarantee(delay["max"], guard)
        )
        share_note = f"in the function (information): share {fn_acc.share:.2%}"
    elif fn_acc is not None:
        fn_note = "the server's clock of admission could not be read: judged in the function"
    n = cfg.redis_processes
    found.append(
        Target(
            f"Redis, {n} processes: 0 windows over N {where}",
            f"{acc.over} over N; most in a window {acc.max_window} of {cfg.limit}; "
            f"{short_phrase(acc.short_ms)}"
            if acc
            else "not measured",
            acc is not None and acc.over == 0,
            fn_note,
        )
    )
    found.append(
        Target(
            f"Redis, {n} processes: >= {REDIS_TARGET_SHARE:.0%} of N per period {where}",
            f"share {acc.share:.2%}" if acc else "not measured",
            acc is not None and acc.share >= REDIS_TARGET_SHARE,
            share_note,
        )
    )
    lat = part.latency
    found.append(
        Target(
            f"Redis admission latency within {LATENCY_TARGET:g}x PING (medians)",
            f"x{lat.ratio:.2f}" if lat else "not measured",
            lat is not None and lat.ratio <= LATENCY_TARGET,
        )
    )
    return found


def print_tables(
    cfg: Config,
    subjects_: list[Subject],
    concs: list[Concurrency],
    table: dict[tuple[str, str, str], Cell],
) -> None:
    guard = guard_ms(cfg)
    show = accuracy_text(cfg.limit)
    for workload, title in WORKLOADS.items():
        print_matrix(
            title, subject_rows(subjects_, cell_text(table, workload, show)), concs, width=21
        )

    def short_pair(subject: str, conc: str) -> str:
        burst = table.get((subject, "burst", conc))
        hammer = table.get((subject, "hammer", conc))
        text = f"{short_text(burst)} / {short_text(hammer)}"
        if any(c is not None and c.tapped for c in (burst, hammer)):
            text += f" (fn {short_text(burst, fn=True)} / {short_text(hammer, fn=True)})"
        return text

    print_matrix(
        "N + 1 admissions within one period: by how much less than a period (ms), "
        "burst / hammer ('-': never; callpolicy: at admission, then in the function)",
        subject_rows(subjects_, short_pair),
        concs,
        width=26,
    )

    def delay_text(cell: Cell) -> str:
        delay = cell.delay_ms()
        if not delay:
            return "-"
        return f"{ms_text(delay['median'])} / {ms_text(delay['p99'])} / {ms_text(delay['max'])}"

    tapped_rows: list[Row] = []
    for subject in subjects_:
        for workload in WORKLOADS:
            text = cell_text(table, workload, delay_text)
            if any(
                cell.tapped
                for (s, w, _), cell in table.items()
                if (s, w) == (subject.key, workload)
            ):
                tapped_rows.append(
                    (f"{subject.label}, {workload}", partial_text(text, subject.key))
                )
    if tapped_rows:
        late = max(
            (cell.delay_ms()["max"] for cell in table.values() if cell.tapped and cell.delay_ms()),
            default=0.0,
        )
        print_matrix(
            "callpolicy: from admission to the function running, ms: median / p99 / max",
            tapped_rows,
            concs,
            width=24,
        )
        print(f"  {guarantee(late, guard).capitalize()} (sliding-window only).")
    print_matrix(
        "hammer: calls tried per second (admitted + refused), thousands",
        subject_rows(
            subjects_, cell_text(table, "hammer", lambda cell: f"{cell.tries_per_s / 1000:.1f}k")
        ),
        concs,
    )


def print_redis(cfg: Config, part: RedisPart) -> None:
    guard = guard_ms(cfg)
    print()
    print(f"Redis {part.version} on 127.0.0.1")
    if part.error:
        print(f"  error: {part.error}")
    shared = part.shared
    if shared is not None and shared.accuracy is not None:
        acc = shared.accuracy
        print(
            f"  {shared.processes} processes (spawn), one sliding-window quota, blocking burst "
            f"for {shared.seconds:g} s; {shared.round_trips_per_admission:.2f} script round "
            "trips per admission"
        )
        server = shared.server_accuracy
        if server is not None:
            print(
                f"    at admission (the server's TIME): admitted {server.admitted}; most in any "
                f"{cfg.period:g} s window {server.max_window} of {cfg.limit}, {server.over} "
                f"windows over N ({short_phrase(server.short_ms)}); share {server.share:.2%}"
            )
        print(
            f"    in the function (time.time(){'; information' if server else ''}): admitted "
            f"{acc.admitted} ({acc.recorded} with those while stopping); most in any "
            f"{cfg.period:g} s window {acc.max_window} of {cfg.limit}, {acc.over} windows "
            f"over N ({short_phrase(acc.short_ms)}); share {acc.share:.2%}"
        )
        delay = shared.client_delay_ms
        if server is not None and delay:
            print(
                f"    the function ran after the server admitted it by {delay_phrase(delay)}: "
                f"{guarantee(delay['max'], guard)}"
            )
        elif server is None:
            print("    (the server's clock of admission could not be read)")
        for error in shared.errors:
            print(f"    error: {error}")
    lat = part.latency
    if lat is not None:
        print(f"  one call, microseconds ({lat.samples} samples each, interleaved)")
        print(f"    {'':<34}{'median':>9}{'p99':>9}")
        print(f"    {'redis-py PING':<34}{lat.ping_us['median']:9.1f}{lat.ping_us['p99']:9.1f}")
        print(
            f"    {'callpolicy admission (no-op call)':<34}{lat.callpolicy_us['median']:9.1f}"
            f"{lat.callpolicy_us['p99']:9.1f}   x{lat.ratio:.2f} PING (median), "
            f"x{lat.callpolicy_us['p99'] / lat.ping_us['p99']:.2f} (p99)"
        )


def report(
    cfg: Config,
    subjects_: list[Subject],
    concs: list[Concurrency],
    runs: list[Run],
    part: RedisPart,
    seconds: float,
) -> list[Target]:
    table = cells(runs)
    guard = guard_ms(cfg)
    print()
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.machine()}, {multiprocessing.cpu_count()} CPUs "
        "(shared, noisy machine); " + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    print(
        f"Quota N = {cfg.limit} per {cfg.period:g} s; each run {cfg.periods:g} periods "
        f"({cfg.duration:g} s) on a fresh limiter. Cells: the most admissions in any "
        f"[t, t + {cfg.period:g} s) ('!' above N), then the share of N per period admitted "
        "(admitted / (run length / period x N))."
    )
    print(
        "callpolicy rows count admissions on callpolicy's own clock, the instant its counter "
        "admitted each call (its guarantee is on admissions), and '(M fn)' the same count "
        "taken when the function ran (time.monotonic() inside it), which adds the scheduler's "
        "delay between admission and the call running. The other libraries expose no "
        "admission instant: they can only be measured in the function."
    )
    extra = f", with --guard-ms {cfg.guard_ms}" if cfg.guard_ms else ""
    print(
        f"callpolicy's sliding windows count each call {guard:g} ms past its period (its "
        f"guard{extra}; the quotas are declared as {cfg.limit}/{cfg.period_ms + cfg.guard_ms}ms); "
        f"every limiter is judged on {cfg.period_ms} ms windows."
    )
    print(
        f"{TARGET_SUBJECT}, burst: {cfg.repeats} runs per cell (worst window, median share); "
        "other cells: one run. '-': not supported by the library."
    )
    print_tables(cfg, subjects_, concs, table)
    errors = [r for r in runs if r.error]
    for run in errors:
        print(f"  error: {run.subject} {run.workload} {run.concurrency}: {run.error}")

    print_redis(cfg, part)

    found = targets(cfg, table, concs, part)
    print()
    print("Targets:")
    for target in found:
        print(f"  [{'PASS' if target.passed else 'MISS'}] {target.name}: {target.value}")
        if target.note:
            print(f"         {target.note}")
    print(f"Total {seconds:.0f} s.")
    return found


def to_json(
    cfg: Config, runs: list[Run], part: RedisPart, found: list[Target], seconds: float
) -> dict[str, object]:
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "cpus": multiprocessing.cpu_count(),
        "versions": versions(),
        "config": asdict(cfg),
        "callpolicy_guard_ms": guard_ms(cfg),
        "runs": [asdict(run) for run in runs],
        "redis": asdict(part),
        "targets": [asdict(t) for t in found],
        "seconds": seconds,
    }


# -- main -----------------------------------------------------------------------------------
def configure(argv: list[str] | None) -> tuple[Config, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (CI smoke test)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    parser.add_argument("--limit", type=int, help="N calls per period (default 50; quick 20)")
    parser.add_argument("--period-ms", type=int, help="period in ms (default 500; quick 100)")
    parser.add_argument("--periods", type=float, help="run length in periods (default 4; quick 2)")
    parser.add_argument("--repeats", type=int, help="runs of the target cells (default 3; quick 1)")
    parser.add_argument("--tasks", type=int, help="asyncio tasks (default 500; quick 100)")
    parser.add_argument("--processes", type=int, default=8, help="Redis processes (default 8)")
    parser.add_argument("--redis-seconds", type=float, help="Redis run (default 4; quick 1)")
    parser.add_argument(
        "--guard-ms",
        type=int,
        default=0,
        help="declare callpolicy's quotas with a period this much longer, as docs/policies.md "
        "advises against arrival jitter; windows and shares are still judged on the period",
    )
    parser.add_argument(
        "--only",
        metavar="KEYS",
        help="comma-separated limiters to run, e.g. callpolicy-sliding-window",
    )
    args = parser.parse_args(argv)
    for name in ("limit", "period_ms", "periods", "repeats", "tasks", "redis_seconds"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.processes < 1 or args.guard_ms < 0:
        parser.error("--processes must be >= 1 and --guard-ms >= 0")
    quick: bool = args.quick
    period_ms: int = args.period_ms or (100 if quick else 500)
    cfg = Config(
        limit=args.limit or (20 if quick else 50),
        period=period_ms / 1000,
        periods=args.periods or (2.0 if quick else 4.0),
        threads=(1, 4, 16),
        tasks=args.tasks or (100 if quick else 500),
        repeats=args.repeats or (1 if quick else 3),
        redis_processes=args.processes,
        redis_seconds=args.redis_seconds or (1.0 if quick else 4.0),
        latency_rounds=6 if quick else 20,
        latency_batch=100 if quick else 250,
        quick=quick,
        guard_ms=args.guard_ms,
        only=tuple(args.only.split(",")) if args.only else (),
    )
    return cfg, args.json


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwind: the finally blocks stop the server and workers


def main(argv: list[str] | None = None) -> None:
    cfg, json_path = configure(argv)
    signal.signal(signal.SIGTERM, _terminated)
    began = time.monotonic()
    concs = [Concurrency("threads", n) for n in cfg.threads] + [Concurrency("tasks", cfg.tasks)]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="quota-accuracy-") as tmp:
        root = Path(tmp)
        every = subjects(cfg, root)
        unknown = sorted(set(cfg.only) - {s.key for s in every})
        if unknown:
            known = ", ".join(s.key for s in every)
            raise SystemExit(f"unknown limiter {', '.join(unknown)} (known: {known})")
        subjects_ = [s for s in every if not cfg.only or s.key in cfg.only]
        for subject in subjects_:
            print(f"  {subject.label} ...", flush=True)
            for workload in WORKLOADS:
                for conc in concs:
                    repeats = (
                        cfg.repeats if subject.key == TARGET_SUBJECT and workload == "burst" else 1
                    )
                    for repeat in range(repeats):
                        run = run_one(subject, workload, conc, cfg, repeat)
                        if run is not None:
                            runs.append(run)
        part = run_redis(cfg, root)
    seconds = time.monotonic() - began
    found = report(cfg, subjects_, concs, runs, part, seconds)
    if json_path is not None:
        data = to_json(cfg, runs, part, found, seconds)
        json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"Results written to {json_path}")


if __name__ == "__main__":
    main()
