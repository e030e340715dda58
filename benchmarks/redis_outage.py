"""Redis away for 10 minutes at 1,000 calls/s: the memory of what is kept to send again, and
the first call's latency once Redis is back.

    python benchmarks/redis_outage.py            # about 30 s
    python benchmarks/redis_outage.py --minutes 1

A throwaway redis-server (examples/local_redis.py) and one policy, a sliding window under
`on_unavailable = "fail-open"`. Three parts:

1. Replies lost (the worst case: every admission may have run, e.g. a partition after the
   request left): the outage is simulated, not waited for. Each of minutes x 60,000 calls
   hands its lost admission to the storage as a timed-out reply does (RedisGroup._maybe_taken);
   tracemalloc measures what the storage keeps, each minute. The same calls kept as before
   (one entry per call in a list) are measured beside it.
2. Connection refused (the server stopped): 20,000 real calls through the policy; what is kept.
3. Recovery: 1,024 lost admissions (the cap) that really ran, then the first call after Redis
   returns (one catch-up script, then the admission), timed 20 times; beside it, the former
   catch-up of 20,000 kept entries, one round trip each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from local_redis import RedisServer

from callpolicy import Registry
from callpolicy._quotas.redis.pending import MOST_IDS
from callpolicy._quotas.redis.script import RedisTaken
from callpolicy._quotas.redis.storage import RedisGroup
from callpolicy._steps import run

PER_MINUTE = 60_000  # 1,000 calls/s


def noop() -> None:
    return None


def policy(url: str) -> str:
    return (
        f'[quotas.q]\nlimit = "1000000/1m"\nstorage = "{url}?timeout=50ms"\n'
        'on_unavailable = "fail-open"\nmax_wait = "0s"\n[endpoints.e]\nquotas = ["q"]\n'
    )


def group_of(registry: Registry) -> RedisGroup:
    admission = registry.runner("out.e").admission
    assert admission is not None
    group = admission.candidates[0].groups[0]
    assert isinstance(group, RedisGroup)
    return group


def mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB".rjust(11)


def lost_replies(group: RedisGroup, minutes: int) -> None:
    """The same lost admissions kept now and as before; tracemalloc after each minute."""
    print(f"1. replies lost for {minutes} min at 1,000 calls/s (simulated): memory kept")
    print(f"  {'minute':>6} {'calls':>9} {'now':>11} {'kept':>6} {'before':>11} {'kept':>8}")
    pending = group.storage.pending
    now = []
    tracemalloc.start()
    for _ in range(minutes):
        for _ in range(PER_MINUTE):
            group._maybe_taken(group.arguments.admit(1.0), 1.0)
        now.append((tracemalloc.get_traced_memory()[0], len(pending)))
    tracemalloc.stop()
    print_lost = pending.lost
    pending.take(group)
    before: list[tuple[RedisGroup, list[Any]]] = []  # one entry per call
    tracemalloc.start()
    for minute in range(1, minutes + 1):
        for _ in range(PER_MINUTE):
            args = group.arguments.admit(1.0)
            taken = RedisTaken(group.arguments.admission_id(args), 0, 1.0)
            change = group.arguments.change(taken, group.arguments.refunds(only_slots=False))
            before.append((group, change))
        size, kept = now[minute - 1]
        print(
            f"  {minute:>6} {minute * PER_MINUTE:>9,} {mb(size)} {kept:>6,}"
            f" {mb(tracemalloc.get_traced_memory()[0])} {len(before):>8,}"
        )
    tracemalloc.stop()
    print(f"  forgotten past the cap (give-backs, counted in pending.lost): {print_lost:,}")
    before.clear()


def refused(registry: Registry, server: RedisServer) -> None:
    call = registry.policy("out.e")(noop)
    call()
    server.stop()
    started = time.perf_counter()
    for _ in range(20_000):
        call()
    elapsed = time.perf_counter() - started
    pending = group_of(registry).storage.pending
    print("2. connection refused (server stopped): 20,000 calls under fail-open")
    print(f"  kept: {len(pending)} changes; {elapsed / 20_000 * 1e6:.0f} us per call")
    server.start()


def recovery(registry: Registry, server: RedisServer) -> None:
    group = group_of(registry)
    storage = group.storage
    client = redis.Redis.from_url(server.url, socket_timeout=30)
    call = registry.policy("out.e")(noop)
    call()
    firsts: list[float] = []
    for _ in range(20):
        ran = [group.arguments.admit(1.0) for _ in range(MOST_IDS)]
        for args in ran:
            run(storage.script(group, args, group.lone))  # it ran; its reply "was lost"
        for args in ran:
            group._maybe_taken(args, 1.0)
        assert len(storage.pending) == MOST_IDS
        started = time.perf_counter()
        call()
        firsts.append(time.perf_counter() - started)
        assert not storage.pending
    size = client.zcard(group.keys[0])
    print(f"3. the first call after the outage, {MOST_IDS} lost admissions kept (20 runs)")
    print(
        f"  median {statistics.median(firsts) * 1e3:.2f} ms, max {max(firsts) * 1e3:.2f} ms;"
        f" the window holds {size} (the 21 real calls: every lost admission given back)"
    )
    changes = []
    for _ in range(20_000):
        args = group.arguments.admit(1.0)
        taken = RedisTaken(group.arguments.admission_id(args), 0, 1.0)
        changes.append(group.arguments.change(taken, group.arguments.refunds(only_slots=False)))
    started = time.perf_counter()
    for change in changes:
        run(storage.script(group, change))
    print(
        f"  before: 20,000 kept entries replayed one round trip each: "
        f"{(time.perf_counter() - started) * 1e3:.0f} ms"
    )
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    minutes: int = parser.parse_args().minutes
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        (Path(tmp) / "out.toml").write_text(policy(server.url), encoding="utf-8")
        registry = Registry(Path(tmp))
        lost_replies(group_of(registry), minutes)
        refused(registry, server)
        recovery(registry, server)


if __name__ == "__main__":
    main()
