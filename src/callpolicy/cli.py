"""`callpolicy check [PATH...]` and `callpolicy explain NAME [--path PATH]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from callpolicy.errors import PolicyError
from callpolicy.model import Policy
from callpolicy.registry import Registry
from callpolicy.units import format_seconds
from callpolicy.waits import describe_wait


def explain(policy: Policy) -> str:
    """A policy in plain words, one line per rule."""
    retry = policy.retry
    lines = [f"{policy.name}  ({policy.source})"]
    if policy.description:
        lines.append(f"  {policy.description}")
    triggers = [e.__module__ + "." + e.__qualname__ for e in retry.on_exceptions]
    if retry.on_status:
        triggers.append("HTTP " + _status_ranges(retry.on_status))
    if retry.until:
        triggers.append(f"until {retry.until.describe()}")
    if retry.while_:
        triggers.append(f"while {retry.while_.describe()}")
    for label, predicate in (
        ("result", retry.result_predicate),
        ("exception", retry.exception_predicate),
    ):
        if predicate is not None:
            triggers.append(f"{label} predicate {getattr(predicate, '__qualname__', predicate)}")
    lines.append("  retry on: " + (", ".join(triggers) if triggers else "nothing (no retries)"))
    lines.append(f"  wait:     {describe_wait(policy.wait)}")
    stop = f"after {policy.stop.attempts} attempts"
    if policy.stop.deadline is not None:
        stop += f", or before a wait that would end past {format_seconds(policy.stop.deadline)}"
    lines.append(f"  stop:     {stop}")
    quotas = ", ".join(q.describe() for q in policy.quotas) or "none"
    lines.append(f"  quotas:   {quotas}")
    return "\n".join(lines)


def _status_ranges(statuses: frozenset[int]) -> str:
    ordered = sorted(statuses)
    ranges: list[str] = []
    start = previous = ordered[0]
    for status in [*ordered[1:], None]:
        if status is not None and status == previous + 1:
            previous = status
            continue
        if start % 100 == 0 and previous == start + 99:
            ranges.append(f"{start // 100}xx")
        else:
            ranges.append(str(start) if start == previous else f"{start}-{previous}")
        if status is not None:
            start = previous = status
    return ", ".join(ranges)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callpolicy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate policy files; list every problem")
    check.add_argument(
        "paths", nargs="*", help="files or directories (default: CALLPOLICY_PATH or ./policies)"
    )
    show = commands.add_parser("explain", help="show what a policy does, in plain words")
    show.add_argument("names", nargs="*", help="policy names (default: all)")
    show.add_argument("--path", action="append", default=[], help="file or directory to load")
    args = parser.parse_args(argv)
    paths = args.paths if args.command == "check" else args.path
    try:
        registry = Registry(*paths)
        if args.command == "check":
            names = registry.names()
            print(f"ok: {len(names)} policies, {len(registry.quotas())} quotas")
            return 0
        for name in args.names or registry.names():
            print(explain(registry.get(name)))
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0
