"""Retry rules per cause, as the Spotify seed's talk wants them: network errors retried at
once, throttling waiting the server's Retry-After plus a little random time, 5xx backing off.

The policy is `spotify.tracks` of examples/policies/spotify.toml (its `[[retry.rules]]`).
Here every cause happens: the mock API allows fewer calls than the policy's quota (another
client shares the app's quota, say), so it answers 429 with Retry-After; it answers 503 to 5%
of requests; and a flaky network drops 10% of requests before they leave (seeded).

    python examples/retry_rules.py               # 30 tracks, every sleep logged
    python examples/retry_rules.py --quiet       # the summary only

Each log line names the rule that fired and shows the sleep's parts (the server's hint and
the jitter, or the backoff and the jitter); retrying at once is logged at DEBUG, so only the
summary counts those. A hook counts the sleeps by rule.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from mock_api import MockAPI, Request, log_sleeps
from requests.adapters import HTTPAdapter

import callpolicy
from callpolicy import SleepEvent, policy

POLICIES = Path(__file__).resolve().parent / "policies"
SERVER_QUOTA = (10, 1.0)  # tighter than the policy's 50/1s: the server answers 429
ERROR_RATE = 0.05  # 503s
DROP_RATE = 0.10  # requests the flaky network drops before they leave
PLAIN = "the plain retry keys"  # what decided when no rule matched


class FlakyNetwork(HTTPAdapter):
    """Drops a share of requests before they are sent, as a flaky network would."""

    def __init__(self, rate: float, seed: int) -> None:
        super().__init__()
        self.rate = rate
        self.random = random.Random(seed)
        self.dropped = 0

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        if self.random.random() < self.rate:
            self.dropped += 1
            raise requests.ConnectionError("connection reset by the flaky network")
        return super().send(request, *args, **kwargs)


class Client:
    def __init__(self, base_url: str, network: FlakyNetwork) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.mount("http://", network)

    @policy("spotify.tracks")
    def track(self, track_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.base_url}/tracks/{track_id}", timeout=5)
        response.raise_for_status()  # 429 and 503 raise HTTPError, carrying the response
        data: dict[str, Any] = response.json()
        return data


class ByRule:
    """A sleep hook: backoff sleeps counted by the rule that decided."""

    def __init__(self) -> None:
        self.sleeps: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, event: SleepEvent) -> None:
        if event.source == "backoff":
            with self._lock:
                self.sleeps[event.rule or PLAIN] += 1


def serve_track(request: Request) -> dict[str, Any]:
    return {"id": request.params["id"], "name": f"Track {request.params['id']}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=30, help="how many tracks (30)")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    log_sleeps(quiet=args.quiet)
    callpolicy.load(POLICIES)
    by_rule = ByRule()
    remove_hook = callpolicy.add_sleep_hook(by_rule)
    network = FlakyNetwork(DROP_RATE, seed=7)
    api = MockAPI(
        quota=SERVER_QUOTA, error_rate=ERROR_RATE, seed=11, routes={"GET /tracks/<id>": serve_track}
    )
    fetched = 0
    with api:
        client = Client(api.url, network)
        started = time.monotonic()
        for n in range(args.tracks):
            try:
                client.track(f"{n:06d}")
            except requests.RequestException as exc:  # a cause ran out of attempts
                print(f"track {n:06d} failed: {exc}")
            else:
                fetched += 1
        elapsed = time.monotonic() - started
    remove_hook()
    stats = api.stats
    print(f"\nsummary ({SERVER_QUOTA[0]}/{SERVER_QUOTA[1]:g}s server quota)")
    print(f"  tracks fetched      {fetched} of {args.tracks}")
    print(f"  dropped             {network.dropped} (network)")
    print(f"  HTTP 429            {stats.throttled}")
    print(f"  HTTP 503            {stats.unavailable}")
    for rule, label in (("network", "network"), ("throttled", "throttled"), (PLAIN, "5xx")):
        print(f"  {'retries, ' + label:<20}{by_rule.sleeps[rule]} ({rule})")
    print(f"  elapsed             {elapsed:.2f} s")
    return 0 if fetched == args.tracks else 1


if __name__ == "__main__":
    sys.exit(main())
