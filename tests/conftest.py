from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import callpolicy
from callpolicy import FakeClock, Registry, fake_time
from callpolicy._text import Throttled

# The one redis-server starter, shared with the Redis example and the quota benchmark; the
# nginx and HAProxy starters, shared with benchmarks/real_limiters.py.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from limiting_servers import (
    HAProxyLimiter,
    NginxLimiter,
    ServerMissing,
    StartHAProxy,
    StartNginx,
    locate,
)
from local_redis import RedisServer
from local_redis_cluster import LocalCluster, SentinelGroup

WritePolicies = Callable[..., Path]


@pytest.fixture
def write_policies(tmp_path: Path) -> WritePolicies:
    """write_policies(spotify="...toml...", http="...") -> the directory holding them."""

    def write(**files: str) -> Path:
        for service, text in files.items():
            (tmp_path / f"{service}.toml").write_text(textwrap.dedent(text), encoding="utf-8")
        return tmp_path

    return write


@pytest.fixture
def registry_of(write_policies: WritePolicies) -> Callable[..., Registry]:
    """registry_of(svc="...toml...") -> a Registry loaded from those files."""

    def make(**files: str) -> Registry:
        return Registry(write_policies(**files))

    return make


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    with fake_time() as fake:
        yield fake


@pytest.fixture
def default_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """The process-wide registry, put back as it was after the test."""
    registry = callpolicy.default_registry
    saved = dict(vars(registry))
    monkeypatch.delenv("CALLPOLICY_PATH", raising=False)
    yield registry
    generation = registry.generation
    vars(registry).update(saved)
    registry.generation = generation + 1


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster of three masters, shared by the session (tests flush it first)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A primary, a replica and three sentinels, the test's own (a failover changes it)."""
    group = SentinelGroup(tmp_path_factory.mktemp("sentinel"))
    group.start()
    yield group
    group.stop()


def _require(binary: str) -> None:
    """Skip the test when `binary` is missing, or fail when the environment variable CI is
    set: CI (.ci/run) installs nginx and haproxy, so there a missing one is a broken setup."""
    try:
        locate(binary)
    except ServerMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def nginx_limiter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartNginx]:
    """nginx_limiter(rate=10, per="s", burst=0, nodelay=False) -> a started NginxLimiter
    (examples/limiting_servers.py); every one started is stopped when the test ends."""
    _require("nginx")
    started: list[NginxLimiter] = []

    def start(
        rate: int = 10, per: str = "s", burst: int = 0, nodelay: bool = False
    ) -> NginxLimiter:
        workdir = tmp_path_factory.mktemp("nginx")
        server = NginxLimiter(rate, per, burst, nodelay, workdir=workdir)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def haproxy_limiter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartHAProxy]:
    """haproxy_limiter(limit=10, period=1.0) -> a started HAProxyLimiter refusing (429) when
    sc_http_req_rate(0) gt `limit` over `period` seconds; stopped when the test ends."""
    _require("haproxy")
    started: list[HAProxyLimiter] = []

    def start(limit: int = 10, period: float = 1.0) -> HAProxyLimiter:
        workdir = tmp_path_factory.mktemp("haproxy")
        server = HAProxyLimiter(limit, period, workdir=workdir)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture(autouse=True)
def fresh_throttles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every module-level throttle of callpolicy starts empty: what an earlier test said
    within the minute must not silence this test's warnings."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] != "callpolicy" or module is None:
            continue
        for attribute, value in list(vars(module).items()):
            if isinstance(value, Throttled):
                monkeypatch.setattr(module, attribute, Throttled(value.every))
