"""Calling a rate-limited local server through a recipe's policy, sequentially, from threads
(requests) or from asyncio tasks (aiohttp), and counting its answers: shared by
tests/test_real_limiters.py and tests/test_documented_limiters.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import requests

from callpolicy import Registry

WritePolicies = Callable[..., Path]


def recipe_policies(write_policies: WritePolicies, keys: str, storage: str = "") -> Path:
    """A policy folder: the quota `server` of `keys` (in `storage`), used by `api.get`."""
    where = f'\nstorage = "{storage}"' if storage else ""
    return write_policies(
        api=f'[quotas.server]\n{keys}{where}\nmax_wait = "1m"\n\n'
        '[endpoints.get]\nquotas = ["server"]\n'
    )


def _shares(calls: int, workers: int) -> list[int]:
    return [calls // workers + (n < calls % workers) for n in range(workers)]


# A run in which some call took longer than this from its admission to its answer may have
# sent a request later than the recipes' guards cover (a starved CPU: the tests share a
# 2-core machine); such a run that was refused is run again, at most ATTEMPTS times in all.
# A run that was refused without such a stall fails at once.
STALL = 0.02
ATTEMPTS = 3


class Statuses(Counter[int]):
    """The servers' answers, by status; `longest`: the longest a call took from admission
    to its answer (s), the most its request can have reached the server late."""

    longest = 0.0

    def took(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)

    def again(self, calls: int, attempt: int) -> bool:
        """Whether to run again: refused in a run that stalled, with attempts left."""
        return self != {200: calls} and self.longest > STALL and attempt + 1 < ATTEMPTS


def statuses_in_mode(registry: Registry, url: str, calls: int, mode: str) -> Statuses:
    """The tests' three modes: "sequential", "3 threads" or "3 tasks"."""
    if mode == "3 tasks":
        return statuses_from_tasks(registry, url, calls, 3)
    return statuses_from_threads(registry, url, calls, 1 if mode == "sequential" else 3)


def statuses_from_threads(registry: Registry, url: str, calls: int, threads: int) -> Statuses:
    statuses = Statuses()
    lock = threading.Lock()

    def work(share: int) -> None:
        with requests.Session() as session:
            session.trust_env = False  # no proxy from the environment: 127.0.0.1 only

            @registry.policy("api.get")
            def fetch() -> tuple[int, float]:
                admitted = time.monotonic()
                status = session.get(url, timeout=30).status_code
                return status, time.monotonic() - admitted

            for _ in range(share):
                status, took = fetch()
                with lock:
                    statuses[status] += 1
                    statuses.took(took)

    workers = [threading.Thread(target=work, args=(n,)) for n in _shares(calls, threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


def statuses_from_tasks(registry: Registry, url: str, calls: int, tasks: int) -> Statuses:
    statuses = Statuses()

    async def main() -> None:
        async with aiohttp.ClientSession() as session:

            @registry.policy("api.get")
            async def fetch() -> tuple[int, float]:
                admitted = time.monotonic()
                async with session.get(url) as response:
                    await response.read()
                    return response.status, time.monotonic() - admitted

            async def work(share: int) -> None:
                for _ in range(share):
                    status, took = await fetch()
                    statuses[status] += 1
                    statuses.took(took)

            await asyncio.gather(*(work(n) for n in _shares(calls, tasks)))

    asyncio.run(main())
    return statuses
