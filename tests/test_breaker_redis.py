"""Circuit breakers shared through a real Redis server (`redis_server`): two registries, and
two processes, open together; half-open lets `probes` trial calls through in all of them;
an unreachable Redis lets attempts through uncounted, warned once."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from callpolicy import CircuitOpen, Registry
from callpolicy._engine.breaker import CLOSED, HALF_OPEN, OPEN
from callpolicy._engine.redis_breaker import RedisBreaker

if TYPE_CHECKING:
    from conftest import WritePolicies
    from local_redis import RedisServer

POLICY = """
[breakers.api]
window = {window}
min_calls = 4
open_for = "{open_for}"
probes = 2
storage = "{url}?timeout=2s"

[endpoints.get]
breaker = "api"
retry.on_exceptions = ["ConnectionError"]
stop.attempts = 1
"""


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
    folder = write_policies(svc=POLICY.format(window=window, open_for="30s", url=redis_server.url))
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
    folder = write_policies(svc=POLICY.format(window=4, open_for="200ms", url=redis_server.url))
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
    folder = write_policies(svc=POLICY.format(window=4, open_for="100ms", url=redis_server.url))
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
    folder = write_policies(svc=POLICY.format(window=4, open_for="30s", url=redis_server.url))
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
    folder = write_policies(svc=POLICY.format(window=4, open_for="30s", url=url))
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
