"""A quota that learns its limit from the server's headers, as the server changes it.

The local server (examples/changing_server.py) allows 20 requests a second, then 10, then 30,
announcing its limit in every response (`RateLimit-Policy: "default";q=10;w=1`, the IETF
draft's field) and refusing what exceeds it with 429. The policy
(examples/policies/learned.toml) starts at the documented 20/s and follows the
announcements within 5/s..50/s; four threads call as fast as the quota admits.

    python examples/learned_limit.py                  # the IETF fields
    python examples/learned_limit.py --style github   # x-ratelimit-limit, as GitHub sends
    python examples/learned_limit.py --style ietf-old # RateLimit-Limit + RateLimit-Policy: 10;w=1
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path

import requests
from changing_server import PHASES, STYLES, changing_server

import callpolicy

POLICIES = Path(__file__).resolve().parent / "policies"
PHASE_SECONDS = 2.0
THREADS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--style", choices=STYLES, default="ietf")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Show the limit changes; not every wait for the quota.
    logging.getLogger("callpolicy").addFilter(lambda record: ": limit " in record.getMessage())
    registry = callpolicy.Registry(POLICIES / "learned.toml")
    name, quota = ("github_items", "github") if args.style == "github" else ("items", "api")

    @registry.policy(f"learned.{name}")
    def items(session: requests.Session, url: str) -> requests.Response:
        return session.get(f"{url}/items", timeout=10)

    ok = [0, 0, 0]
    with changing_server(args.style, PHASE_SECONDS) as (url, server):

        def worker() -> None:
            session = requests.Session()
            end = time.monotonic() + len(PHASES) * PHASE_SECONDS
            while time.monotonic() < end:
                response = items(session, url)
                if response.status_code == 200:
                    ok[int(response.headers["X-Phase"])] += 1

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    learned = registry.quota_counters()[f"learned.{quota}"].learned
    print("\nsummary", flush=True)
    for phase, limit in enumerate(PHASES):
        refused = server.refusals()[phase]
        print(f"  {limit}/s phase   {ok[phase]} ok, {refused} refused by the server (429)")
    print(f"  learned limit   {learned}")


if __name__ == "__main__":
    main()
