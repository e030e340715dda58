"""Circuit breakers shared through a real Redis server (`redis_server`): two registries, and
two processes, open together; half-open lets `probes` trial calls through in all of them;
an unreachable Redis lets attempts through uncounted, warned once, and is not asked again
for DOWN_FOR seconds; ratios are exact thousandths; a half-open state whose trial calls never
end (a process killed mid-call) opens again; evicted keys start afresh."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from callpolicy import CircuitOpen, Registry
from callpolicy._engine.breaker import CLOSED, HALF_OPEN, OPEN
from callpolicy._engine.redis_breaker import DOWN_FOR, UNCOUNTED, RedisBreaker

if TYPE_CHECKING:
    from conftest import WritePolicies
    from local_redis import RedisServer

POLICY = """
[breakers.api]
window = {window}
min_calls = 4
open_for = "{open_for}"
probes = 2
slow_call = "{slow_call}"
storage = "{url}?timeout=2s"

[endpoints.get]
breaker = "api"
retry.on_exceptions = ["ConnectionError"]
stop.attempts = 1
"""


def policy(window: object, open_for: str, url: str, slow_call: str = "60s") -> str:
    return POLICY.format(window=window, open_for=open_for, url=url, slow_call=slow_call)


def down() -> None:
    raise ConnectionError("refused")


def ok() -> str:
    return "ok"


def breaker_of(registry: Registry) -> RedisBreaker:
    circuit = registry.runner("svc.get").breaker
    assert circuit is not None and isinstance(circuit.breaker, RedisBreaker)
    return circuit.breaker


@pytest.mark.parametrize("window", ["4", '"60s"'])
def test_two_registries_open_together(
    write_policies: WritePolicies, redis_server: RedisServer, window: str
) -> None:
    folder = write_policies(svc=policy(window, "30s", redis_server.url))
    first, second = Registry(folder), Registry(folder)
    failing = first.policy("svc.get")(down)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            failing()
    calls = 0

    def counted() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    with pytest.raises(CircuitOpen) as raised:
        second.policy("svc.get")(counted)()
    assert calls == 0
    assert 29.0 < raised.value.retry_in <= 30.0
    assert breaker_of(second).state == OPEN


def test_half_open_admits_probes_trial_calls_across_registries_then_closes(
    write_policies: WritePolicies, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_policies(svc=policy(4, "200ms", redis_server.url))
    first, second = Registry(folder), Registry(folder)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            first.policy("svc.get")(down)()
    time.sleep(0.3)  # past open_for, on the Redis server's clock
    a, b = breaker_of(first), breaker_of(second)
    now = time.monotonic()
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        one, two = a.enter(now + 1), b.enter(now + 1)  # (+1: past a's own probe time)
        assert one is not None and two is not None
        assert a.enter(now + 1) is None and b.enter(now + 1) is None
        assert b.state == HALF_OPEN
        a.record(one, 0, now + 1)
        b.record(two, 0, now + 1)
    assert b.state == CLOSED
    assert second.policy("svc.get")(ok)() == "ok"
    lines = [r.getMessage() for r in caplog.records if r.name == "callpolicy"]
    assert lines == [
        "circuit breaker svc.api open: 4 of 4 calls failed (100% >= failure_ratio 0.5) over the "
        "last 4 calls; probing again in 200ms",
        "circuit breaker svc.api half-open: open_for 200ms passed; letting 2 trial calls",
        "circuit breaker svc.api closed: 2 trial calls succeeded",
    ]


def test_a_cancelled_trial_call_is_given_back_in_redis(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    folder = write_policies(svc=policy(4, "100ms", redis_server.url))
    registry = Registry(folder)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            registry.policy("svc.get")(down)()
    time.sleep(0.2)
    breaker = breaker_of(registry)
    now = time.monotonic() + 1
    first, second = breaker.enter(now), breaker.enter(now)
    assert first is not None and second is not None and breaker.enter(now) is None
    breaker.cancel(first)
    assert breaker.enter(now) is not None


def test_another_process_sees_the_breaker_open(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    folder = write_policies(svc=policy(4, "30s", redis_server.url))
    registry = Registry(folder)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            registry.policy("svc.get")(down)()
    script = (
        "import sys, callpolicy\n"
        "get = callpolicy.Registry(sys.argv[1]).policy('svc.get')(lambda: print('called'))\n"
        "try:\n    get()\nexcept callpolicy.CircuitOpen as e:\n    print(type(e).__name__, e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith(
        "CircuitOpen svc.get: circuit breaker svc.api is open and probes again in 2"
    ), done.stdout + done.stderr
    assert "called" not in done.stdout


def test_an_unreachable_redis_lets_attempts_through_uncounted_warning_once(
    write_policies: WritePolicies, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    folder = write_policies(svc=policy(4, "30s", url))
    registry = Registry(folder)
    get = registry.policy("svc.get")(down)
    with caplog.at_level(logging.WARNING, logger="callpolicy"):
        for _ in range(6):
            with pytest.raises(ConnectionError):
                get()  # never CircuitOpen: nothing is counted
    lines = [r.getMessage() for r in caplog.records if "circuit breaker" in r.getMessage()]
    assert len(lines) == 1
    prefix = f"circuit breaker svc.api: storage redis://127.0.0.1:{port}/0 unreachable or failing ("
    assert lines[0].startswith(prefix), lines
    assert lines[0].endswith("); letting attempts through uncounted (said at most once a minute)")


def test_the_keys_share_one_hash_tag(redis_server: RedisServer, tmp_path: Path) -> None:
    from callpolicy import Breaker  # noqa: PLC0415
    from callpolicy._config.storage import parse_storage  # noqa: PLC0415

    breaker = RedisBreaker(Breaker("svc.api", storage=parse_storage(redis_server.url)))
    assert breaker.keys == [
        "{callpolicy:breaker}:svc.api",
        "{callpolicy:breaker}:svc.api:window:100",
    ]


def fail_times(registry: Registry, n: int) -> None:
    for _ in range(n):
        with pytest.raises(ConnectionError):
            registry.policy("svc.get")(down)()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "callpolicy"]


def test_ratios_are_exact_thousandths(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    # 7 of 100 calls reach 0.07 exactly (as floats, 0.07 * 100 is 7.000000000000001).
    text = policy(100, "30s", redis_server.url).replace(
        "min_calls = 4", "min_calls = 100\nfailure_ratio = 0.07"
    )
    registry = Registry(write_policies(svc=text))
    for _ in range(93):
        registry.policy("svc.get")(ok)()
    fail_times(registry, 7)
    with pytest.raises(CircuitOpen):
        registry.policy("svc.get")(ok)()


def test_a_count_window_smaller_than_min_calls_opens_when_full(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    text = policy(10, "30s", redis_server.url).replace("min_calls = 4\n", "")  # default 20
    registry = Registry(write_policies(svc=text))
    fail_times(registry, 10)
    with pytest.raises(CircuitOpen):
        registry.policy("svc.get")(ok)()


TRIAL_THEN_HANG = """
import sys, time, callpolicy
def hang():
    print("trial", flush=True)
    time.sleep(60)
callpolicy.Registry(sys.argv[1]).policy("svc.get")(hang)()
"""


def test_a_process_killed_mid_trial_opens_the_breaker_again_after_the_lease(
    write_policies: WritePolicies, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    text = policy(4, "300ms", redis_server.url, slow_call="1s").replace("probes = 2", "probes = 1")
    folder = write_policies(svc=text)
    registry = Registry(folder)
    fail_times(registry, 4)
    time.sleep(0.4)  # past open_for: the child takes the only trial call
    child = subprocess.Popen(
        [sys.executable, "-c", TRIAL_THEN_HANG, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "trial\n"
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    client = redis.Redis.from_url(redis_server.url)
    state_key = breaker_of(registry).keys[0]
    client.pexpire(state_key, 60_000)
    with pytest.raises(CircuitOpen, match="its trial calls all taken"):
        registry.policy("svc.get")(ok)()
    assert client.pttl(state_key) > 3_600_000  # ENTER keeps the keys for a day
    time.sleep(1.1)  # past the lease, max(open_for, slow_call) = 1s
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        with pytest.raises(CircuitOpen) as raised:
            registry.policy("svc.get")(ok)()
        assert 0.29 < raised.value.retry_in < 0.31  # a new open_for from the reopening
        time.sleep(0.4)
        assert registry.policy("svc.get")(ok)() == "ok"
    assert messages(caplog) == [
        "circuit breaker svc.api open: the trial calls did not end within 1s; probing again "
        "in 300ms",
        "circuit breaker svc.api half-open: open_for 300ms passed; letting 1 trial call",
        "circuit breaker svc.api closed: 1 trial call succeeded",
    ]
    client.close()


def test_an_outcome_after_the_lease_opens_the_breaker_again(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    folder = write_policies(svc=policy(4, "100ms", redis_server.url, slow_call="200ms"))
    registry = Registry(folder)
    fail_times(registry, 4)
    time.sleep(0.2)
    breaker, now = breaker_of(registry), time.monotonic() + 1
    trial = breaker.enter(now)
    assert trial is not None and breaker.state == HALF_OPEN
    time.sleep(0.3)
    breaker.record(trial, 0, now)  # too late: the half-open state lapsed
    assert breaker.state == OPEN and breaker.generation == trial + 1


def test_a_trial_call_is_given_back_whatever_the_local_view_and_old_replies_are_ignored(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    folder = write_policies(svc=policy(4, "100ms", redis_server.url))
    registry = Registry(folder)
    fail_times(registry, 4)
    time.sleep(0.2)
    breaker, now = breaker_of(registry), time.monotonic() + 1
    first, second = breaker.enter(now), breaker.enter(now)
    assert first is not None and second is not None and breaker.enter(now) is None
    breaker._told(1, first - 1, 30_000, now)  # a reply about an older generation
    assert breaker.state == HALF_OPEN and breaker.generation == first
    breaker.state = CLOSED  # as another thread's reply may leave it
    breaker.cancel(first)
    breaker.state = HALF_OPEN
    assert breaker.enter(now) == first  # the trial call given back is taken again


def test_an_evicted_count_window_restarts_its_counts(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    registry = Registry(write_policies(svc=policy(4, "30s", redis_server.url)))
    fail_times(registry, 1)
    registry.policy("svc.get")(ok)()
    breaker = breaker_of(registry)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.delete(breaker.keys[1])  # evicted alone, the state hash kept
    for _ in range(8):
        registry.policy("svc.get")(ok)()
    state = client.hgetall(breaker.keys[0])
    assert (state["calls"], state["failures"], state["slow"]) == ("4", "0", "0")
    assert client.get(breaker.keys[1]) == "0000"
    client.close()


def test_an_evicted_state_starts_afresh_at_a_higher_generation(
    write_policies: WritePolicies, redis_server: RedisServer
) -> None:
    registry = Registry(write_policies(svc=policy('"60s"', "30s", redis_server.url)))
    for _ in range(3):
        registry.policy("svc.get")(ok)()
    breaker = breaker_of(registry)
    before = breaker.generation
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.delete(breaker.keys[0])  # evicted, the window's buckets kept
    registry.policy("svc.get")(ok)()
    state = client.hgetall(breaker.keys[0])
    assert (state["calls"], state["failures"]) == ("1", "0")
    assert breaker.generation == int(state["gen"]) > before
    fail_times(registry, 3)  # 3 of 4: the window counts again
    assert breaker.state == OPEN
    client.close()


def test_an_unreachable_redis_is_not_asked_again_for_a_while(
    write_policies: WritePolicies, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = Registry(write_policies(svc=policy(4, "30s", f"redis://127.0.0.1:{port}/0")))
    breaker = breaker_of(registry)
    asked = []
    script = breaker.scripts[0]

    def counted(keys: list[str], args: list[object]) -> object:
        asked.append(1)
        return script(keys, args)

    monkeypatch.setattr(breaker, "scripts", (counted, *breaker.scripts[1:]))
    assert breaker.enter(100.0) == UNCOUNTED and len(asked) == 1
    assert breaker.enter(100.0 + DOWN_FOR - 0.1) == UNCOUNTED and len(asked) == 1
    assert breaker.enter(100.0 + DOWN_FOR) == UNCOUNTED and len(asked) == 2
