"""Look up 300 users from asyncio: at most 20 in flight, paced, retrying only what may succeed.

The batch-calls seed (a Chinese guide to batch API calls) builds three things by hand: an
`asyncio.Semaphore(20)` for concurrency, tenacity for retries of network errors, 5xx and
429 only (never 400, 401 or 404), and a token bucket for the rate; then it asks for
failure-rate metrics. Here the three live in one policy, examples/policies/batch.toml, and
the code only says `@policy("batch.user")`.

The mock API (examples/mock_api.py) takes 50 ms per lookup, allows 200 requests in any
second, answers 503 to 10% of requests, 400 to malformed ids and 404 to missing users.
(Network errors would be retried like the 503s; the mock does not make any.)

    python examples/batch_calls.py                 # 300 calls
    python examples/batch_calls.py --calls 100 --verbose
    python examples/batch_calls.py --compare       # the seed's comparison: see batch_compare.py

The last few ids of the batch are urgent: they run with `callpolicy.call_options(priority=10)`,
so although they are queued last, they overtake the calls waiting for a slot: the summary
shows the place of each in the order of admission (the order attempts enter the decorated
function, which is what the policy decides; the order calls end adds the server's time).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import batch_compare
import requests
from mock_api import MockAPI, Reply, Request, Stats, log_sleeps

import callpolicy
from callpolicy import SleepEvent, policy

POLICIES = Path(__file__).resolve().parent / "policies"
SLOTS = 20  # [quotas.slots] concurrency in batch.toml
BUCKET, REFILL = 100, 100 / 1.05  # [quotas.rate]: 100 tokens, 100 per 1.05 s
SERVER_QUOTA = (200, 1.0)  # the mock API allows 200 requests in any 1 s
ERROR_RATE = 0.10  # the share of requests the mock answers with 503
LATENCY = 0.05  # seconds the mock takes per lookup
URGENT = 5  # the last 5 ids of the batch are urgent
ALERT_RATE = 0.10  # the seed's alert: more than 10% of the calls failed


# -- the mock users API ------------------------------------------------------------------------
def malformed(user_id: int) -> bool:
    return user_id % 50 == 7  # 7, 57, 107...: answered 400


def missing(user_id: int) -> bool:
    return user_id % 100 == 42  # 42, 142, 242: answered 404


class UsersAPI:
    """The route behind the mock's quota and 503s: counts what reached it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests the server handled at once
        self.client_errors: Counter[str] = Counter()  # 4xx answers, by user id

    def user(self, request: Request) -> object:
        user_id = request.params["id"]
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(LATENCY)  # the lookup's work
            if malformed(int(user_id)):
                reply = Reply(400, {"error": f"malformed user id {user_id!r}"})
            elif missing(int(user_id)):
                reply = Reply(404, {"error": f"no user {user_id}"})
            else:
                return {"id": user_id, "name": f"User {user_id}"}
        finally:
            with self._lock:
                self.in_flight -= 1
        with self._lock:
            self.client_errors[user_id] += 1
        return reply


# -- the client --------------------------------------------------------------------------------
class UsersClient:
    """The client of the batch: one decorated coroutine, the policy does the rest."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._local = threading.local()
        self.in_flight = 0  # calls inside user() now: each holds one of the 20 slots
        self.max_in_flight = 0
        self.attempts: Counter[int] = Counter()  # by user id
        self.admitted: list[int] = []  # the user id of each attempt, in the order admitted

    @policy("batch.user")
    async def user(self, user_id: int) -> dict[str, Any]:
        # Only admitted attempts get here: each took a slot and a token. A coroutine, so no
        # lock is needed around the counters: the event loop runs one task at a time.
        self.attempts[user_id] += 1
        self.admitted.append(user_id)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # requests blocks, so it runs in a worker thread; the policy's waits are
            # asyncio.sleep()s and never block the loop.
            return await asyncio.to_thread(self._get, f"/users/{user_id}")
        finally:
            self.in_flight -= 1

    def _get(self, path: str) -> dict[str, Any]:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:  # one Session (and keep-alive connection) per worker thread
            session = self._local.session = requests.Session()
        response = session.get(f"{self.base_url}{path}", timeout=5)
        # HTTPError carries the response: the policy reads its status. 429 and 5xx are
        # retried; 400 and 404 are not, and propagate at once.
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


class Retries:
    """A sleep hook: counts the backoff sleeps, that is the retries, by their cause."""

    def __init__(self) -> None:
        self.causes: Counter[str] = Counter()

    def __call__(self, event: SleepEvent) -> None:
        if event.source == "backoff":  # "quota" sleeps are waits for a slot or a token
            # "HTTPError: 503 Server Error: ..." -> "HTTPError: 503"
            self.causes[" ".join(event.cause.split()[:2])] += 1


@dataclass(order=True)
class Outcome:
    admitted: int  # the place of its first attempt in the order of admission: 1, 2...
    asked: int  # how many attempts (of any call) had been admitted when this call began
    user_id: int
    urgent: bool
    result: str  # "ok", "HTTP 400", "network", "quota" (QuotaExceeded)...
    attempts: int


# -- the batch ---------------------------------------------------------------------------------
async def run_batch(client: UsersClient, ids: list[int], urgent: set[int]) -> list[Outcome]:
    # asyncio.to_thread runs in the loop's default thread pool: min(32, CPUs + 4) threads,
    # 6 on a 2-core machine. Fewer threads than slots would cap the batch below 20 in flight
    # whatever the policy says, so give the pool more threads than the policy has slots.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=SLOTS + 4))

    async def one(user_id: int) -> Outcome:
        result = "ok"
        asked = len(client.admitted)
        # Urgent calls go before every call of priority 0 waiting for the same quota. The
        # option holds for each attempt of the call, retries included.
        with callpolicy.call_options(priority=10 if user_id in urgent else 0):
            try:
                await client.user(user_id)
            except requests.HTTPError as exc:  # a status not retried, or retries ran out
                result = f"HTTP {exc.response.status_code}"
            except requests.RequestException:  # network errors, after their retries
                result = "network"
            except callpolicy.QuotaExceeded:  # waited max_wait for a slot or a token
                result = "quota"
        # 0 when never admitted (a QuotaExceeded before its first attempt)
        admitted = client.admitted.index(user_id) + 1 if client.attempts[user_id] else 0
        return Outcome(
            admitted, asked, user_id, user_id in urgent, result, client.attempts[user_id]
        )

    # All 300 start at once; the policy lets 20 through and queues the others in order.
    return await asyncio.gather(*(one(user_id) for user_id in ids))


def busiest_window(arrivals: list[float], period: float) -> int:
    """The most arrivals in any window (t - period, t], as the mock API counts them."""
    most = first = 0
    for last, at in enumerate(arrivals):
        while arrivals[first] <= at - period:
            first += 1
        most = max(most, last - first + 1)
    return most


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="how many lookups (300)")
    parser.add_argument("--verbose", action="store_true", help="log every sleep")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="the seed's comparison instead (examples/batch_compare.py): 1,000 calls "
        "through an outage, by a serial loop, unprotected threads and callpolicy",
    )
    parser.add_argument("--outage", type=float, default=20.0, help="--compare: seconds down")
    parser.add_argument("--plot", metavar="PNG", help="--compare: plot to this file")
    args = parser.parse_args(argv)
    if args.compare:
        calls = args.calls if "--calls" in (argv or sys.argv) else 1000
        return batch_compare.compare(calls, args.outage, args.plot)
    if args.calls < URGENT:
        parser.error(f"--calls must be at least {URGENT}")

    log_sleeps(quiet=not args.verbose)
    callpolicy.load(POLICIES / "batch.toml")  # this example's file only
    retries = Retries()
    remove_hook = callpolicy.add_sleep_hook(retries)

    ids = list(range(args.calls))
    urgent = set(ids[-URGENT:])  # queued last, on purpose
    users = UsersAPI()
    api = MockAPI(
        quota=SERVER_QUOTA, error_rate=ERROR_RATE, seed=2, routes={"GET /users/<id>": users.user}
    )
    with api:
        client = UsersClient(api.url)
        started = time.monotonic()
        outcomes = asyncio.run(run_batch(client, ids, urgent))
        elapsed = time.monotonic() - started
    remove_hook()
    stats = api.stats

    return 0 if report(args.calls, outcomes, client, users, stats, retries, elapsed) else 1


def report(
    calls: int,
    outcomes: list[Outcome],
    client: UsersClient,
    users: UsersAPI,
    stats: Stats,
    retries: Retries,
    elapsed: float,
) -> bool:
    """Print the metrics of the batch; True when it went as the policy promises."""
    results = Counter(o.result for o in outcomes)
    succeeded = results.pop("ok", 0)
    failed = sum(results.values())
    failure_rate = failed / len(outcomes)
    bad_ids = sum(1 for o in outcomes if malformed(o.user_id) or missing(o.user_id))
    client_errors = sum(users.client_errors.values())
    asked_again = sum(n - 1 for n in users.client_errors.values())  # a 4xx id asked twice
    attempt_failures = stats.throttled + stats.unavailable + client_errors
    limit, period = SERVER_QUOTA
    busiest = busiest_window(sorted(stats.arrivals), period)
    urgent = sorted(o for o in outcomes if o.urgent)
    # The best the policy allows: the token bucket's 100 requests at once, then 95 a second
    # (retries take tokens too, so count every request), or 20 slots of 50 ms each.
    best = max((stats.requests - BUCKET) / REFILL, stats.requests * LATENCY / SLOTS)

    print(
        f"\nsummary ({calls} calls, {SLOTS} slots, token bucket {BUCKET}/1.05s; "
        f"server allows {limit}/{period:g}s and answers 503 to {ERROR_RATE:.0%})"
    )
    print(f"  {'succeeded':<20}{succeeded}")
    by_result = ", ".join(f"{name} x{n}" for name, n in sorted(results.items())) or "none"
    print(f"  {'failed':<20}{failed}: {by_result}")
    alert = f"  ALERT: above {ALERT_RATE:.0%}" if failure_rate > ALERT_RATE else ""
    print(f"  {'failure rate':<20}{failure_rate:.1%} of calls ({bad_ids} bad ids){alert}")
    print(
        f"  {'requests sent':<20}{stats.requests}, {attempt_failures} failed "
        f"({attempt_failures / max(stats.requests, 1):.1%}): HTTP 503 x{stats.unavailable}, "
        f"HTTP 429 x{stats.throttled}, 4xx x{client_errors}"
    )
    by_cause = ", ".join(f"{cause} x{n}" for cause, n in sorted(retries.causes.items()))
    print(f"  {'retries':<20}{sum(retries.causes.values())} ({by_cause or 'none'})")
    once = " (each 400 and 404 id was asked once)" if asked_again == 0 else ""
    print(f"  {'4xx retried':<20}{asked_again}{once}")
    print(f"  {'max in flight':<20}{client.max_in_flight} (limit {SLOTS})")
    print(f"  {'server in flight':<20}{users.max_in_flight} at most")
    print(f"  {'busiest 1s window':<20}{busiest} arrivals (server limit {limit})")
    print(
        f"  {'urgent calls':<20}{len(urgent)}, queued last with priority 10, after "
        f"{', '.join(str(o.asked) for o in urgent)} admissions: admitted "
        f"{', '.join(str(o.admitted) for o in urgent)} of {len(client.admitted)}"
    )
    print(f"  {'elapsed':<20}{elapsed:.2f} s")
    print(
        f"  {'best':<20}{best:.2f} s for {stats.requests} requests: "
        f"{best / elapsed:.0%} of it reached"
    )
    return (
        succeeded == calls - bad_ids
        and asked_again == 0
        and client.max_in_flight <= SLOTS
        and stats.throttled == 0
    )


if __name__ == "__main__":
    sys.exit(main())
