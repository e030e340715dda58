"""TLS and passwords with every topology, against real servers: a server (`rediss://`), a
Cluster (`rediss+cluster://`) and a Sentinel group (`redis+sentinel://`) that require a
password. The CA is trusted through SSL_CERT_FILE, as a user of a private CA would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from local_redis import RedisServer
from local_redis_cluster import LocalCluster, SentinelGroup, certificates, tls_arguments
from test_redis_failover import policy_file
from test_redis_quotas import noop, outcome, tagged

from callpolicy import QuotaUnavailable, Registry

RegistryOf = Callable[..., Registry]
PASSWORD = "pass-789-secret"
KEY = tagged("svc.q", "a")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def trusted(tls_files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))


async def one() -> None:
    await asyncio.sleep(0)


def sync_and_async(registry: Registry) -> list[str]:
    """Two calls, then two awaited calls, of the policy svc.e (limit 3): their outcomes."""
    policy = registry.policy("svc.e")
    found = [outcome(policy(noop)), outcome(policy(noop))]

    async def twice() -> list[str]:
        call = policy(one)
        seen = []
        for _ in range(2):
            try:
                await call()
                seen.append("ok")
            except QuotaUnavailable:
                seen.append("unavailable")
            except Exception:
                seen.append("refused")
        return seen

    return found + asyncio.run(twice())


def test_a_tls_server_with_a_password_counts_sync_and_async(
    registry_of: RegistryOf,
    tls_files: tuple[Path, Path, Path],
    trusted: None,
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "tls")
    server.extra = (*tls_arguments(*tls_files, server.port), "--requirepass", PASSWORD)
    server.start()
    try:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0"
        assert sync_and_async(registry_of(svc=policy_file(url, limit="3/1min"))) == [
            "ok",
            "ok",
            "ok",
            "refused",
        ]
        plain = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"  # no TLS: refused by the server
        with pytest.raises(QuotaUnavailable) as down:
            registry_of(svc=policy_file(plain)).policy("svc.e")(noop)()
        assert isinstance(down.value.__cause__, redis.exceptions.ConnectionError)
        assert PASSWORD not in str(down.value)
    finally:
        server.stop()


@pytest.fixture
def secure_cluster(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], trusted: None
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "cluster", password=PASSWORD, tls=tls_files)
    cluster.start()
    yield cluster
    cluster.stop()


def test_a_tls_cluster_with_a_password_counts_sync_and_async(
    registry_of: RegistryOf, secure_cluster: LocalCluster
) -> None:
    assert secure_cluster.url.startswith(f"rediss+cluster://:{PASSWORD}@")
    registry = registry_of(svc=policy_file(secure_cluster.url, limit="3/1min"))
    assert sync_and_async(registry) == ["ok", "ok", "ok", "refused"]
    client = secure_cluster.client(secure_cluster.owner(KEY))
    try:
        assert client.zcard(KEY) == 3
    finally:
        client.close()
    wrong = secure_cluster.url.replace(PASSWORD, "not-the-password")
    with pytest.raises(QuotaUnavailable) as down:
        registry_of(svc=policy_file(wrong)).policy("svc.e")(noop)()
    assert "not-the-password" not in str(down.value)


@pytest.fixture
def guarded_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "sentinel", password=PASSWORD)
    group.start()
    yield group
    group.stop()


def test_a_sentinel_group_with_a_password_counts_and_a_wrong_one_fails_closed(
    registry_of: RegistryOf, guarded_group: SentinelGroup
) -> None:
    registry = registry_of(svc=policy_file(guarded_group.url, limit="3/1min"))
    assert sync_and_async(registry) == ["ok", "ok", "ok", "refused"]
    wrong = guarded_group.url.replace(PASSWORD, "not-the-password")
    with pytest.raises(QuotaUnavailable) as down:
        registry_of(svc=policy_file(wrong)).policy("svc.e")(noop)()
    assert isinstance(down.value.__cause__, redis.exceptions.AuthenticationError)
    assert "not-the-password" not in str(down.value)
