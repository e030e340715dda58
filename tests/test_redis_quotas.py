"""Quotas shared through a real Redis server (the `redis_server` fixture): several processes,
threads, tasks and registries ("hosts") counting in one place, atomically, on the server's
clock; and what calls do when the server goes away and comes back."""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
import redis
from local_http import running

from callpolicy import QuotaExceeded, QuotaUnavailable, Registry, call_options, pool_key

if TYPE_CHECKING:
    from conftest import WritePolicies
    from local_redis import RedisServer

RegistryOf = Callable[..., Registry]
WORKER = Path(__file__).with_name("redis_worker.py")
T = TypeVar("T")


def tagged(quota: str, part: str, prefix: str = "callpolicy") -> str:
    """A quota's key: `{prefix:quota}:part`, its own hash tag (one Redis Cluster slot)."""
    return f"{{{prefix}:{quota}}}:{part}"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the test's Redis server, to look at the quotas' keys."""
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    yield connection
    connection.close()


def stored(client: redis.Redis, key: str) -> float:
    """What a sliding window holds, from its ":a" set (one call per member) or a weighted
    window's ":w" set (the cost a member carries after its last ":", "id:60"). 0 when absent."""
    base = key.rsplit(":", 1)[0]
    members = [
        m for part in (":a", ":w") for m in cast("list[str]", client.zrange(base + part, 0, -1))
    ]
    return sum(float(m.rsplit(":", 1)[1]) if ":" in m else 1.0 for m in members)


def outcome(call: Callable[[], object]) -> str:
    """What became of one call: "ok", "refused" (QuotaExceeded) or "unavailable"
    (QuotaUnavailable, a QuotaExceeded too)."""
    try:
        call()
    except QuotaUnavailable:
        return "unavailable"
    except QuotaExceeded:
        return "refused"
    return "ok"


def noop() -> None:
    return None


def appender(ran: list[T], item: T) -> Callable[[], None]:
    """A function recording each of its runs in `ran`."""

    def run() -> None:
        ran.append(item)

    return run


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- 1. several processes -------------------------------------------------------------------


class StubServer(ThreadingHTTPServer):
    """Answers every GET with 200 and records when each path arrived (time.monotonic())."""

    daemon_threads = True
    # Eight workers connect at once; a full accept backlog would delay a SYN by a whole second.
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Recorder)
        self.lock = threading.Lock()
        self.arrivals: dict[str, float] = {}


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: each worker sends over one connection

    def do_GET(self) -> None:
        arrived = time.monotonic()
        server = self.server
        assert isinstance(server, StubServer)
        with server.lock:
            server.arrivals[self.path] = arrived
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    with running(StubServer()) as server:
        yield server


def most_in_any_second(times: list[float]) -> int:
    """The most arrivals in any window (t - 1 s, t]; `times` sorted."""
    return max(
        (i - bisect.bisect_right(times, t - 1.0) + 1 for i, t in enumerate(times)), default=0
    )


def test_processes_sharing_a_sliding_window_never_exceed_it_at_the_server(
    write_policies: WritePolicies, redis_server: RedisServer, stub_server: StubServer
) -> None:
    # The server counts 20 per 1 s; the quota is declared 20 per 1.05 s. Redis admits exactly
    # (measured: admissions 20 apart are always >= 1.0078 s apart for "20/1010ms"), but the
    # server sees each call a little later, and on a 2-core runner busy with 8 workers, Redis
    # and the server's threads, one call's send-to-arrival delay measured up to 36 ms while
    # the median is 0.2-2 ms. With "20/1010ms", one run in 19 saw 23 arrivals in one second.
    # A client of a real API would likewise declare a little less than the server's limit.
    policy_dir = write_policies(
        svc=f"""
        [quotas.api]
        limit = "20/1050ms"
        storage = "{redis_server.url}?timeout=2s"
        max_wait = "10s"
        [endpoints.get]
        quotas = ["api"]
        """
    )
    seconds, processes = 3.0, 8
    port = stub_server.server_address[1]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(policy_dir),
                "svc.get",
                str(port),
                str(n),
                str(seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        started = time.monotonic()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = [json.loads(worker.communicate(timeout=30)[0]) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [w.returncode for w in workers] == [0] * processes

    arrivals = dict(stub_server.arrivals)
    times = sorted(arrivals.values())
    sent: dict[str, float] = {}
    for report in reports:
        assert (report["refused"], report["bad"]) == (0, 0)
        sent.update(report["sent"])
    # Every admitted call reached the server once, and nothing else did.
    assert sum(report["ok"] for report in reports) == len(arrivals)
    assert set(sent) == set(arrivals)
    delays = sorted(arrivals[path] - sent[path] for path in arrivals)
    assert most_in_any_second(times) <= 20, (
        f"send-to-arrival delays: median {delays[len(delays) // 2] * 1000:.1f} ms, "
        f"max {delays[-1] * 1000:.1f} ms"
    )
    in_run = bisect.bisect_left(times, started + seconds) - bisect.bisect_left(times, started)
    assert in_run >= 0.8 * 20 * seconds


# -- 2, 3. many callers at once -------------------------------------------------------------

# ?timeout=2s: the callers below wait for a busy server (see redis_busy) longer than the
# default 250 ms; these tests are about counting, not about timeouts.
NON_BLOCKING = """
[quotas.q]
limit = "5/1min"
storage = "{url}?timeout=2s"
max_wait = "0s"
[endpoints.e]
quotas = ["q"]
"""
BUSY_LOOP = """
local t = redis.call('TIME')
local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1])
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop
return 1
"""


@contextmanager
def redis_busy(url: str, seconds: float = 0.3) -> Iterator[None]:
    """Keep the server busy running a script for `seconds`, as a loaded server would be: the
    calls made meanwhile all wait on it at once, each on a connection of its own."""
    busy = redis.Redis.from_url(url, socket_timeout=seconds + 5)
    busy.ping()  # connected: the script below starts as soon as it is sent
    thread = threading.Thread(target=busy.eval, args=(BUSY_LOOP, 0, round(seconds * 1e6)))
    thread.start()
    _until_busy(url, thread)
    try:
        yield
    finally:
        thread.join()
        busy.close()


def _until_busy(url: str, runner: threading.Thread) -> None:
    """Return once the server runs the busy script: a PING then goes unanswered (a server
    that answers has not started it yet, and the script's thread may not have sent it)."""
    deadline = time.monotonic() + 5
    while runner.is_alive():
        assert time.monotonic() < deadline, "the busy script did not start"
        probe = redis.Redis.from_url(url, socket_timeout=0.02, socket_connect_timeout=5)
        try:
            probe.ping()
        except redis.TimeoutError:
            return
        finally:
            probe.close()
        time.sleep(0.001)
    raise AssertionError("the busy script ended before it was seen running")


def threads_at_once(call: Callable[[], object], count: int) -> Counter[str]:
    """Start `count` threads calling `call` at the same moment; their outcomes."""
    barrier = threading.Barrier(count)
    outcomes: list[str] = []

    def caller() -> None:
        barrier.wait()
        outcomes.append(outcome(call))

    threads = [threading.Thread(target=caller) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(outcomes)


async def tasks_at_once(call: Callable[[], Awaitable[object]], count: int) -> Counter[str]:
    async def attempt() -> str:
        try:
            await call()
        except QuotaUnavailable:
            return "unavailable"
        except QuotaExceeded:
            return "refused"
        return "ok"

    return Counter(await asyncio.gather(*(attempt() for _ in range(count))))


@pytest.mark.parametrize(
    "count",
    [50, 200],
)
def test_threads_at_once_non_blocking_get_exactly_the_limit_and_the_rest_are_refused(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis, count: int
) -> None:
    registry = registry_of(svc=NON_BLOCKING.format(url=redis_server.url))
    ran: list[int] = []
    call = registry.policy("svc.e")(appender(ran, 1))
    with redis_busy(redis_server.url):
        outcomes = threads_at_once(call, count)
    assert outcomes == {"ok": 5, "refused": count - 5}
    assert len(ran) == 5
    assert stored(client, tagged("svc.q", "b")) == 5


@pytest.mark.parametrize(
    "count",
    [50, 500],
)
async def test_tasks_at_once_non_blocking_get_exactly_the_limit_and_the_rest_are_refused(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis, count: int
) -> None:
    registry = registry_of(svc=NON_BLOCKING.format(url=redis_server.url))
    ran: list[int] = []

    @registry.policy("svc.e")
    async def call() -> None:
        ran.append(1)

    with redis_busy(redis_server.url):
        outcomes = await tasks_at_once(call, count)
    assert outcomes == {"ok": 5, "refused": count - 5}
    assert len(ran) == 5
    assert stored(client, tagged("svc.q", "b")) == 5


# -- 4, 5. several quotas at once, weighted calls --------------------------------------------


def test_a_call_refused_by_one_redis_quota_takes_nothing_from_the_other(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(
        svc=f"""
        [quotas.q1]
        limit = "2/10s"
        storage = "{redis_server.url}"
        max_wait = "0s"
        [quotas.q2]
        limit = "1/10s"
        storage = "{redis_server.url}"
        max_wait = "0s"
        [endpoints.both]
        quotas = ["q1", "q2"]
        [endpoints.first]
        quotas = ["q1"]
        """
    )
    ran: list[str] = []
    both = registry.policy("svc.both")(appender(ran, "both"))
    first = registry.policy("svc.first")(appender(ran, "first"))
    both()  # q1: 1 of 2, q2: 1 of 1
    with pytest.raises(QuotaExceeded) as refused:
        both()
    assert refused.value.quota == "svc.q2"
    assert stored(client, tagged("svc.q1", "b")) == 1  # the refused call took nothing from q1
    first()  # so q1 still has room for one
    assert outcome(first) == "refused"
    assert ran == ["both", "first"]


WEIGHTED = """
[quotas.tokens]
limit = "100/10s"
weighted = true
storage = "{url}"
max_wait = "0s"
[endpoints.e]
quotas = ["tokens"]
"""


def test_a_weighted_call_takes_its_cost_from_the_redis_quota(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(svc=WEIGHTED.format(url=redis_server.url))
    heavy = registry.policy("svc.e", cost=60)(noop)
    heavy()
    assert stored(client, tagged("svc.tokens", "b")) == 60
    with pytest.raises(QuotaExceeded) as refused:
        heavy()  # 60 + 60 > 100
    assert refused.value.quota == "svc.tokens"
    assert refused.value.wait > 9
    assert stored(client, tagged("svc.tokens", "b")) == 60


def test_actual_cost_gives_back_what_a_weighted_call_did_not_use(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(svc=WEIGHTED.format(url=redis_server.url))
    estimated = registry.policy("svc.e", cost=60, actual_cost=lambda result: 10)(noop)
    heavy = registry.policy("svc.e", cost=60)(noop)
    estimated()  # takes 60 up front, then only 10 once it returned
    assert stored(client, tagged("svc.tokens", "b")) == 10
    heavy()  # 10 + 60 <= 100: admitted thanks to the correction
    assert stored(client, tagged("svc.tokens", "b")) == 70
    assert outcome(heavy) == "refused"  # 70 + 60 > 100


# -- 6. calls in flight ---------------------------------------------------------------------


def test_a_redis_concurrency_quota_holds_calls_of_two_hosts_to_its_slots(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    toml = f"""
    [quotas.slots]
    concurrency = 2
    storage = "{redis_server.url}"
    max_wait = "10s"
    [endpoints.e]
    quotas = ["slots"]
    """
    hosts = [registry_of(svc=toml), registry_of(svc=toml)]
    lock = threading.Lock()
    in_flight = most = done = 0

    def hold() -> None:
        nonlocal in_flight, most, done
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.1)
        with lock:
            in_flight -= 1
            done += 1

    calls = [host.policy("svc.e")(hold) for host in hosts]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def caller(call: Callable[[], None]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(calls[n % 2],)) for n in range(6)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert errors == []
    assert (most, done) == (2, 6)
    assert elapsed >= 0.3  # three rounds of two
    assert client.zcard(tagged("svc.slots", "a")) == 0  # every slot given back


# -- 7, 8. the server goes away, comes back, forgets its scripts ----------------------------


def restart_toml(url: str, mode: str) -> str:
    local = 'local_limit = "2/1s"' if mode == "local" else ""
    return f"""
    [quotas.q]
    limit = "3/10s"
    storage = "{url}?timeout=100ms"
    max_wait = "0s"
    on_unavailable = "{mode}"
    {local}
    [endpoints.e]
    quotas = ["q"]
    """


def test_fail_closed_refuses_while_redis_is_down_and_counts_in_redis_again_after(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(svc=restart_toml(redis_server.url, "fail-closed"))
    ran: list[int] = []
    call = registry.policy("svc.e")(appender(ran, 1))
    assert outcome(call) == "ok"
    redis_server.stop()
    with pytest.raises(QuotaUnavailable) as down:
        call()
    assert isinstance(down.value, QuotaExceeded)
    assert down.value.quota == "svc.q"
    assert [outcome(call) for _ in range(2)] == ["unavailable"] * 2
    assert len(ran) == 1  # never called when refused
    redis_server.start()  # same port, empty
    assert [outcome(call) for _ in range(4)] == ["ok", "ok", "ok", "refused"]
    assert len(ran) == 4  # each admitted call ran exactly once
    assert stored(client, tagged("svc.q", "b")) == 3


def test_fail_open_admits_uncounted_while_redis_is_down_and_counts_again_after(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(svc=restart_toml(redis_server.url, "fail-open"))
    ran: list[int] = []
    call = registry.policy("svc.e")(appender(ran, 1))
    assert outcome(call) == "ok"
    redis_server.stop()
    assert [outcome(call) for _ in range(5)] == ["ok"] * 5  # past the limit: nothing counts
    assert len(ran) == 6
    redis_server.start()
    assert [outcome(call) for _ in range(4)] == ["ok", "ok", "ok", "refused"]
    assert len(ran) == 9
    assert stored(client, tagged("svc.q", "b")) == 3


def test_local_fallback_applies_local_limit_while_redis_is_down_and_redis_again_after(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(svc=restart_toml(redis_server.url, "local"))
    ran: list[int] = []
    call = registry.policy("svc.e")(appender(ran, 1))
    assert outcome(call) == "ok"
    redis_server.stop()
    assert [outcome(call) for _ in range(2)] == ["ok", "ok"]
    with pytest.raises(QuotaExceeded) as refused:
        call()  # the third within the second: over local_limit "2/1s"
    assert not isinstance(refused.value, QuotaUnavailable)
    assert refused.value.quota == "svc.q(local)"
    assert len(ran) == 3
    redis_server.start()  # Redis counts again: its 3/10s, not the local 2/1s
    assert [outcome(call) for _ in range(4)] == ["ok", "ok", "ok", "refused"]
    assert len(ran) == 6
    assert stored(client, tagged("svc.q", "b")) == 3


SCRIPTED = """
[quotas.q]
limit = "3/10s"
storage = "{url}"
max_wait = "0s"
[endpoints.e]
quotas = ["q"]
"""


def test_admission_reloads_the_script_after_script_flush(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(svc=SCRIPTED.format(url=redis_server.url))
    ran: list[int] = []
    call = registry.policy("svc.e")(appender(ran, 1))
    assert [outcome(call) for _ in range(2)] == ["ok", "ok"]
    client.script_flush()
    assert [outcome(call) for _ in range(2)] == ["ok", "refused"]  # the count survived
    assert len(ran) == 3


async def test_async_admission_reloads_the_script_after_script_flush(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(svc=SCRIPTED.format(url=redis_server.url))
    ran: list[int] = []

    @registry.policy("svc.e")
    async def call() -> None:
        ran.append(1)

    await call()
    await call()
    client.script_flush()
    await call()
    with pytest.raises(QuotaExceeded):
        await call()
    assert len(ran) == 3


# -- 9. a server that is not there ----------------------------------------------------------


def unreachable_toml(url: str) -> str:
    return f"""
    [quotas.q]
    limit = "5/1s"
    storage = "{url}?timeout=100ms"
    on_unavailable = "fail-closed"
    [endpoints.e]
    quotas = ["q"]
    """


def test_fail_closed_on_a_closed_port_refuses_fast_and_warns_once(
    registry_of: RegistryOf, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callpolicy")
    url = f"redis://127.0.0.1:{closed_port()}/0"
    registry = registry_of(svc=unreachable_toml(url))
    ran: list[int] = []
    call = registry.policy("svc.e")(appender(ran, 1))
    for _ in range(4):
        started = time.monotonic()
        with pytest.raises(QuotaUnavailable) as down:
            call()
        assert time.monotonic() - started < 1.5
    assert down.value.reason == "unavailable"
    assert ran == []
    warnings = [
        r for r in caplog.records if r.name == "callpolicy" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0].getMessage()


def test_fail_closed_on_a_silent_server_gives_up_after_the_url_timeout(
    registry_of: RegistryOf, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callpolicy")
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        registry = registry_of(svc=unreachable_toml(url))
        call = registry.policy("svc.e")(noop)
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(QuotaUnavailable):
                call()
            assert 0.09 <= time.monotonic() - started < 1.5
    warnings = [
        r for r in caplog.records if r.name == "callpolicy" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1


async def test_async_fail_closed_on_a_closed_port_refuses_fast(registry_of: RegistryOf) -> None:
    registry = registry_of(svc=unreachable_toml(f"redis://127.0.0.1:{closed_port()}/0"))
    ran: list[int] = []

    @registry.policy("svc.e")
    async def call() -> None:
        ran.append(1)

    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(QuotaUnavailable):
            await call()
    assert time.monotonic() - started < 1.5
    assert ran == []


# -- 10. keys ---------------------------------------------------------------------------------


def test_two_hosts_share_one_window_kept_under_a_hash_tag_with_escaped_names_and_a_ttl(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    toml = f"""
    [endpoints.e]
    quotas = [{{ limit = "3/10s", storage = "{redis_server.url}", max_wait = "0s" }}]
    """
    host_a, host_b = registry_of(svc=toml), registry_of(svc=toml)
    assert [q.name for q in host_a.quotas()] == ["svc.e[3/10s]"]
    a = host_a.policy("svc.e")(noop)
    b = host_b.policy("svc.e")(noop)
    assert [outcome(a), outcome(b), outcome(a), outcome(b), outcome(a)] == [
        "ok",
        "ok",
        "ok",
        "refused",
        "refused",
    ]
    name = "svc.e%5B3%2F10s%5D"  # "[", "/" and "]" escaped
    # An unweighted window is one sorted set of calls (a weighted one adds a ":b" total).
    assert sorted(cast("list[str]", client.keys("*"))) == [tagged(name, "a")]
    for key in (tagged(name, "a"),):
        assert 0 < client.pttl(key) <= 11_020  # the 10 s period, its 20 ms guard, 1 s to spare
    # Admissions are stamped with the server's clock (TIME, in microseconds).
    seconds, micros = client.time()
    server_now = seconds * 1_000_000 + micros
    stamps = cast(
        "list[tuple[str, float]]", client.zrange(tagged(name, "a"), 0, -1, withscores=True)
    )
    assert len(stamps) == 3
    assert all(0 <= server_now - at < 5_000_000 for _, at in stamps)


def test_a_url_prefix_namespaces_the_keys(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    def toml(prefix: str) -> str:
        return f"""
        [quotas.q]
        limit = "1/10s"
        storage = "{redis_server.url}?prefix={prefix}"
        max_wait = "0s"
        [endpoints.e]
        quotas = ["q"]
        """

    team_a = registry_of(svc=toml("team-a")).policy("svc.e")(noop)
    team_b = registry_of(svc=toml("team-b")).policy("svc.e")(noop)
    assert [outcome(team_a), outcome(team_b), outcome(team_a)] == ["ok", "ok", "refused"]
    assert sorted(cast("list[str]", client.keys("*"))) == [
        "{team-a:svc.q}:a",
        "{team-b:svc.q}:a",
    ]


# -- 11. key pools --------------------------------------------------------------------------


def test_a_key_pool_in_redis_hands_out_each_member_then_refuses(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = registry_of(
        svc=f"""
        [quotas.k1]
        limit = "1/10s"
        storage = "{redis_server.url}"
        max_wait = "15s"
        [quotas.k2]
        limit = "1/10s"
        storage = "{redis_server.url}"
        max_wait = "15s"
        [quotas.keys]
        pool = ["k1", "k2"]
        [endpoints.keys]
        quotas = ["keys"]
        """
    )

    @registry.policy("svc.keys")
    def call() -> str:
        return pool_key("svc.keys")

    assert [call(), call()] == ["svc.k1", "svc.k2"]
    started = time.monotonic()
    with call_options(blocking=False), pytest.raises(QuotaExceeded) as refused:
        call()
    assert time.monotonic() - started < 1
    assert refused.value.reason == "non-blocking"


# -- bugs ------------------------------------------------------------------------------------


def test_a_fail_closed_refusal_gives_back_what_other_storages_took(
    registry_of: RegistryOf,
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0?timeout=100ms"
    registry = registry_of(
        svc=f"""
        [quotas.mem]
        limit = "2/10s"
        max_wait = "0s"
        [quotas.shared]
        limit = "100/10s"
        storage = "{url}"
        max_wait = "0s"
        [endpoints.both]
        quotas = ["mem", "shared"]
        [endpoints.mem_only]
        quotas = ["mem"]
        """
    )
    ran: list[str] = []
    both = registry.policy("svc.both")(appender(ran, "both"))
    mem_only = registry.policy("svc.mem_only")(appender(ran, "mem_only"))
    assert [outcome(both), outcome(both)] == ["unavailable", "unavailable"]
    # Nothing ran, so the memory quota still holds its two calls.
    assert [outcome(mem_only), outcome(mem_only)] == ["ok", "ok"]
    assert ran == ["mem_only", "mem_only"]


# -- replies lost in flight ------------------------------------------------------------------


def test_an_admission_whose_reply_timed_out_is_given_back_on_the_next_round_trip(
    registry_of: RegistryOf, redis_server: RedisServer, client: redis.Redis
) -> None:
    registry = registry_of(
        svc=f"""
        [quotas.slots]
        concurrency = 1
        storage = "{redis_server.url}?timeout=100ms"
        max_wait = "0s"
        [endpoints.e]
        quotas = ["slots"]
        """
    )
    fn = registry.policy("svc.e")(noop)
    fn()  # the scripts are loaded
    with redis_busy(redis_server.url, 0.4), pytest.raises(QuotaUnavailable):
        fn()  # sent, then timed out: Redis runs the script once free, and takes the slot
    deadline = time.monotonic() + 5
    while client.zcard(tagged("svc.slots", "a")) == 0:  # the late admission took the slot
        assert time.monotonic() < deadline, "the timed-out admission never reached Redis"
        time.sleep(0.001)
    assert client.zcard(tagged("svc.slots", "a")) == 1
    fn()  # given back first thing, so the only slot is free again
    assert client.zcard(tagged("svc.slots", "a")) == 0


def test_repeated_asyncio_run_keeps_no_client_of_a_closed_loop(
    registry_of: RegistryOf, redis_server: RedisServer
) -> None:
    registry = registry_of(
        svc=f'[quotas.q]\nlimit = "1000/1s"\nstorage = "{redis_server.url}"\n'
        '[endpoints.e]\nquotas = ["q"]\n'
    )

    @registry.policy("svc.e")
    async def call() -> None:
        return None

    for _ in range(5):
        asyncio.run(call())
    compiled = registry.runner("svc.e")
    assert compiled.admission is not None
    storage = compiled.admission.candidates[0].groups[0].storage  # type: ignore[attr-defined]
    assert len(storage.loop_scripts.by_loop) == 1  # only the last loop's client is kept
