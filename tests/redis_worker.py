"""A worker process of tests/test_redis_quotas.py: one of several processes sharing a Redis
quota, each sending HTTP GETs to the test's stub server through a decorated function.

    python redis_worker.py POLICY_DIR POLICY_NAME HTTP_PORT WORKER_ID SECONDS

It loads the policies, prints "ready", waits for a line on stdin (the start signal), then
calls the decorated function for SECONDS (the last call may wait for quota beyond that)
and prints one JSON line: {"ok": successes, "refused": QuotaExceeded count, "bad": other
statuses, "sent": {path: time.monotonic() just before sending}}. time.monotonic() is
CLOCK_MONOTONIC on Linux, one clock for every process, so the test can compare the times.
"""

from __future__ import annotations

import http.client
import json
import sys
import time

import callpolicy


def main(argv: list[str]) -> int:
    policy_dir, policy_name, port_text, worker, seconds_text = argv[1:6]
    port, seconds = int(port_text), float(seconds_text)
    registry = callpolicy.Registry(policy_dir)
    sent: dict[str, float] = {}
    # One kept-alive connection, opened before the start: a request is then one write, and
    # its arrival at the server follows its admission by a steady, short delay.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.connect()

    @registry.policy(policy_name)
    def fetch(path: str) -> int:
        sent[path] = time.monotonic()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status

    registry.runner(policy_name)  # resolve the policy before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    ok = refused = bad = 0
    end = time.monotonic() + seconds
    sequence = 0
    while time.monotonic() < end:
        sequence += 1
        try:
            status = fetch(f"/{worker}/{sequence}")
        except callpolicy.QuotaExceeded:
            refused += 1
            continue
        if status == 200:
            ok += 1
        else:
            bad += 1
    connection.close()
    print(json.dumps({"ok": ok, "refused": refused, "bad": bad, "sent": sent}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
