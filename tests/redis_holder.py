"""A worker process of tests/test_redis_leases.py: takes an in-flight slot of a Redis quota
and holds it until killed.

    python redis_holder.py POLICY_DIR POLICY_NAME

It prints "holding" once admitted, then sleeps inside the decorated call: the test kills it
(SIGKILL, as a crash would), so the call never ends and its slot is never given back.
"""

from __future__ import annotations

import sys
import time

import callpolicy


def main(argv: list[str]) -> int:
    policy_dir, policy_name = argv[1:3]
    registry = callpolicy.Registry(policy_dir)

    @registry.policy(policy_name)
    def hold() -> None:
        print("holding", flush=True)
        while True:
            time.sleep(1)

    hold()
    return 1  # never reached: the call never ends


if __name__ == "__main__":
    sys.exit(main(sys.argv))
