"""Real nginx and HAProxy rate limiters count the way /work/shared/notes/server-limiters.md says.

These check reality, not callpolicy: they pin down what the servers the quota algorithms are
designed against really do (examples/limiting_servers.py starts them; the fixtures are in
conftest.py). Requests go out at set offsets from the first one; each assertion message
carries the offsets (client side) and the server's own log.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from limiting_servers import (
    HAProxyLimiter,
    LimitingServer,
    NginxLimiter,
    ServerFailed,
    StartHAProxy,
    StartNginx,
)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.trust_env = False  # no proxy from the environment: 127.0.0.1 only
        yield client


class Timeline:
    """Requests sent at offsets (seconds) from the first one, remembering what came back."""

    def __init__(self, session: requests.Session) -> None:
        self.session = session
        self.start: float | None = None
        self.sent: list[tuple[float, int]] = []  # (offset actually sent at, status)

    def send(self, url: str, offset: float = 0.0) -> int:
        """GET `url` at `offset` s after the first request (at once if that is past)."""
        if self.start is None:
            self.start = time.monotonic()
        delay = self.start + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        at = time.monotonic() - self.start
        status = self.session.get(url, timeout=5).status_code
        self.sent.append((round(at, 4), status))
        return status

    def statuses(self) -> list[int]:
        return [status for _, status in self.sent]


def seen(timeline: Timeline, *servers: LimitingServer) -> str:
    """What the client sent and what each server logged (ms after its first entry)."""
    lines = ["client (offset s, status): " + ", ".join(f"{a:.3f} {s}" for a, s in timeline.sent)]
    for server in servers:
        entries = server.entries(at_least=1)
        first = entries[0].at if entries else 0.0
        logged = ", ".join(f"{(e.at - first) * 1000:.0f}ms {e.status}" for e in entries)
        lines.append(f"{server.name} log: {logged}")
    return "\n".join(lines)


# -- nginx limit_req ---------------------------------------------------------------------------
@pytest.mark.parametrize(("rate", "per"), [(10, "s"), (600, "m")], ids=["10r/s", "600r/m"])
def test_nginx_burst_0_refuses_a_request_30ms_after_the_first_and_accepts_one_150ms_after(
    nginx_limiter: StartNginx, session: requests.Session, rate: int, per: str
) -> None:
    server = nginx_limiter(rate=rate, per=per)
    timeline = Timeline(session)
    timeline.send(server.url, 0.0)
    timeline.send(server.url, 0.030)
    timeline.send(server.url, 0.150)
    assert timeline.statuses() == [200, 429, 200], seen(timeline, server)
    assert server.counts(at_least=3).ok == 2


def test_nginx_refused_requests_do_not_count(
    nginx_limiter: StartNginx, session: requests.Session
) -> None:
    """burst=0 at 10r/s: three refused requests after an accepted one; 125 ms after the
    accepted one (55 ms after the last refused), a request is accepted."""
    server = nginx_limiter(rate=10)
    timeline = Timeline(session)
    for offset in (0.0, 0.020, 0.045, 0.070, 0.125):
        timeline.send(server.url, offset)
    assert timeline.statuses() == [200, 429, 429, 429, 200], seen(timeline, server)
    counts = server.counts(at_least=5)
    assert (counts.ok, counts.refused, counts.other) == (2, 3, 0)


def test_nginx_burst_5_nodelay_admits_6_at_once_refuses_the_7th_then_one_per_100ms(
    nginx_limiter: StartNginx, session: requests.Session
) -> None:
    server = nginx_limiter(rate=10, burst=5, nodelay=True)
    timeline = Timeline(session)
    for _ in range(7):
        timeline.send(server.url)
    timeline.send(server.url, 0.150)  # 100 ms of excess drained: one more fits...
    timeline.send(server.url, 0.150)  # ...and only one
    assert timeline.statuses() == [200] * 6 + [429, 200, 429], seen(timeline, server)
    counts = server.counts(at_least=9)
    assert (counts.ok, counts.refused) == (7, 2)


# -- HAProxy stick table -----------------------------------------------------------------------
def test_haproxy_gt_10_per_second_passes_10_quick_requests_and_refuses_the_11th(
    haproxy_limiter: StartHAProxy, session: requests.Session
) -> None:
    server = haproxy_limiter(limit=10, period=1.0)
    timeline = Timeline(session)
    for _ in range(12):
        timeline.send(server.url)
    assert timeline.statuses() == [200] * 10 + [429, 429], seen(timeline, server)
    counts = server.counts(at_least=12)
    assert (counts.ok, counts.refused, counts.other) == (10, 2, 0)


def test_haproxy_refused_requests_count(
    haproxy_limiter: StartHAProxy, session: requests.Session
) -> None:
    """Two servers, one timeline: both get 10 quick requests (accepted); `hammered` also gets
    10 more at once (refused). 1.3 s after the first, in the next period, the rate is this
    period's count plus 70 % of the previous one's: 1 + 0.7 x 10 = 8 for `calm` (accepted),
    1 + 0.7 x 20 = 15 for `hammered` (refused): its refusals were counted."""
    calm = haproxy_limiter(limit=10, period=1.0)
    hammered = haproxy_limiter(limit=10, period=1.0)
    timeline = Timeline(session)
    for _ in range(10):
        timeline.send(calm.url)
        timeline.send(hammered.url)
    for _ in range(10):
        timeline.send(hammered.url)
    late_calm = timeline.send(calm.url, 1.3)
    late_hammered = timeline.send(hammered.url, 1.3)
    early = timeline.statuses()[:30]
    assert early == [200] * 20 + [429] * 10, seen(timeline, calm, hammered)
    assert (late_calm, late_hammered) == (200, 429), seen(timeline, calm, hammered)
    assert hammered.counts(at_least=21).refused == 11


# -- the servers themselves --------------------------------------------------------------------
def test_servers_stop_by_pid_free_their_port_and_keep_their_log(
    nginx_limiter: StartNginx, haproxy_limiter: StartHAProxy, session: requests.Session
) -> None:
    for server in (nginx_limiter(), haproxy_limiter()):
        assert session.get(server.url, timeout=5).status_code == 200
        # HAProxy writes its log line after answering: wait for it, or SIGTERM may come first
        assert server.counts(at_least=1).ok == 1
        pid = server.pid
        assert pid is not None
        server.close()
        assert server.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # our child, reaped: gone
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url, timeout=1)
        assert server.counts().ok == 1
        server.close()  # twice is fine


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    fake = tmp_path / "fake-nginx"
    fake.write_text("#!/bin/sh\necho 'nginx: [emerg] something is wrong' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    server = NginxLimiter(workdir=tmp_path / "work", binary=str(fake))
    with pytest.raises(ServerFailed, match=r"exited at once[\s\S]*something is wrong"):
        server.start()
    assert server.pid is None


def test_servers_without_a_workdir_remove_their_own(
    nginx_limiter: StartNginx, haproxy_limiter: StartHAProxy, session: requests.Session
) -> None:
    # The fixtures are asked for only to skip (or fail in CI) when a binary is missing.
    for server in (NginxLimiter(), HAProxyLimiter()):
        with server:
            assert session.get(server.url, timeout=5).status_code == 200
            assert server.workdir.is_dir()
        assert not server.workdir.exists()
        assert server.counts().ok == 1
