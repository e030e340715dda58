"""Each recipe of docs/policies.md "Match your server's limiter" against the real server it is
for (nginx limit_req, HAProxy stick tables, started by fixtures): no call refused, made
sequentially, from threads, from tasks, and from several processes sharing the quota through
Redis. The servers count; the tests only read their answers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from recipe_calls import ATTEMPTS, recipe_policies, statuses_in_mode

from callpolicy import Registry

if TYPE_CHECKING:
    from conftest import WritePolicies
    from limiting_servers import LimitingServer, StartHAProxy, StartNginx
    from local_redis import RedisServer

CALLS = 30  # 3 s at 10 per second
WORKER = Path(__file__).with_name("limiter_worker.py")

# (server, its parameters, the recipe's quota keys): the table of docs/policies.md
RECIPES = {
    "nginx rate=10r/s": ("nginx", {}, 'limit = "10/1s"\nalgorithm = "leaky-bucket"'),
    "nginx rate=10r/s burst=5 nodelay": (
        "nginx",
        {"burst": 5, "nodelay": True},
        'limit = "10/1s"\nalgorithm = "leaky-bucket"\nburst = 5',
    ),
    "HAProxy http_req_rate(1s) gt 10": ("haproxy", {}, 'limit = "10/1s"\nspread = true'),
    # nginx delays the burst instead of refusing it: every call is answered, none refused
    "nginx rate=10r/s burst=5 (delay)": (
        "nginx",
        {"burst": 5},
        'limit = "10/1s"\nalgorithm = "leaky-bucket"\nburst = 5',
    ),
    # the recipe for a server that does not say: evenly spaced, against the smoothest one
    "not documented (HAProxy)": ("haproxy", {}, 'limit = "10/1s"\nalgorithm = "leaky-bucket"'),
}
Start = Callable[[str, Mapping[str, object]], "LimitingServer"]


@pytest.fixture
def start(nginx_limiter: StartNginx, haproxy_limiter: StartHAProxy) -> Start:
    def start(kind: str, parameters: Mapping[str, object]) -> LimitingServer:
        if kind == "nginx":
            return nginx_limiter(**parameters)  # type: ignore[arg-type]
        return haproxy_limiter(**parameters)  # type: ignore[arg-type]

    return start


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("mode", ["sequential", "3 threads", "3 tasks"])
def test_the_recipe_is_never_refused_by_its_server(
    recipe: str, mode: str, start: Start, write_policies: WritePolicies
) -> None:
    kind, parameters, keys = RECIPES[recipe]
    for attempt in range(ATTEMPTS):  # again only after a stall beyond the guard (STALL)
        server = start(kind, parameters)
        registry = Registry(recipe_policies(write_policies, keys))
        statuses = statuses_in_mode(registry, server.url, CALLS, mode)
        if not statuses.again(CALLS, attempt):
            break
    assert statuses == {200: CALLS}, f"longest call {statuses.longest:.3f}s"
    counted = server.counts(at_least=CALLS)
    assert (counted.ok, counted.refused) == (CALLS, 0)  # what the server says it answered


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_recipe_shared_through_redis_by_three_processes_is_never_refused(
    recipe: str, start: Start, write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    kind, parameters, keys = RECIPES[recipe]
    server = start(kind, parameters)
    folder = recipe_policies(write_policies, keys, storage=redis_server.url)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(folder),
                "api.get",
                str(server.port),
                str(CALLS // 3),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = [json.loads(worker.communicate(timeout=60)[0]) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    statuses: Counter[str] = Counter()
    for report in reports:
        statuses.update(report["statuses"])
    assert statuses == {"200": CALLS}
    counted = server.counts(at_least=CALLS)
    assert (counted.ok, counted.refused) == (CALLS, 0)
