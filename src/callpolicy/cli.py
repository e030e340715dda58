"""`callpolicy check [PATH...]` and `callpolicy explain NAME [--path PATH]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from callpolicy._errors import PolicyError
from callpolicy._explain import explain
from callpolicy._registry import Registry


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
