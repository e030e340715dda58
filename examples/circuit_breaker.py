"""A circuit breaker at work: an inventory service is down from 10 s to 40 s; one call a
second asks it for a stock level under policy `inventory.stock`
(examples/policies/inventory.toml: a breaker opening at half of the last 10 calls failed,
open for 10 s, then 2 trial calls; a retry budget; 3 attempts, 1 s apart).

    python examples/circuit_breaker.py            # every call and state change
    python examples/circuit_breaker.py --quiet    # the summary only

It runs on callpolicy's fake clock, so the 60 s of the story take no time: you see the
breaker open (the log line, then `CircuitOpen` at once, no request sent), go half-open after
10 s (2 trial calls reach the server; while it is still down, one fails and the breaker opens
again), and close when both trial calls succeed once the service is back.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import callpolicy
from callpolicy import CircuitOpen, FakeClock

POLICIES = Path(__file__).resolve().parent / "policies"
OUTAGE = (10.0, 40.0)  # seconds after the start
SECONDS = 60


class Inventory:
    """The service: answers in 50 ms, refuses connections during the outage."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.start = clock.now()
        self.requests = 0
        self.during_outage = 0

    def down(self) -> bool:
        return OUTAGE[0] <= self.clock.now() - self.start < OUTAGE[1]

    def stock(self, item: str) -> int:
        self.requests += 1
        self.clock.advance(0.05)
        if self.down():
            self.during_outage += 1
            raise ConnectionError("connection refused")
        return 42


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A circuit breaker at work, on a fake clock")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    registry = callpolicy.Registry(POLICIES)
    handler = logging.StreamHandler(sys.stdout)
    clock = FakeClock()
    inventory = Inventory(clock)
    handler.setFormatter(_Elapsed(clock, inventory.start))
    logger = logging.getLogger("callpolicy")
    if not args.quiet:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    stock = registry.policy("inventory.stock")(inventory.stock)
    served = failed = refused = 0
    changes = _Changes()
    logger.addHandler(changes)
    with callpolicy.fake_time(clock):
        for second in range(SECONDS):
            clock.time = max(clock.time, inventory.start + second)  # one call a second
            try:
                stock("sku-1")
            except CircuitOpen as error:
                refused += 1
                shown = f"CircuitOpen: {error}"
            except ConnectionError as error:
                failed += 1
                shown = f"failed: {error!r}"
            else:
                served += 1
                shown = "served"
            if not args.quiet:
                print(f"{clock.now() - inventory.start:6.2f}s  call {second + 1:2}: {shown}")
    logger.removeHandler(handler)
    logger.removeHandler(changes)
    print(f"\nsummary ({SECONDS} calls, one a second; the service down from "
          f"{OUTAGE[0]:g} s to {OUTAGE[1]:g} s)")  # fmt: skip
    rows = {
        "served": served,
        "failed": failed,
        "refused at once": f"{refused} (CircuitOpen, no request sent)",
        "requests sent": inventory.requests,
        "during the outage": f"{inventory.during_outage} requests ({OUTAGE[1] - OUTAGE[0]:g} s)",
        "breaker changes": ", ".join(changes.states),
    }
    for label, value in rows.items():
        print(f"  {label:<20}{value}")


class _Elapsed(logging.Formatter):
    """Log lines stamped with the seconds since the story started, on the fake clock."""

    def __init__(self, clock: FakeClock, start: float) -> None:
        super().__init__()
        self.clock, self.start = clock, start

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.clock.now() - self.start:6.2f}s  [{record.levelname}] {record.getMessage()}"


class _Changes(logging.Handler):
    """The breaker's states, in order, from its log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.states: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        breaker = getattr(record, "breaker", None)
        if breaker is not None:
            self.states.append(record.getMessage().split()[3].rstrip(":"))


if __name__ == "__main__":
    main()
