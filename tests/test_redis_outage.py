"""Redis away for a long time: what is kept to send again stays bounded (nothing for a request
that never left; per group and admission, capped, not per call), and catching up after the
outage is one round trip that really gives the admissions back. And a window that a burst of
calls leaves at once: no call pays for all of them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis

from callpolicy import QuotaExceeded, Registry
from callpolicy._quotas.memory import Refusal
from callpolicy._quotas.redis import pending as pending_module
from callpolicy._quotas.redis.pending import MOST_IDS, Pending, never_sent
from callpolicy._quotas.redis.script import SCRIPT, Arguments, RedisTaken
from callpolicy._quotas.redis.storage import RedisStorage

if TYPE_CHECKING:
    from local_redis import RedisServer

RegistryOf = Callable[..., Registry]


def noop() -> None:
    return None


def toml(url: str, limit: str = "100000/1m") -> str:
    return f"""
    [quotas.q]
    limit = "{limit}"
    storage = "{url}?timeout=50ms"
    max_wait = "0s"
    on_unavailable = "fail-open"
    [endpoints.e]
    quotas = ["q"]
    """


def storage_of(registry: Registry) -> RedisStorage:
    admission = registry.runner("svc.e").admission
    assert admission is not None
    storage: RedisStorage = admission.candidates[0].groups[0].storage  # type: ignore[attr-defined]
    return storage


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DroppingProxy:
    """Forwards connections to a Redis server; while `drop` is set, the server's replies are
    thrown away (the requests still arrive and run): replies lost in flight."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.drop = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if not (replies and self.drop.is_set()):
                    target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for end in self.sockets:
            end.close()


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[DroppingProxy]:
    forwarding = DroppingProxy(redis_server.port)
    yield forwarding
    forwarding.close()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    yield connection
    connection.close()


def evalsha_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


# -- nothing is kept for a request that never left ----------------------------------------


def test_a_stopped_server_under_fail_open_keeps_nothing_after_20000_calls(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = registry_of(svc=toml(redis_server.url))
    call = registry.policy("svc.e")(noop)
    call()  # connected, scripts loaded
    redis_server.stop()
    for _ in range(20_000):
        call()  # refused at connect: admitted uncounted, nothing sent
    storage = storage_of(registry)
    assert len(storage.pending) == 0
    assert storage.pending.lost == 0


async def test_async_calls_to_a_closed_port_keep_nothing(registry_of: RegistryOf) -> None:
    registry = registry_of(svc=toml(f"redis://127.0.0.1:{closed_port()}/0"))

    @registry.policy("svc.e")
    async def call() -> None:
        return None

    for _ in range(2_000):
        await call()
    assert len(storage_of(registry).pending) == 0


def test_errors_at_connect_are_never_sent_and_lost_replies_may_have_been() -> None:
    assert never_sent(redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Refused."))
    assert never_sent(redis.TimeoutError("Timeout connecting to server"))
    assert never_sent(redis.ConnectionError("No connection available."))
    assert not never_sent(redis.TimeoutError("Timeout reading from 127.0.0.1:6379"))
    assert not never_sent(redis.ConnectionError("Connection closed by server."))
    assert not never_sent(redis.ResponseError("Error connecting to nothing: not unreachable"))
    assert not never_sent(asyncio.CancelledError())


# -- what may have been applied: bounded, per admission -----------------------------------


def give_back(arguments: Arguments, n: int) -> list[Any]:
    taken = RedisTaken(f"{n:016x}", 0, 1.0)
    return arguments.change(taken, arguments.refunds(only_slots=False))


class Group:
    def __init__(self, arguments: Arguments) -> None:
        self.arguments = arguments
        self.keys = ["k1", "k2"]


def test_twenty_thousand_lost_give_backs_keep_at_most_the_cap_and_count_the_rest(
    registry_of: RegistryOf,
) -> None:
    registry = registry_of(svc=toml(f"redis://127.0.0.1:{closed_port()}/0"))
    group = Group(Arguments(registry.get("svc.e").quotas))
    kept = Pending()
    for n in range(20_000):
        kept.add(group, give_back(group.arguments, n))
    assert len(kept) == MOST_IDS
    assert kept.lost == 20_000 - MOST_IDS
    taken = kept.take(group)
    assert taken is not None
    assert [change[1] for change in taken][-1] == f"{19_999:016x}"  # the newest are kept
    assert kept.take(group) is None


def test_past_the_cap_a_give_back_is_forgotten_before_a_cost_increase(
    registry_of: RegistryOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pending_module, "MOST_IDS", 3)
    registry = registry_of(
        svc=toml(f"redis://127.0.0.1:{closed_port()}/0").replace(
            "[endpoints", "weighted = true\n[endpoints"
        )
    )
    group = Group(Arguments(registry.get("svc.e").quotas))
    kept = Pending()
    increase = group.arguments.change(RedisTaken("a" * 16, 5, 10.0), [40.0])
    kept.add(group, increase)  # forgetting it would let Redis count less than was used
    for n in range(5):
        kept.add(group, give_back(group.arguments, n))
    taken = kept.take(group)
    assert taken is not None
    assert [change[1] for change in taken] == ["a" * 16, f"{3:016x}", f"{4:016x}"]
    assert kept.lost == 3


def test_changes_taken_but_not_sent_come_back_before_later_ones(registry_of: RegistryOf) -> None:
    registry = registry_of(svc=toml(f"redis://127.0.0.1:{closed_port()}/0"))
    group = Group(Arguments(registry.get("svc.e").quotas))
    kept = Pending()
    kept.add(group, give_back(group.arguments, 1))
    taken = kept.take(group)
    assert taken is not None
    kept.add(group, give_back(group.arguments, 2))
    kept.restore(group, taken)
    again = kept.take(group)
    assert again is not None
    assert [change[1] for change in again] == [f"{1:016x}", f"{2:016x}"]


# -- replies lost in flight, then the server answers again ----------------------------------


def test_lost_admissions_are_given_back_in_one_round_trip_when_replies_come_back(
    registry_of: RegistryOf, proxy: DroppingProxy, client: redis.Redis
) -> None:
    registry = registry_of(svc=toml(proxy.url))
    call = registry.policy("svc.e")(noop)
    call()
    client.script_load(SCRIPT)  # the catch-up's script, as a running service has it
    assert client.zcard("{callpolicy:svc.q}:a") == 1
    proxy.drop.set()

    def caller() -> None:
        for _ in range(10):
            call()  # admitted (fail-open); the admission may or may not have run

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    storage = storage_of(registry)
    assert 0 < len(storage.pending) <= 80
    proxy.drop.clear()
    before = evalsha_calls(client)
    call()
    assert evalsha_calls(client) - before == 2  # the catch-up, then the admission
    assert len(storage.pending) == 0
    assert client.zcard("{callpolicy:svc.q}:a") == 2  # the first call and this one: all given back


async def test_async_tasks_whose_replies_are_lost_are_caught_up_in_one_round_trip(
    registry_of: RegistryOf, proxy: DroppingProxy, client: redis.Redis
) -> None:
    registry = registry_of(svc=toml(proxy.url))

    @registry.policy("svc.e")
    async def call() -> None:
        return None

    await call()
    client.script_load(SCRIPT)
    proxy.drop.set()
    await asyncio.gather(*(call() for _ in range(40)))  # each on a connection of its own
    storage = storage_of(registry)
    assert 0 < len(storage.pending) <= 40
    proxy.drop.clear()
    before = evalsha_calls(client)
    await call()
    assert evalsha_calls(client) - before == 2
    assert client.zcard("{callpolicy:svc.q}:a") == 2


def test_threads_adding_while_others_take_and_restore_lose_no_change(
    registry_of: RegistryOf,
) -> None:
    registry = registry_of(svc=toml(f"redis://127.0.0.1:{closed_port()}/0"))
    group = Group(Arguments(registry.get("svc.e").quotas))
    kept = Pending()
    sent: list[int] = []
    adding = threading.Barrier(5)

    def add(first: int) -> None:
        adding.wait()
        for n in range(first, first + 2_000):
            kept.add(group, give_back(group.arguments, n))

    def take() -> None:
        adding.wait()
        for round_ in range(2_000):
            taken = kept.take(group)
            if taken is None:
                continue
            if round_ % 2:
                kept.restore(group, taken)  # not sent: back before the later ones
            else:
                sent.append(len(taken))

    threads = [threading.Thread(target=add, args=(n * 2_000,)) for n in range(4)]
    threads.append(threading.Thread(target=take))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(sent) + len(kept) + kept.lost == 8_000


# -- a million calls leaving at once ---------------------------------------------------------


def test_calls_that_left_are_removed_a_thousand_at_a_time_and_never_counted(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(svc=toml(redis_server.url, limit="3/10s"))
    call = registry.policy("svc.e")(noop)
    call()
    call()
    seconds, micros = client.time()
    long_ago = seconds * 1_000_000 + micros - 60_000_000
    client.zadd("{callpolicy:svc.q}:a", {f"old{n}": long_ago + n for n in range(5_000)})
    call()  # 2 + 1 <= 3: the 5,000 that left do not count
    assert client.zcard("{callpolicy:svc.q}:a") == 5_000 - 1_000 + 3
    storage = storage_of(registry)
    [group] = storage.groups(registry.get("svc.e").quotas)
    refusal = group.try_take(1.0)  # full: waits for the oldest call that counts, ~10 s
    assert isinstance(refusal, Refusal) and refusal.wait is not None
    assert 9 < refusal.wait <= 10.03
    assert client.zcard("{callpolicy:svc.q}:a") == 5_000 - 2_000 + 3
    assert len(storage.pending) == 0


@pytest.mark.parametrize("algorithm", ["fixed-window", "token-bucket", "sliding-window"])
def test_a_give_back_whose_reply_was_lost_is_never_applied_twice(
    registry_of: RegistryOf, proxy: DroppingProxy, client: redis.Redis, algorithm: str
) -> None:
    """A cost correction (50 estimated, 10 used) whose reply is lost may have been applied:
    sent again, a count moved by its difference would give back 40 twice. It is not sent
    again there (the count errs towards fewer); a sliding window's, renamed by id, is."""
    registry = registry_of(
        svc=f"""
        [quotas.q]
        limit = "100/1h"
        algorithm = "{algorithm}"
        weighted = true
        storage = "{proxy.url}?timeout=100ms"
        max_wait = "0s"
        [endpoints.e]
        quotas = ["q"]
        """
    )

    def used(cost: float) -> Callable[[object], float]:
        return lambda _result: cost

    def lost_reply() -> None:
        proxy.drop.set()  # the function's own work is done: drop the correction's reply

    registry.policy("svc.e", cost=50, actual_cost=used(10))(lost_reply)()
    proxy.drop.clear()
    admitted = 10.0
    for _ in range(30):
        try:
            registry.policy("svc.e", cost=10)(noop)()
        except QuotaExceeded:
            break
        admitted += 10
    assert admitted <= 100
    assert admitted >= 50  # what the lost correction took, at most, is 50


def test_a_group_built_anew_by_a_reload_finds_what_its_predecessor_kept(
    registry_of: RegistryOf,
) -> None:
    registry = registry_of(svc=toml(f"redis://127.0.0.1:{closed_port()}/0"))
    before = Group(Arguments(registry.get("svc.e").quotas))
    after = Group(Arguments(registry.get("svc.e").quotas))  # the same keys, a new object
    kept = Pending()
    kept.add(before, give_back(before.arguments, 1))
    taken = kept.take(after)
    assert taken is not None and [change[1] for change in taken] == [f"{1:016x}"]
    assert kept.take(before) is None
