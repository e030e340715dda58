"""A quota whose rate adapts to a server that announces no limit and only says 429.

The local server (examples/changing_server.py, style "none") allows 20 requests a second,
then 10, then 30, and says nothing of it but 429 for what exceeds it. The policy
(examples/policies/adaptive.toml) starts at 20/s and adapts within 5/s..50/s: each
congestion event (429s within a second of a cut are one) cuts the rate, and while no refusal
comes it probes back up. Four threads call as fast as the quota admits; the log says each cut
and why, and at most every 10 s that the rate probed up.

    python examples/adaptive_rate.py
    python examples/adaptive_rate.py --algorithm aimd   # additive steps instead of CUBIC
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

import requests
from changing_server import PHASES, SILENT, changing_server

import callpolicy

POLICIES = Path(__file__).resolve().parent / "policies"
PHASE_SECONDS = 4.0
THREADS = 4


def registry_for(algorithm: str, folder: Path) -> callpolicy.Registry:
    """The example's policy; with --algorithm, a copy of it naming that algorithm."""
    text = (POLICIES / "adaptive.toml").read_text()
    if algorithm != "cubic":
        text = text.replace(
            'ceiling = "50/1s" }', f'ceiling = "50/1s", algorithm = "{algorithm}" }}'
        )
    (folder / "adaptive.toml").write_text(text)
    return callpolicy.Registry(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algorithm", choices=("cubic", "aimd"), default="cubic")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Show the rate's changes; not every wait for the quota.
    logging.getLogger("callpolicy").addFilter(lambda record: ": limit " in record.getMessage())
    with tempfile.TemporaryDirectory() as folder:
        registry = registry_for(args.algorithm, Path(folder))

    @registry.policy("adaptive.items")
    def items(session: requests.Session, url: str) -> requests.Response:
        return session.get(f"{url}/items", timeout=10)

    ok = [0, 0, 0]
    with changing_server(SILENT, PHASE_SECONDS) as (url, server):

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
    counters = registry.quota_counters()["adaptive.api"]
    print("\nsummary", flush=True)
    for phase, limit in enumerate(PHASES):
        refused = server.refusals()[phase]
        print(f"  {limit}/s phase   {ok[phase]} ok, {refused} refused by the server (429)")
    print(f"  rate at the end     {counters.learned}")
    print(f"  congestion events   {counters.cuts}")


if __name__ == "__main__":
    main()
