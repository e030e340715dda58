"""A worker process of tests/test_real_limiters.py: one of several processes sharing a quota
through Redis, each sending GETs to a real rate-limiting server (nginx, HAProxy).

    python limiter_worker.py POLICY_DIR POLICY_NAME PORT CALLS

It loads the policies, prints "ready", waits for a line on stdin (the start signal), makes
CALLS calls through the decorated function on one kept-alive connection, and prints one
JSON line: {"statuses": {status: count}}.
"""

from __future__ import annotations

import http.client
import json
import sys
from collections import Counter

import callpolicy


def main(argv: list[str]) -> int:
    policy_dir, policy_name, port_text, calls_text = argv[1:5]
    registry = callpolicy.Registry(policy_dir)
    connection = http.client.HTTPConnection("127.0.0.1", int(port_text), timeout=30)
    connection.connect()

    @registry.policy(policy_name)
    def fetch(path: str) -> int:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status

    registry.runner(policy_name)  # resolve the policy before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    statuses = Counter(fetch(f"/{n}") for n in range(int(calls_text)))
    connection.close()
    print(json.dumps({"statuses": {str(k): v for k, v in statuses.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
