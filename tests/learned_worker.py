"""A worker process of tests/test_learned_limits_live.py: calls the changing server through a
quota in Redis that learns its limit.

    python learned_worker.py POLICY_DIR URL SECONDS

Prints "ready", waits for a line on stdin, calls for SECONDS, then prints one JSON line: a
list of [entered, received, phase, status] (time.monotonic(), one clock for every process on
Linux), and the lines the callpolicy logger said at INFO.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import requests

import callpolicy


class Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main(argv: list[str]) -> int:
    policy_dir, url, seconds = argv[1], argv[2], float(argv[3])
    said = Said()
    logger = logging.getLogger("callpolicy")
    logger.addHandler(said)
    logger.setLevel(logging.INFO)
    registry = callpolicy.Registry(policy_dir)
    session = requests.Session()
    records: list[list[float]] = []
    entered = [0.0]

    @registry.policy("svc.get")
    def get() -> requests.Response:
        entered[0] = time.monotonic()
        return session.get(url, timeout=10)

    registry.runner("svc.get")
    print("ready", flush=True)
    sys.stdin.readline()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        response = get()
        phase = int(response.headers["X-Phase"])
        records.append([entered[0], time.monotonic(), phase, response.status_code])
    print(json.dumps({"records": records, "said": said.lines}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
