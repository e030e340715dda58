"""Calling a rate-limited local server through a recipe's policy, sequentially, from threads
(requests) or from asyncio tasks (aiohttp), and counting its answers: shared by
tests/test_real_limiters.py and tests/test_documented_limiters.py."""

from __future__ import annotations

import asyncio
import threading
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


def statuses_from_threads(registry: Registry, url: str, calls: int, threads: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def work(share: int) -> None:
        with requests.Session() as session:
            session.trust_env = False  # no proxy from the environment: 127.0.0.1 only

            @registry.policy("api.get")
            def fetch() -> int:
                return session.get(url, timeout=30).status_code

            for _ in range(share):
                status = fetch()
                with lock:
                    statuses[status] += 1

    workers = [threading.Thread(target=work, args=(n,)) for n in _shares(calls, threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


def statuses_from_tasks(registry: Registry, url: str, calls: int, tasks: int) -> Counter[int]:
    statuses: Counter[int] = Counter()

    async def main() -> None:
        async with aiohttp.ClientSession() as session:

            @registry.policy("api.get")
            async def fetch() -> int:
                async with session.get(url) as response:
                    await response.read()
                    return response.status

            async def work(share: int) -> None:
                for _ in range(share):
                    statuses[await fetch()] += 1

            await asyncio.gather(*(work(n) for n in _shares(calls, tasks)))

    asyncio.run(main())
    return statuses
