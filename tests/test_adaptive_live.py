"""Adaptive rates against a real server that announces nothing and changes its limit mid-run
(20/s, 10/s, 30/s; examples/changing_server.py, style "none": only 429s): the rate is cut
after the limit falls, far fewer requests are refused than a fixed quota's, the cut is
logged with its cause. One thread, threads (requests), async tasks (httpx), and two processes
adapting one rate through a real Redis."""

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
import redis
import requests
from changing_server import PHASES, SILENT, ChangingLimit, changing_server

from callpolicy import Registry

if TYPE_CHECKING:
    from conftest import WritePolicies
    from local_redis import RedisServer

KEY = "{callpolicy:svc.api}:learned"
PHASE_SECONDS = 3.0
# A fixed "20/1s" quota is refused about 30 times in the 10/s phase (it sends 20 a second
# where 10 pass); the adaptive rate 4 to 6 there (5 to 10 in all, one thread to four): one
# event never cuts below 0.7 of the rate, but in memory a refusal once the server's window
# drained below the new rate is a new event, so halving takes a few tenths of a second (it
# took a period per cut, 16 to 17 refusals there, before).
MOST_REFUSED = 25
# Processes sharing the rate through Redis see only their own answers: they cut by 0.7 (not
# to what passed), twice before the rate is under 10/s: measured 18 to 20.
MOST_REFUSED_SHARED = 25


def policies(storage: str = "memory://") -> str:
    return f"""
        [quotas.api]
        limit = "20/1s"
        storage = "{storage}"
        adapt = {{ floor = "5/1s", ceiling = "50/1s" }}

        [endpoints.get]
        quotas = ["api"]
        """


def figures(state: ChangingLimit) -> str:
    return " ".join(
        f"{limit}/s: {ok} ok, {n} 429s"
        for limit, ok, n in zip(PHASES, state.accepted_in(), state.refusals(), strict=True)
    )


def cuts(lines: list[str]) -> list[str]:
    return [line for line in lines if ": limit " in line and "(HTTP 429: " in line]


def check(
    state: ChangingLimit, registry: Registry | None, lines: list[str], most: int = MOST_REFUSED
) -> None:
    refused = state.refusals()
    assert sum(refused) <= most, figures(state)
    assert state.accepted_in()[1] >= 2 * PHASE_SECONDS * 10 / 3, figures(state)  # not stalled
    assert cuts(lines), lines  # the rate was cut, and the log says why
    if registry is not None:
        counters = registry.quota_counters()["svc.api"]
        assert counters.cuts >= 1
        assert counters.learned is not None and 5 <= counters.learned.calls <= 50


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("threads", [1, 4])
def test_threads_adapt_to_a_silent_server(
    threads: int, write_policies: WritePolicies, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    registry = Registry(write_policies(svc=policies()))

    @registry.policy("svc.get")
    def get(session: requests.Session, url: str) -> requests.Response:
        return session.get(url, timeout=10)

    with changing_server(SILENT, PHASE_SECONDS) as (url, state):

        def worker() -> None:
            session = requests.Session()
            end = time.monotonic() + 3 * PHASE_SECONDS
            while time.monotonic() < end:
                get(session, url)

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    print(threads, figures(state))
    check(state, registry, messages(caplog))


def test_async_tasks_adapt_to_a_silent_server(
    write_policies: WritePolicies, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    registry = Registry(write_policies(svc=policies()))

    async def main(url: str) -> None:
        async with httpx.AsyncClient() as client:

            @registry.policy("svc.get")
            async def get() -> httpx.Response:
                return await client.get(url)

            async def worker() -> None:
                end = time.monotonic() + 3 * PHASE_SECONDS
                while time.monotonic() < end:
                    await get()

            await asyncio.gather(*(worker() for _ in range(4)))

    with changing_server(SILENT, PHASE_SECONDS) as (url, state):
        asyncio.run(main(url))
    print("async", figures(state))
    check(state, registry, messages(caplog))


def test_two_processes_adapt_one_rate_through_redis(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    folder = write_policies(svc=policies(redis_server.url))
    redis.Redis.from_url(redis_server.url).flushall()  # no key left by an earlier test
    worker = Path(__file__).with_name("learned_worker.py")
    with changing_server(SILENT, PHASE_SECONDS) as (url, state):
        processes = [
            subprocess.Popen(
                [sys.executable, str(worker), str(folder), url, str(3 * PHASE_SECONDS)],
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
    lines = [line for output in outputs for line in output["said"]]
    check(state, None, lines, MOST_REFUSED_SHARED)
    # the adapted rate is in the quota's key, for every process (both often adapt alike, so
    # neither has to change when it reads the other's)
    shared = redis.Redis.from_url(redis_server.url, decode_responses=True).get(KEY)
    assert shared is not None, lines
    calls, _, why = str(shared).partition(" ")
    assert 5 <= int(calls) <= 50 and ("HTTP 429" in why or "probing up" in why), shared
