"""The Lua scripts' time per call at each algorithm's largest allowed window, on Redis's clock.

    python benchmarks/redis_lua_cost.py            # about a minute
    python benchmarks/redis_lua_cost.py --calls 500

A throwaway redis-server (examples/local_redis.py). Each row fills its quota's keys to the
largest size allowed (written directly, a pipeline of ZADDs: a sliding window of 1,000,000
calls, a weighted one of 1,000,000 entries of cost 1 (its cap), 1,000,000 slots in flight),
then makes `--calls` calls through callpolicy's own RedisGroup (admitted ones first, then
refused ones, at the full window) and reads each EVALSHA's execution time from SLOWLOG
(slowlog-log-slower-than 0): the time Redis is blocked for every client, without the network
(the script's own commands, logged too, are left out).
Rows of changes: a weighted refund or cost correction, a slot's end, and the catch-up of 1,024
give-backs kept during an outage (pending.py), and the call after 1,000,000 entries left a
window at once. Prints p50, p99 and max in microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from local_redis import RedisServer

from callpolicy import Registry
from callpolicy._model import MAX_SLIDING_WINDOW
from callpolicy._quotas.redis.pending import MOST_IDS
from callpolicy._quotas.redis.script import RedisTaken
from callpolicy._quotas.redis.storage import RedisGroup
from callpolicy._steps import run

BIG = MAX_SLIDING_WINDOW
HOUR_US = 3600 * 1_000_000


def policies(url: str) -> str:
    return textwrap.dedent(
        f"""
        [defaults]
        quotas = []
        [quotas.sc]
        limit = "{BIG}/1h"
        storage = "{url}"
        max_wait = "0s"
        [quotas.sw]
        limit = "{BIG}/1h"
        weighted = true
        storage = "{url}"
        max_wait = "0s"
        [quotas.fw]
        limit = "{BIG}/1h"
        algorithm = "fixed-window"
        storage = "{url}"
        max_wait = "0s"
        [quotas.tb]
        limit = "{BIG}/1h"
        algorithm = "token-bucket"
        storage = "{url}"
        max_wait = "0s"
        [quotas.lb]
        limit = "{BIG}/1h"
        algorithm = "leaky-bucket"
        storage = "{url}"
        max_wait = "0s"
        [quotas.cc]
        concurrency = {BIG}
        storage = "{url}"
        max_wait = "0s"
        lease = "1h"  # its slots are held through the fills below, which keep Redis busy
        """
    ) + "".join(f'[endpoints.{name}]\nquotas = ["{name}"]\n' for name in QUOTAS)


QUOTAS = ("sc", "sw", "fw", "tb", "lb", "cc")


def group_of(registry: Registry, name: str) -> RedisGroup:
    admission = registry.runner(f"bench.{name}").admission
    assert admission is not None
    group = admission.candidates[0].groups[0]
    assert isinstance(group, RedisGroup)
    return group


def server_us(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1_000_000 + int(micros)


def fill(client: redis.Redis, group: RedisGroup, code: str, count: int) -> None:
    """`count` entries in the group's sorted sets, admitted over the last minute."""
    now = server_us(client)
    step = 60_000_000 / count
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 10_000):
        members: dict[str, float] = {}
        index: dict[str, float] = {}
        for n in range(start, min(start + 10_000, count)):
            if code == "cc":  # leases ending within the hour
                members[f"{n:016x}"] = now + HOUR_US - step * (count - n)
            elif code == "sw":
                members[f"{n:016x}:1"] = now - step * (count - n)
                index[f"{n:016x}:1"] = n + 1
            else:
                members[f"{n:016x}"] = now - step * (count - n)
        pipe.zadd(group.keys[0], members)
        if index:
            pipe.zadd(group.keys[1], index)
        pipe.execute()
    if code == "sw":
        client.hset(
            group.keys[2],
            mapping={"total": count, "cum": count, "debt": 0, "until": 0, "last": now},
        )
    for key in group.keys:
        client.expire(key, 7200)


def timed(client: redis.Redis, calls: Callable[[], Any], times: int) -> list[int]:
    """SLOWLOG's microseconds of each EVALSHA the calls made."""
    client.slowlog_reset()
    for _ in range(times):
        calls()
    entries = client.slowlog_get(times * 40 + 16)  # the commands a script runs are logged too
    return [
        int(e["duration"])
        for e in entries
        if str(e["command"]).upper().startswith(("EVALSHA", "B'EVALSHA"))
    ]


def row(label: str, durations: list[int]) -> None:
    durations.sort()
    p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))]
    print(
        f"  {label:<44} {len(durations):>6} {statistics.median(durations):>8.0f}"
        f" {p99:>8} {durations[-1]:>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls measured per row")
    options = parser.parse_args()
    calls: int = options.calls
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=30)
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", calls * 40 + 64)
        (Path(tmp) / "bench.toml").write_text(policies(server.url), encoding="utf-8")
        registry = Registry(Path(tmp))
        version = client.info("server")["redis_version"]
        print(f"Lua time per call on Redis {version} (SLOWLOG, microseconds), full windows:")
        print(f"  {'row':<44} {'calls':>6} {'p50':>8} {'p99':>8} {'max':>8}")
        for name in QUOTAS:
            group = group_of(registry, name)
            if name in ("sc", "sw", "cc"):
                fill(client, group, name, BIG - calls // 2)
            # half admitted, then refused at the full window (the buckets and fixed window
            # hold one number whatever N is: they are filled by their own calls)
            for _ in range(2):
                group.try_take(1.0)  # scripts loaded
            durations = timed(client, partial(group.try_take, 1.0), calls)
            size = client.zcard(group.keys[0]) if name in ("sc", "sw", "cc") else "-"
            row(f"{name} admit/refuse (entries {size})", durations)
        sw = group_of(registry, "sw")  # corrections need admissions of their own
        client.delete(*sw.keys)
        fill(client, sw, "sw", BIG - calls * 2)
        taken = [sw.try_take(5.0) for _ in range(calls)]
        admitted = [t for t in taken if isinstance(t, RedisTaken)]
        corrected = iter(admitted)
        row(
            "sw cost correction 5 -> 2 (1M entries)",
            timed(client, lambda: sw.adjust(next(corrected), 2.0), len(admitted) // 2),
        )
        refunded = iter(admitted[len(admitted) // 2 :])
        row(
            "sw refund (1M entries)",
            timed(client, lambda: sw.refund(next(refunded)), len(admitted) // 2),
        )
        cc = group_of(registry, "cc")
        client.delete(*cc.keys)
        fill(client, cc, "cc", BIG - calls)
        slots = [cc.try_take(1.0) for _ in range(calls)]
        ended = iter(t for t in slots if isinstance(t, RedisTaken))
        row("cc end of a call (1M slots)", timed(client, lambda: cc.release(next(ended)), calls))
        sc = group_of(registry, "sc")
        lost = [sc.arguments.admit(1.0) for _ in range(MOST_IDS)]
        for args in lost:
            sc._maybe_taken(args, 1.0)
        row(
            f"catch-up of {MOST_IDS} give-backs, one call (1M)",
            timed(client, lambda: run(sc.storage.catch_up(sc)), 1),
        )
        leaving_at_once(client, Path(tmp))
        client.close()


def leaving_at_once(client: redis.Redis, tmp: Path) -> None:
    """A window of 2 s whose 1,000,000 entries all left: the call after them."""
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0?timeout=30s"
    folder = tmp / "leaving"
    folder.mkdir()
    (folder / "bench.toml").write_text(policies(url).replace("/1h", "/2s"), encoding="utf-8")
    registry = Registry(folder)
    for name in ("sc", "sw"):
        group = group_of(registry, name)
        client.delete(*group.keys)
        fill(client, group, name, BIG)  # over the last minute: all left a 2 s window
        row(
            f"{name}: 1M entries left at once, the next call",
            timed(client, partial(group.try_take, 1.0), 1),
        )


if __name__ == "__main__":
    main()
