"""Learned limits against a real server changing its limit mid-run (20/s, 10/s, 30/s;
examples/changing_server.py) in each header style: after a change's first response, no
request is refused. Sync threads (requests), async tasks (httpx), and two processes sharing
the quota through a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import requests
from changing_server import PHASES, STYLES, ChangingLimit, changing_server

from callpolicy import Rate, Registry

if TYPE_CHECKING:
    from conftest import WritePolicies
    from local_redis import RedisServer

PHASE_SECONDS = 1.5
Record = tuple[float, float, int, int]  # entered the function, response received, phase, status
LEARN = {
    "github": '{ from = "x-ratelimit", floor = "5/1s", ceiling = "50/1s", resource = "core" }',
    "ietf": '{ from = "ratelimit", floor = "5/1s", ceiling = "50/1s", policy = "default" }',
    "ietf-old": '{ from = "ratelimit", floor = "5/1s", ceiling = "50/1s" }',
}


def policies(style: str, storage: str = "memory://") -> str:
    return f"""
        [quotas.api]
        limit = "20/1s"
        storage = "{storage}"
        learn = {LEARN[style]}

        [endpoints.get]
        quotas = ["api"]
        """


def refused_after_learning(records: list[Record]) -> int:
    """429s to requests that entered the call after the first response of their phase came
    back (the phase's limit was then known): each a request the client should not have sent."""
    first = {
        phase: min(r[1] for r in records if r[2] == phase) for phase in {r[2] for r in records}
    }
    first[0] = -1.0  # the first phase's limit is the declared one
    return sum(
        1 for entered, _, phase, status in records if status == 429 and entered > first[phase]
    )


def changes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if "limit 20/1s" in r.getMessage() or "-> " in r.getMessage()
    ]


def figures(state: ChangingLimit) -> str:
    return " ".join(
        f"{limit}/s: {n} 429s" for limit, n in zip(PHASES, state.refusals(), strict=True)
    )


@pytest.mark.parametrize("style", STYLES)
def test_threads_follow_the_server_limit(
    style: str, write_policies: WritePolicies, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    registry = Registry(write_policies(svc=policies(style)))
    records: list[Record] = []
    lock = threading.Lock()
    local = threading.local()

    @registry.policy("svc.get")
    def get(session: requests.Session, url: str) -> requests.Response:
        local.entered = time.monotonic()
        return session.get(url, timeout=10)

    with changing_server(style, PHASE_SECONDS) as (url, state):

        def worker() -> None:
            session = requests.Session()
            end = time.monotonic() + 3 * PHASE_SECONDS + 0.3
            while time.monotonic() < end:
                response = get(session, url)
                record = (
                    local.entered,
                    time.monotonic(),
                    int(response.headers["X-Phase"]),
                    response.status_code,
                )
                with lock:
                    records.append(record)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(style, figures(state))
    assert refused_after_learning(records) == 0, figures(state)
    said = changes(caplog)
    assert [s.split(" (")[0] for s in said] == [
        "quota svc.api: limit 20/1s -> 10/1s",
        "quota svc.api: limit 10/1s -> 30/1s",
    ], said
    assert registry.quota_counters()["svc.api"].learned == Rate(30, 1.0)


def test_async_tasks_follow_the_server_limit(
    write_policies: WritePolicies, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    registry = Registry(write_policies(svc=policies("ietf")))
    records: list[Record] = []

    async def main(url: str) -> None:
        async with httpx.AsyncClient() as client:
            entered: dict[int, float] = {}

            @registry.policy("svc.get")
            async def get(task: int) -> httpx.Response:
                entered[task] = time.monotonic()
                return await client.get(url)

            async def worker(task: int) -> None:
                end = time.monotonic() + 3 * PHASE_SECONDS + 0.3
                while time.monotonic() < end:
                    response = await get(task)
                    phase = int(response.headers["X-Phase"])
                    records.append((entered[task], time.monotonic(), phase, response.status_code))

            await asyncio.gather(*(worker(task) for task in range(4)))

    with changing_server("ietf", PHASE_SECONDS) as (url, state):
        asyncio.run(main(url))
    print("async", figures(state))
    assert refused_after_learning(records) == 0, figures(state)
    assert len(changes(caplog)) == 2, changes(caplog)


def test_two_processes_share_the_learned_limit_through_redis(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    folder = write_policies(svc=policies("github", redis_server.url))
    worker = Path(__file__).with_name("learned_worker.py")
    with changing_server("github", PHASE_SECONDS) as (url, state):
        processes = [
            subprocess.Popen(
                [sys.executable, str(worker), str(folder), url, str(3 * PHASE_SECONDS + 0.3)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [json.loads(p.communicate(timeout=60)[0].splitlines()[-1]) for p in processes]
    print("redis", figures(state))
    for output in outputs:
        records = [tuple(r) for r in output["records"]]
        assert refused_after_learning(records) == 0, figures(state)
        learned = [line for line in output["said"] if "-> " in line]
        assert learned and learned[-1].startswith("quota svc.api: limit 10/1s -> 30/1s"), learned
