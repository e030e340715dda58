"""Buckets and spread windows in Redis behave as in memory (tests/test_buckets.py), on the
server's clock: the burst, the pace, a refund, a weighted cost, and a call's end moving the
meter."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from callpolicy import QuotaExceeded, Registry, call_options
from callpolicy._quotas.buckets import LATE
from callpolicy._quotas.redis.script import SCRIPT

if TYPE_CHECKING:
    from local_redis import RedisServer

RegistryOf = Callable[..., Registry]


def _registry(registry_of: RegistryOf, server: RedisServer, keys: str) -> Registry:
    return registry_of(
        api=f'[quotas.q]\n{keys}\nstorage = "{server.url}"\n'
        '[endpoints.get]\nquotas = ["q"]\n'
        '[endpoints.weighted]\nquotas = ["q"]\n'
    )


def nothing() -> None:
    return None


def same(cost: int) -> int:
    return cost


def one(result: object) -> int:
    return 1


def _at_once(registry: Registry, name: str = "api.get") -> int:
    """How many calls are admitted without waiting, right now."""
    fetch = registry.policy(name)(nothing)
    admitted = 0
    with call_options(blocking=False):
        for _ in range(50):
            try:
                fetch()
            except QuotaExceeded:
                return admitted
            admitted += 1
    return admitted


@pytest.mark.parametrize(
    ("keys", "at_once"),
    [
        ('limit = "10/1s"\nalgorithm = "leaky-bucket"', 1),
        ('limit = "10/1s"\nalgorithm = "leaky-bucket"\nburst = 5', 6),
        ('limit = "10/1s"\nalgorithm = "token-bucket"', 10),
        ('limit = "10/1s"\nalgorithm = "token-bucket"\nburst = 3', 3),
        ('limit = "10/1s"\nspread = true', 1),
    ],
)
def test_a_redis_bucket_lets_its_burst_go_at_once_then_paces(
    keys: str, at_once: int, registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    # No guard: it would keep 1 ms of the room unused (the burst's last call waits 1 ms).
    registry = _registry(registry_of, redis_server, f'{keys}\nguard = "0s"')
    assert _at_once(registry) == at_once
    fetch = registry.policy("api.get")(nothing)
    started = time.monotonic()
    fetch()  # waits for the next interval
    assert time.monotonic() - started >= 0.09  # one interval (a lower bound, not a timing)


def test_a_call_that_ends_late_moves_the_redis_meter(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = _registry(
        registry_of, redis_server, 'limit = "10/1s"\nalgorithm = "leaky-bucket"\nguard = "0s"'
    )
    registry.policy("api.get")(time.sleep)(0.04)  # under LATE: counted as late as its end
    ended = time.monotonic()
    registry.policy("api.get")(nothing)()
    # Counted as if it reached the server as it ended: the next goes one interval after that.
    assert time.monotonic() - ended >= 0.09


def test_a_redis_bucket_with_room_takes_a_call_stalled_past_late_as_counted_at_its_end(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    """With a burst of 2 a call may be late by LATE plus two intervals: 150 ms is taken as
    its whole length, so the burst's third call waits till one interval before its end."""
    registry = _registry(
        registry_of,
        redis_server,
        'limit = "10/1s"\nalgorithm = "leaky-bucket"\nburst = 2\nguard = "0s"',
    )
    registry.policy("api.get")(time.sleep)(0.15)
    ended = time.monotonic()
    registry.policy("api.get")(nothing)()
    registry.policy("api.get")(nothing)()
    start = time.monotonic()
    registry.policy("api.get")(nothing)()
    # tat = end + 3 intervals; a call goes 2 intervals (the burst) before it: end + 0.1 s
    assert time.monotonic() - ended >= 0.09
    assert time.monotonic() - start >= 0.05


def test_a_refused_weighted_call_in_a_redis_token_bucket_takes_nothing(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = _registry(
        registry_of,
        redis_server,
        'limit = "100/1s"\nalgorithm = "token-bucket"\nburst = 50\nweighted = true\nguard = "0s"',
    )
    weighted = registry.policy("api.weighted", cost=same)(same)
    with call_options(blocking=False):
        assert weighted(40) == 40
        with pytest.raises(QuotaExceeded):
            weighted(40)  # 10 left: refused, nothing taken
        assert weighted(10) == 10
    with pytest.raises(QuotaExceeded) as caught:
        weighted(60)  # above the bucket's size: never
    assert caught.value.reason == "cost"


def test_actual_cost_gives_back_to_a_redis_bucket(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = _registry(
        registry_of,
        redis_server,
        'limit = "100/1s"\nalgorithm = "token-bucket"\nburst = 50\nweighted = true\nguard = "0s"',
    )
    weighted = registry.policy("api.weighted", cost=same, actual_cost=one)(same)
    with call_options(blocking=False):
        weighted(50)  # estimated 50, actually 1: 49 come back
        assert weighted(45) == 45


def test_redis_takes_a_late_call_as_memory_does() -> None:
    """redis.lua's LATE is buckets.py's, in microseconds."""
    found = re.search(r"local LATE = (\d+)", SCRIPT)
    assert found is not None and int(found[1]) == round(LATE * 1e6)


def test_a_redis_bucket_is_moved_by_a_call_that_ended_after_its_key_would_have_expired(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = _registry(
        registry_of, redis_server, 'limit = "10/1s"\nalgorithm = "leaky-bucket"\nguard = "0s"'
    )
    registry.policy("api.get")(time.sleep)(1.3)  # longer than the key's 1 s past its tat
    ended = time.monotonic()
    registry.policy("api.get")(nothing)()
    # Counted as late as 50 ms after its admission: the next call did not wait for its end.
    assert time.monotonic() - ended < 0.5
