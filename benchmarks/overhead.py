"""Per-call overhead of callpolicy, next to tenacity, stamina, backoff and ratelimit.

    python benchmarks/overhead.py            # full run (about 20 seconds)
    python benchmarks/overhead.py --quick    # a few seconds, for CI smoke tests
    python benchmarks/overhead.py --json results.json

Four sections, each comparing the same trivial function under every library:

  (a) success path, sync   - the call succeeds at once: the price of being decorated
  (b) success path, async  - the same for coroutines, all awaited inside one event loop
  (c) retry round, sync    - the function fails once with ConnectionError, then succeeds
  (d) retry round, async   - the same for coroutines

No library sleeps for real: callpolicy runs under `callpolicy.fake_time()` with
`wait.strategy = "none"`, tenacity uses `wait_none()`, stamina runs in test mode, backoff uses
a constant wait of 0, and `time.sleep` is a no-op during the sync retry rounds. The async
retry rounds all yield to the event loop once per retry (`asyncio.sleep(0)`), as each library
does for a zero-length wait.

Samples are interleaved (every case once per round, in a rotating order) so drifting machine
load hits every case alike; each sample is many calls, and the table shows the median
per-call cost of the samples. Ratios compare medians taken in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from unittest import mock

import backoff
import prometheus_client
import stamina
import stamina.instrumentation
import tenacity
from ratelimit import limits

import callpolicy

POLICIES = Path(__file__).resolve().parent / "policies"

SyncFn = Callable[[], object]
AsyncFn = Callable[[], Awaitable[object]]
Measure = Callable[[int], Awaitable[int]]  # n calls -> nanoseconds they took
Context = Callable[[], AbstractContextManager[object]]

BASELINE = "baseline"
CALLPOLICY = "callpolicy_quota"
CALLPOLICY_PLAIN = "callpolicy_plain"
CALLPOLICY_GUARDED = "callpolicy_guarded"
CALLPOLICY_SCRAPED = "callpolicy_scraped"
CALLPOLICY_TRACED = "callpolicy_traced"
TENACITY = "tenacity"


# -- the functions measured ---------------------------------------------------------------
def target() -> int:
    return 1


async def atarget() -> int:
    return 1


def make_flaky() -> SyncFn:
    """A function failing every other call: each outer call is exactly one retry round."""
    fails_next = True

    def flaky() -> int:
        nonlocal fails_next
        if fails_next:
            fails_next = False
            raise ConnectionError("connection refused")
        fails_next = True
        return 1

    return flaky


def make_aflaky() -> AsyncFn:
    fails_next = True

    async def aflaky() -> int:
        nonlocal fails_next
        if fails_next:
            fails_next = False
            raise ConnectionError("connection refused")
        fails_next = True
        return 1

    return aflaky


def by_hand(fn: SyncFn) -> SyncFn:
    """The reference for a retry round: a hand-written loop, no library."""

    def call() -> object:
        for attempt in range(3):
            try:
                return fn()
            except ConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    return call


def aby_hand(fn: AsyncFn) -> AsyncFn:
    async def call() -> object:
        for attempt in range(3):
            try:
                return await fn()
            except ConnectionError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0)  # as every library does for a zero-length wait
        raise AssertionError("unreachable")

    return call


# -- how the libraries are set up -----------------------------------------------------------
def with_tenacity(fn: Any) -> Any:
    return tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(fn)


def with_stamina(fn: Any) -> Any:
    return stamina.retry(on=ConnectionError, attempts=3)(fn)


def with_backoff(fn: Any) -> Any:
    return backoff.on_exception(backoff.constant, ConnectionError, max_tries=3, interval=0)(fn)


def with_ratelimit(fn: Any) -> Any:
    # 10**9 calls per second: never reached, so ratelimit only counts.
    return limits(calls=10**9, period=1)(fn)


def _no_sleep(seconds: float) -> None:
    return None


@contextmanager
def instant_sync_sleep() -> Iterator[None]:
    """`time.sleep` returns at once (tenacity's, stamina's and backoff's sync sleeps use it)."""
    with mock.patch.object(time, "sleep", _no_sleep):
        yield


@contextmanager
def stamina_test_mode() -> Iterator[None]:
    """No backoff, three attempts as declared (test mode alone would allow one)."""
    with stamina.set_testing(True, attempts=3):
        yield


@contextmanager
def sync_retry_context(*contexts: Context) -> Iterator[None]:
    with ExitStack() as stack:
        stack.enter_context(instant_sync_sleep())
        for context in contexts:
            stack.enter_context(context())
        yield


# -- measuring ------------------------------------------------------------------------------
def time_sync(fn: SyncFn, n: int) -> int:
    start = time.perf_counter_ns()
    for _ in itertools.repeat(None, n):
        fn()
    return time.perf_counter_ns() - start


async def time_async(fn: AsyncFn, n: int) -> int:
    start = time.perf_counter_ns()
    for _ in itertools.repeat(None, n):
        await fn()
    return time.perf_counter_ns() - start


def sync_measure(fn: SyncFn, context: Context = nullcontext) -> Measure:
    async def measure(n: int) -> int:
        with context():
            return time_sync(fn, n)

    return measure


def async_measure(fn: AsyncFn, context: Context = nullcontext) -> Measure:
    async def measure(n: int) -> int:
        with context():
            return await time_async(fn, n)

    return measure


@dataclass
class Case:
    key: str
    label: str
    measure: Measure
    calls: int = 0  # calls per sample, set by calibration
    samples_us: list[float] = field(default_factory=list)  # per-call cost of each sample

    @property
    def median(self) -> float:
        return statistics.median(self.samples_us)


@dataclass
class Section:
    key: str
    title: str
    cases: list[Case]

    def case(self, key: str) -> Case:
        return next(c for c in self.cases if c.key == key)

    def ratio(self, key: str, to: str = TENACITY) -> float:
        return self.case(key).median / self.case(to).median


async def calibrate(case: Case, sample_ns: int) -> None:
    """Find how many calls make one sample last about `sample_ns` (doubles as warm-up)."""
    n = 8
    while True:
        gc.collect()
        elapsed = await case.measure(n)
        if elapsed >= sample_ns // 4 or n >= 10_000_000:
            break
        n *= 2
    case.calls = max(1, round(n * sample_ns / max(elapsed, 1)))


async def run_section(section: Section, samples: int, sample_ns: int) -> None:
    for case in section.cases:
        await calibrate(case, sample_ns)
    for round_no in range(samples):
        shift = round_no % len(section.cases)
        for case in section.cases[shift:] + section.cases[:shift]:
            gc.collect()
            elapsed = await case.measure(case.calls)
            case.samples_us.append(elapsed / case.calls / 1000)


async def check(case: Case) -> None:
    """One call must not raise: a peer that does not retry fails here, not in the table."""
    try:
        ok = await case.measure(1) >= 0
    except Exception as exc:
        raise SystemExit(f"benchmark case {case.label!r} failed: {exc!r}") from exc
    assert ok


# -- the sections ---------------------------------------------------------------------------
@contextmanager
def prometheus_registered(registry: callpolicy.Registry) -> Iterator[None]:
    """callpolicy's collector registered in a Prometheus registry, scraped once: it reads
    the statistics at scrape time, so the calls measured should not notice it."""
    prom = prometheus_client.CollectorRegistry()
    prom.register(callpolicy.prometheus_collector(registry))
    prometheus_client.generate_latest(prom)
    yield
    prometheus_client.generate_latest(prom)


@contextmanager
def traced() -> Iterator[None]:
    """A hook of call ends registered: every call is traced (an id, attempt events)."""
    remove = callpolicy.add_hook(lambda event: None, ["call_end"])
    try:
        yield
    finally:
        remove()


def build_sections(registry: callpolicy.Registry) -> list[Section]:
    quota = registry.policy("bench.quota")
    plain = registry.policy("bench.plain")
    guarded = registry.policy("bench.guarded")

    def scraped() -> AbstractContextManager[None]:
        return prometheus_registered(registry)

    sync_success = Section(
        "sync_success",
        "(a) success path, sync",
        [
            Case(BASELINE, "undecorated function", sync_measure(target)),
            Case(CALLPOLICY, "callpolicy, 1 quota", sync_measure(quota(target))),
            Case(CALLPOLICY_PLAIN, "callpolicy, no quota", sync_measure(plain(target))),
            Case(
                CALLPOLICY_GUARDED,
                "callpolicy, breaker+budget+quota",
                sync_measure(guarded(target)),
            ),
            Case(
                CALLPOLICY_SCRAPED,
                "  + Prometheus collector",
                sync_measure(guarded(target), scraped),
            ),
            Case(CALLPOLICY_TRACED, "  + a call_end hook", sync_measure(guarded(target), traced)),
            Case(TENACITY, "tenacity @retry", sync_measure(with_tenacity(target))),
            Case("stamina", "stamina @retry", sync_measure(with_stamina(target))),
            Case("backoff", "backoff @on_exception", sync_measure(with_backoff(target))),
            Case("ratelimit", "ratelimit @limits", sync_measure(with_ratelimit(target))),
        ],
    )
    async_success = Section(
        "async_success",
        "(b) success path, async",
        [
            Case(BASELINE, "undecorated coroutine", async_measure(atarget)),
            Case(CALLPOLICY, "callpolicy, 1 quota", async_measure(quota(atarget))),
            Case(CALLPOLICY_PLAIN, "callpolicy, no quota", async_measure(plain(atarget))),
            Case(
                CALLPOLICY_GUARDED,
                "callpolicy, breaker+budget+quota",
                async_measure(guarded(atarget)),
            ),
            Case(
                CALLPOLICY_SCRAPED,
                "  + Prometheus collector",
                async_measure(guarded(atarget), scraped),
            ),
            Case(CALLPOLICY_TRACED, "  + a call_end hook", async_measure(guarded(atarget), traced)),
            Case(TENACITY, "tenacity @retry (async)", async_measure(with_tenacity(atarget))),
            Case("stamina", "stamina @retry", async_measure(with_stamina(atarget))),
            Case("backoff", "backoff @on_exception", async_measure(with_backoff(atarget))),
        ],
    )

    def retry_case(key: str, label: str, fn: SyncFn, *contexts: Context) -> Case:
        return Case(key, label, sync_measure(fn, lambda: sync_retry_context(*contexts)))

    sync_retry = Section(
        "sync_retry",
        "(c) one retry round, sync (fail once, then succeed)",
        [
            retry_case(BASELINE, "hand-written try/except loop", by_hand(make_flaky())),
            retry_case(
                CALLPOLICY, "callpolicy, 1 quota", quota(make_flaky()), callpolicy.fake_time
            ),
            retry_case(
                CALLPOLICY_PLAIN, "callpolicy, no quota", plain(make_flaky()), callpolicy.fake_time
            ),
            retry_case(TENACITY, "tenacity @retry", with_tenacity(make_flaky())),
            retry_case("stamina", "stamina @retry", with_stamina(make_flaky()), stamina_test_mode),
            retry_case("backoff", "backoff @on_exception", with_backoff(make_flaky())),
        ],
    )
    async_retry = Section(
        "async_retry",
        "(d) one retry round, async (fail once, then succeed)",
        [
            Case(BASELINE, "hand-written try/except loop", async_measure(aby_hand(make_aflaky()))),
            Case(
                CALLPOLICY,
                "callpolicy, 1 quota",
                async_measure(quota(make_aflaky()), callpolicy.fake_time),
            ),
            Case(
                CALLPOLICY_PLAIN,
                "callpolicy, no quota",
                async_measure(plain(make_aflaky()), callpolicy.fake_time),
            ),
            Case(TENACITY, "tenacity @retry (async)", async_measure(with_tenacity(make_aflaky()))),
            Case(
                "stamina",
                "stamina @retry",
                async_measure(with_stamina(make_aflaky()), stamina_test_mode),
            ),
            Case("backoff", "backoff @on_exception", async_measure(with_backoff(make_aflaky()))),
        ],
    )
    return [sync_success, async_success, sync_retry, async_retry]


# -- reporting ------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    section: str
    ratio: float
    limit: float

    @property
    def passed(self) -> bool:
        return self.ratio <= self.limit


def targets(sections: dict[str, Section]) -> list[Target]:
    found = []
    for key, kind in (("sync_success", "sync"), ("async_success", "async")):
        found.append(
            Target(
                f"success path with one quota <= 1/10 of bare tenacity ({kind})",
                key,
                sections[key].ratio(CALLPOLICY),
                0.1,
            )
        )
        for case, label in ((CALLPOLICY_GUARDED, ""), (CALLPOLICY_SCRAPED, ", Prometheus")):
            found.append(
                Target(
                    f"success path with breaker, budget, quota{label} <= 1/8 of tenacity ({kind})",
                    key,
                    sections[key].ratio(case),
                    0.125,
                )
            )
    for key, kind in (("sync_retry", "sync"), ("async_retry", "async")):
        found.append(
            Target(
                f"retry round no dearer than tenacity ({kind}, callpolicy with 1 quota)",
                key,
                sections[key].ratio(CALLPOLICY),
                1.0,
            )
        )
    return found


def versions() -> dict[str, str]:
    found = {}
    for package in ("callpolicy", "tenacity", "stamina", "backoff", "ratelimit"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "?"
    return found


def print_section(section: Section) -> None:
    base = section.case(BASELINE).median
    tenacity_median = section.case(TENACITY).median
    print()
    print(section.title)
    header = f"  {'':<30}{'median':>9}{'min':>9}{'max':>9}{'- base':>9}{'x tenacity':>12}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for case in section.cases:
        net = "" if case.key == BASELINE else f"{case.median - base:9.2f}"
        print(
            f"  {case.label:<30}{case.median:9.2f}{min(case.samples_us):9.2f}"
            f"{max(case.samples_us):9.2f}{net:>9}{case.median / tenacity_median:12.3f}"
        )


def report(sections: list[Section], samples: int, sample_ms: float, quota_sleeps: int) -> None:
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) "
        f"on {platform.system()} {platform.machine()}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    print(
        f"Per-call cost in microseconds: medians of {samples} interleaved samples of "
        f"~{sample_ms:g} ms each, on a shared machine (expect some run-to-run noise)."
    )
    for section in sections:
        print_section(section)
    print()
    print("Targets (ratio = callpolicy median / tenacity median, same run):")
    for found in targets({s.key: s for s in sections}):
        status = "PASS" if found.passed else "MISS"
        print(f"  [{status}] {found.name}: {found.ratio:.3f} (limit {found.limit:g})")
    if quota_sleeps:
        print(f"WARNING: the 'never throttling' quota throttled {quota_sleeps} times")


def to_json(
    sections: list[Section], samples: int, sample_ms: float, quick: bool
) -> dict[str, object]:
    return {
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions(),
        "mode": "quick" if quick else "full",
        "samples": samples,
        "sample_ms": sample_ms,
        "unit": "microseconds per call (median of samples)",
        "sections": {
            section.key: {
                "title": section.title,
                "cases": {
                    case.key: {
                        "label": case.label,
                        "median_us": case.median,
                        "min_us": min(case.samples_us),
                        "max_us": max(case.samples_us),
                        "calls_per_sample": case.calls,
                        "samples_us": case.samples_us,
                        "ratio_to_tenacity": section.ratio(case.key),
                    }
                    for case in section.cases
                },
            }
            for section in sections
        },
        "targets": [
            {"name": t.name, "ratio": t.ratio, "limit": t.limit, "passed": t.passed}
            for t in targets({s.key: s for s in sections})
        ],
    }


# -- main -----------------------------------------------------------------------------------
async def run(sections: list[Section], samples: int, sample_ns: int) -> int:
    """Check every case, then measure; returns how often the quota throttled (should be 0)."""
    for section in sections:
        for case in section.cases:
            await check(case)
    quota_sleeps = 0

    def count_quota_sleeps(event: callpolicy.SleepEvent) -> None:
        nonlocal quota_sleeps
        quota_sleeps += event.source == "quota"

    for section in sections:
        # Only on the success path: in a retry round a hook would add to callpolicy's cost.
        hooked = section.key.endswith("success")
        remove_hook = callpolicy.add_sleep_hook(count_quota_sleeps) if hooked else None
        try:
            await run_section(section, samples, sample_ns)
        finally:
            if remove_hook is not None:
                remove_hook()
    return quota_sleeps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (CI smoke test)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    parser.add_argument("--samples", type=int, help="samples per case (default 15, quick 5)")
    parser.add_argument(
        "--sample-ms", type=float, help="length of one sample in ms (default 40, quick 4)"
    )
    args = parser.parse_args(argv)
    samples: int = args.samples or (5 if args.quick else 15)
    sample_ms: float = args.sample_ms or (4.0 if args.quick else 40.0)

    # stamina logs every retry at WARNING by default; the others log nothing unless configured.
    stamina.instrumentation.set_on_retry_hooks([])
    sections = build_sections(callpolicy.Registry(POLICIES))
    quota_sleeps = asyncio.run(run(sections, samples, round(sample_ms * 1_000_000)))
    report(sections, samples, sample_ms, quota_sleeps)
    if args.json is not None:
        data = to_json(sections, samples, sample_ms, args.quick)
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"Results written to {args.json}")


if __name__ == "__main__":
    main()
