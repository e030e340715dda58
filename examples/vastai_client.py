"""Search GPU offers, create instances and poll them until they run, against a mock Vast.ai API.

The Vast.ai seed hand-wrote a client with `min_delay` between requests, a loop obeying
Retry-After (else doubling the wait), a poll loop growing its interval x1.5, `sleep(1)`
between searches, and advised serving cached search results while throttled. Here every
rule lives in examples/policies/vastai.toml (delays scaled down so the demo takes seconds),
the cache included, and the client keeps only the requests:

* one request per 100 ms (the seed's min_delay, scaled) is the quota `vastai.requests`;
* a 429 waits what its Retry-After says, else 100 ms, 200 ms, 400 ms...;
* a batch search takes one search per 200 ms from the quota `vastai.search`;
* polling an instance until it runs is `retry.until`, waiting 100 ms growing x1.5;
* a dashboard refresh never waits for the quota (`call_options(blocking=False)`) and gives
  up on a long Retry-After: then the policy's fallback serves the last offers found for the
  same query (`fallback.last_good`, at most 24 s old), and `callpolicy.last_fallback()`
  tells the dashboard why and how old they are.

The mock API (examples/mock_api.py with the routes below) counts the requests of one API key
and answers 429 beyond its limits: 20 requests and 5 searches per second with `Retry-After`
(in hundredths of a second, so the demo stays fast; real servers send whole seconds), and
one instance creation per second with a bare 429 (no Retry-After): stricter than the
policy's guess for creations. Another script using the same API key makes two bursts of
searches, which this client's quotas cannot know about.

    python examples/vastai_client.py [--quiet]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from mock_api import MockAPI, Reply, Request, log_sleeps

import callpolicy
from callpolicy import SleepEvent, policy

POLICIES = Path(__file__).resolve().parent / "policies"
API_KEY = "vast-demo-key"
GPU_CONFIGS: list[dict[str, Any]] = [  # the seed's batch search, plus one
    {"gpu_name": "RTX_4090", "max_dph": 0.30},
    {"gpu_name": "A100", "max_dph": 2.00},
    {"gpu_name": "H100_SXM", "max_dph": 4.00},
    {"gpu_name": "L40S", "max_dph": 1.20},
]
OTHER_SEARCHES = 5  # the other script's bursts: as many as the server allows per second


# -- the mock Vast.ai API ----------------------------------------------------------------------
class Window:
    """At most `limit` events in any `period` seconds, counted on arrival (refused ones not)."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit, self.period = limit, period
        self.times: deque[float] = deque()

    def wait(self, now: float) -> float:
        """0 if an event may happen now, else the seconds until one may."""
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()
        return 0.0 if len(self.times) < self.limit else self.times[0] + self.period - now


@dataclass
class Instance:
    id: int
    offer: dict[str, Any]
    polls_needed: int  # the poll that finds it running
    polls: int = 0


class MockVast:
    """Offers, instances and Vast.ai's rate limits (one API key), behind MockAPI's routes."""

    ALL = (20, 1.0)  # requests per second, any route: 429 with Retry-After
    SEARCH = (5, 1.0)  # searches per second: 429 with Retry-After
    CREATE = (1, 1.0)  # instance creations per second: a bare 429

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self._random = rng
        self._lock = threading.Lock()
        self.offers: list[dict[str, Any]] = []
        for gpu, base in (("RTX_4090", 0.25), ("A100", 1.1), ("H100_SXM", 2.4), ("L40S", 0.8)):
            for _ in range(rng.randint(3, 6)):
                self.offers.append(
                    {
                        "id": rng.randint(1_000_000, 9_999_999),
                        "gpu_name": gpu,
                        "num_gpus": rng.choice([1, 1, 2, 4]),
                        "dph_total": round(base * rng.uniform(0.8, 1.6), 3),
                        "reliability": round(rng.uniform(0.95, 0.999), 3),
                    }
                )
        self.instances: dict[int, Instance] = {}
        self._windows = {"all": Window(*self.ALL), "search": Window(*self.SEARCH)}
        self._windows["create"] = Window(*self.CREATE)
        self.throttled: Counter[str] = Counter()  # 429s to the client, by route kind
        self.other_throttled = 0  # 429s to the other script
        self.arrivals: list[float] = []  # of the client's requests (not the other script's)

    def routes(self) -> dict[str, Any]:
        return {
            "GET /bundles/": self.search,
            "PUT /asks/<id>/": self.create_instance,
            "GET /instances/<id>/": self.show_instance,
        }

    def _limited(self, kind: str, other: bool = False) -> Reply | None:
        """The 429 for a request of `kind` ("search", "create", "show"), or None: admitted.
        `other`: sent by the other script (counted apart, for the summary)."""
        with self._lock:
            now = time.monotonic()
            if not other:
                self.arrivals.append(now)
            for name in ("all", kind):
                window = self._windows.get(name)
                wait = window.wait(now) if window is not None else 0.0
                if wait > 0:
                    if other:
                        self.other_throttled += 1
                    else:
                        self.throttled[kind] += 1
                    body = {"success": False, "error": "rate_limited", "msg": "slow down"}
                    if name == "create":  # this limiter says no more than 429
                        return Reply(429, body)
                    # Rounded up, as a server's whole seconds are: not a moment too early.
                    retry_after = f"{math.ceil(wait * 100) / 100:.2f}"
                    return Reply(429, body, {"Retry-After": retry_after})
            for name in ("all", kind):
                if name in self._windows:
                    self._windows[name].times.append(now)
        return None

    def search(self, request: Request) -> Reply | dict[str, Any]:
        # The other script searches everything (q={}): how the mock tells its requests apart.
        other = request.query.get("q") == "{}"
        refused = self._limited("search", other)
        if refused is not None:
            return refused
        query = json.loads(request.query.get("q", "{}"))
        gpu = query.get("gpu_name", {}).get("eq")
        dph = query.get("dph_total", {}).get("lte", float("inf"))
        found = [
            o
            for o in self.offers
            if (gpu is None or o["gpu_name"] == gpu) and o["dph_total"] <= dph
        ]
        return {"offers": sorted(found, key=lambda o: o["dph_total"])}

    def create_instance(self, request: Request) -> Reply | dict[str, Any]:
        refused = self._limited("create")
        if refused is not None:
            return refused
        offer_id = int(request.params["id"])
        offer = next((o for o in self.offers if o["id"] == offer_id), None)
        if offer is None:
            return Reply(404, {"success": False, "error": "no_such_ask"})
        with self._lock:
            instance_id = 20_000_000 + len(self.instances) + 1
            polls_needed = self._random.randint(3, 5)
            self.instances[instance_id] = Instance(instance_id, offer, polls_needed)
        return {"success": True, "new_contract": instance_id}

    def show_instance(self, request: Request) -> Reply | dict[str, Any]:
        refused = self._limited("show")
        if refused is not None:
            return refused
        with self._lock:
            instance = self.instances.get(int(request.params["id"]))
            if instance is None:
                return Reply(404, {"success": False, "error": "no_such_instance"})
            instance.polls += 1
            running = instance.polls >= instance.polls_needed
        return {
            "id": instance.id,
            "actual_status": "running" if running else "loading",
            "gpu_name": instance.offer["gpu_name"],
            "dph_total": instance.offer["dph_total"],
        }


# -- the client --------------------------------------------------------------------------------
def search_query(config: dict[str, Any]) -> dict[str, Any]:
    """Vast.ai's search filter: {"field": {"op": value}}."""
    return {
        "gpu_name": {"eq": config["gpu_name"]},
        "dph_total": {"lte": config["max_dph"]},
        "rentable": {"eq": True},
    }


class VastClient:
    """The requests themselves; when to wait, retry and give up is the policies' business.
    One requests.Session per thread, as instances are polled from a thread pool."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self._local = threading.local()
        self._sessions: list[requests.Session] = []  # every thread's, to close them all
        self.polls: Counter[int] = Counter()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.api_key}"
            self._sessions.append(session)
        response = session.request(method, f"{self.base_url}{path}", timeout=5, **kwargs)
        response.raise_for_status()  # a 429 raises HTTPError; the policy reads its status
        return response.json()

    @policy("vastai.search")
    def search(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        offers: list[dict[str, Any]] = self._request(
            "GET", "/bundles/", params={"q": json.dumps(query)}
        )["offers"]
        return offers

    @policy("vastai.refresh_offers")
    def refresh_offers(self, gpu_name: str, max_dph: float) -> list[dict[str, Any]]:
        """Its arguments are the key of the last good offers its fallback serves."""
        query = search_query({"gpu_name": gpu_name, "max_dph": max_dph})
        offers: list[dict[str, Any]] = self._request(
            "GET", "/bundles/", params={"q": json.dumps(query)}
        )["offers"]
        return offers

    @policy("vastai.create_instance")
    def create_instance(self, offer_id: int, image: str) -> int:
        body = {"client_id": "me", "image": image, "disk": 20}
        reply = self._request("PUT", f"/asks/{offer_id}/", json=body)
        instance_id: int = reply["new_contract"]
        return instance_id

    @policy("vastai.poll_instance")
    def poll_instance(self, instance_id: int) -> dict[str, Any]:
        """The instance; the policy calls again until its actual_status is final."""
        self.polls[instance_id] += 1
        info: dict[str, Any] = self._request("GET", f"/instances/{instance_id}/")
        return info

    def close(self) -> None:
        for session in self._sessions:
            session.close()


class Dashboard:
    """Offers for the dashboard: fresh when the API allows it now, else what the policy's
    fallback serves (the last offers found, at most 24 s old), said as such."""

    def __init__(self, client: VastClient) -> None:
        self.client = client
        self.fresh = 0
        self.cached: Counter[str] = Counter()  # served by the fallback, by what throttled us

    def refresh(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        gpu = config["gpu_name"]
        with callpolicy.call_options(blocking=False):  # never wait for our own quota
            offers = self.client.refresh_offers(gpu, config["max_dph"])
        used = callpolicy.last_fallback()
        if used is None:
            self.fresh += 1
            print(f"refresh {gpu}: {len(offers)} offers (fresh)")
            return offers
        error = used.error
        if isinstance(error, callpolicy.QuotaExceeded):
            kind = "quota"
            when = "later" if error.wait == float("inf") else f"in {error.wait:.2f}s"
            why = f"quota {error.quota} frees {when}"
        else:  # the 429 whose Retry-After was longer than a refresh may wait
            kind = "server"
            response = getattr(error, "response", None)
            said = "nothing" if response is None else response.headers.get("Retry-After")
            why = f"the server answered 429, Retry-After: {said}"
        self.cached[kind] += 1
        print(
            f"refresh {gpu}: served {len(offers)} cached offers, {used.age or 0.0:.1f}s old, "
            f"while throttled ({why})"
        )
        return offers


def batch_search(
    client: VastClient, configs: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """The seed's batch_search without `time.sleep(1)`: the search quota paces the calls."""
    results = {}
    for config in configs:
        offers = client.search(search_query(config))
        cheapest = f", cheapest ${offers[0]['dph_total']:.3f}/h" if offers else ""
        print(f"search {config['gpu_name']}: {len(offers)} offers{cheapest}")
        results[config["gpu_name"]] = offers
    return results


def wait_until_running(client: VastClient, instance_id: int) -> dict[str, Any]:
    started = time.monotonic()
    info = client.poll_instance(instance_id)  # RetryExhausted if still loading at the end
    took = time.monotonic() - started
    polls = client.polls[instance_id]
    print(f"instance {instance_id}: {info['actual_status']} after {polls} polls in {took:.2f} s")
    return info


def other_script_searches(base_url: str, count: int) -> None:
    """Another script using the same API key, without any policy: its searches count
    against the key's limits on the server, unknown to this client's quotas."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {API_KEY}"
        statuses = [
            session.get(f"{base_url}/bundles/", params={"q": "{}"}, timeout=5).status_code
            for _ in range(count)
        ]
    print(f"(another script on the same API key just searched {count} times: {statuses})")


class SleepCounter:
    """Sorts callpolicy's sleeps: retries (on Retry-After or backoff), polls, quota waits."""

    def __init__(self) -> None:
        self.retries = self.hinted = self.poll_waits = self.quota_waits = 0
        self.quota_seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: SleepEvent) -> None:
        with self._lock:
            if event.source == "quota":
                self.quota_waits += 1
                self.quota_seconds += event.seconds
            elif event.trigger == "result":  # polled, not running yet
                self.poll_waits += 1
            elif event.source == "backoff":
                self.retries += 1
                self.hinted += event.hint is not None


@dataclass
class Outcome:
    infos: list[dict[str, Any]]  # the instances, as their last poll found them
    elapsed: float


def run(base_url: str, client: VastClient, dashboard: Dashboard) -> Outcome:
    """The four steps of the demo against the mock API at `base_url`."""
    started = time.monotonic()
    print("1. batch search, right after another script's searches")
    other_script_searches(base_url, OTHER_SEARCHES)
    offers = batch_search(client, GPU_CONFIGS)

    print("\n2. create an instance on the cheapest offer of two GPU types")
    instance_ids = []
    for gpu in ("RTX_4090", "L40S"):
        offer = offers[gpu][0]
        instance_id = client.create_instance(offer["id"], "pytorch/pytorch:latest")
        print(f"create on offer {offer['id']} ({gpu}): instance {instance_id}")
        instance_ids.append(instance_id)

    print("\n3. poll both instances until they run (two threads, one request quota)")
    with ThreadPoolExecutor(max_workers=2) as pool:
        infos = list(pool.map(lambda i: wait_until_running(client, i), instance_ids))

    print("\n4. the dashboard opens: every GPU type, one per 250 ms (the last good offers)")
    for config in GPU_CONFIGS:
        time.sleep(0.25)  # our search quota (1 per 200 ms) has room again
        dashboard.refresh(config)
    print("   the user refreshes them all at once, never waiting for the quota")
    for config in GPU_CONFIGS:
        dashboard.refresh(config)
    print("   a second later another script searches; 0.25 s later the dashboard refreshes")
    time.sleep(1.0)  # the server's search window (5 per second) forgets our refreshes
    other_script_searches(base_url, OTHER_SEARCHES)
    time.sleep(0.25)  # our search quota (1 per 200 ms) has room again
    dashboard.refresh(GPU_CONFIGS[0])
    return Outcome(infos, time.monotonic() - started)


def report(outcome: Outcome, vast: MockVast, dashboard: Dashboard, counter: SleepCounter) -> int:
    """Print the summary; the exit status: 0 if every instance runs and the cache served."""
    running = sum(1 for info in outcome.infos if info["actual_status"] == "running")
    gaps = [b - a for a, b in zip(vast.arrivals, vast.arrivals[1:], strict=False)]
    from_cache = sum(dashboard.cached.values())
    throttled = vast.throttled
    print("\nsummary")
    print(f"  instances         {running} of {len(outcome.infos)} running")
    print(
        f"  polls             {sum(dashboard.client.polls.values())} ({counter.poll_waits} waits)"
    )
    print(
        f"  searches          {len(GPU_CONFIGS)} batch, {dashboard.fresh} refreshes fresh, "
        f"{from_cache} from cache while throttled"
    )
    print(
        f"  cache served      {dashboard.cached['quota']} (our quota), "
        f"{dashboard.cached['server']} (the server's 429)"
    )
    print(f"  requests sent     {len(vast.arrivals)} (+{2 * OTHER_SEARCHES} by the other script)")
    print(f"  closest requests  {min(gaps) * 1000:.0f} ms apart (quota: 1 per 100 ms)")
    print(
        f"  HTTP 429          {sum(throttled.values())} (search {throttled['search']}, "
        f"create {throttled['create']}, show {throttled['show']}; "
        f"+{vast.other_throttled} to the other script)"
    )
    print(f"  retries           {counter.retries} ({counter.hinted} on the server's Retry-After)")
    print(f"  quota waits       {counter.quota_waits} ({counter.quota_seconds:.2f} s slept)")
    print(f"  elapsed           {outcome.elapsed:.2f} s")
    return 0 if running == len(outcome.infos) and from_cache > 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true", help="do not log each sleep")
    args = parser.parse_args(argv)
    log_sleeps(quiet=args.quiet)

    callpolicy.load(POLICIES)  # the directory next to this file: runs from any cwd
    counter = SleepCounter()
    remove_hook = callpolicy.add_sleep_hook(counter)
    vast = MockVast(seed=11)
    try:
        with MockAPI(routes=vast.routes()) as api:
            client = VastClient(api.url, API_KEY)
            dashboard = Dashboard(client)
            try:
                outcome = run(api.url, client, dashboard)
            finally:
                client.close()
    finally:
        remove_hook()
    return report(outcome, vast, dashboard, counter)


if __name__ == "__main__":
    sys.exit(main())
