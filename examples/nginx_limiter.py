"""Declare the limiter your server documents: a real nginx `limit_req`, called with the policy
the docs' table gives for it, and with the quota most people would write first.

    python examples/nginx_limiter.py                 # rate=10r/s, no burst, 30 calls each
    python examples/nginx_limiter.py --burst 5       # rate=10r/s burst=5 nodelay
    python examples/nginx_limiter.py --calls 50 --threads 4

It starts nginx (installed: `apt-get install nginx`) on a free port of 127.0.0.1 with
`limit_req_zone ... rate=10r/s; limit_req zone=z [burst=B nodelay];` and its files in a
temporary directory, then makes the calls through two policies (POLICY, below):

  nginx.paced    algorithm = "leaky-bucket" (with burst = B): what nginx counts
  nginx.window   limit = "10/1s", the default sliding window: 10 at once, then 10 more...

A refused call is not retried (so the 429s are counted, not hidden); every wait is logged.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

import callpolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from limiting_servers import NginxLimiter, ServerMissing

POLICY = """\
[quotas.paced]                  # nginx: rate=10r/s [burst=B nodelay]
limit = "10/1s"
algorithm = "leaky-bucket"
burst = {burst}

[quotas.window]                 # what a quota for "10 per second" usually looks like
limit = "10/1s"

[endpoints.paced]
quotas = ["paced"]

[endpoints.window]
quotas = ["window"]
"""


def run(registry: callpolicy.Registry, name: str, url: str, calls: int, threads: int) -> str:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def work(count: int) -> None:
        session = requests.Session()

        @registry.policy(name)
        def fetch() -> int:
            return session.get(url, timeout=10).status_code

        for _ in range(count):
            status = fetch()
            with lock:
                statuses[status] += 1

    shares = [calls // threads + (i < calls % threads) for i in range(threads)]
    started = time.monotonic()
    workers = [threading.Thread(target=work, args=(share,)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    return f"{statuses[200]:4d} x 200  {statuses[429]:4d} x 429  in {elapsed:5.2f}s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=0, help="nginx's burst (with nodelay)")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="no log line per wait")
    args = parser.parse_args()
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="  %(message)s")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "nginx.toml").write_text(POLICY.format(burst=args.burst))
        registry = callpolicy.Registry(folder)
        lines = []
        for name in ("nginx.paced", "nginx.window"):
            try:
                server = NginxLimiter(rate=10, burst=args.burst, nodelay=args.burst > 0)
                with server:
                    lines.append((name, run(registry, name, server.url, args.calls, args.threads)))
            except ServerMissing as missing:
                print(f"{missing}: install nginx to run this example", file=sys.stderr)
                return 1
    print(f"\nsummary (nginx rate=10r/s burst={args.burst}, {args.calls} calls)")
    for name, line in lines:
        print(f"  {name:<14}{line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
