"""Throwaway Redis topologies on 127.0.0.1, for the tests: a Cluster of three masters and a
Sentinel group (a primary, a replica, three sentinels). Built on local_redis.RedisServer:
free ports, no persistence, every process stopped by its PID.

    with LocalCluster(Path(tmp)) as cluster:        # storage = cluster.url
        ...
    with SentinelGroup(Path(tmp)) as group:         # storage = group.url
        group.failover()                            # SENTINEL FAILOVER, then wait for it
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import redis
from local_redis import RedisServer, Started, _free_port

SLOTS = 16384
SERVICE = "primary"


class LocalCluster(Started):
    """A Redis Cluster of `size` masters, slots split evenly; with `replicas`, one replica of
    each (nodes[size + i] replicates nodes[i]), which takes over 2 s after its master is lost."""

    def __init__(
        self,
        workdir: Path,
        size: int = 3,
        password: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        replicas: bool = False,
    ) -> None:
        """`password`: every node's (requirepass); `tls`: (ca, cert, key) of certificates(),
        TLS only, between the nodes too."""
        self.size = size
        count = size * 2 if replicas else size
        # The bus port is port + 10000 unless told: past 65535 for a high port.
        self.buses = [_free_port() for _ in range(count)]
        self.nodes = [
            RedisServer(
                workdir / f"node{index}",
                ("--cluster-enabled", "yes", "--cluster-port", str(bus)),
            )
            for index, bus in enumerate(self.buses)
        ]
        self.password, self.tls = password, tls
        for node in self.nodes:
            if replicas:
                node.extra += ("--cluster-node-timeout", "2000")
            if password:
                node.extra += ("--requirepass", password, "--masterauth", password)
            if tls:
                node.extra += (*tls_arguments(*tls, node.port), "--tls-cluster", "yes")

    @property
    def url(self) -> str:
        """Every node, as a storage URL: redis+cluster://127.0.0.1:p1,127.0.0.1:p2,..."""
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        credentials = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"{scheme}://{credentials}{hosts}"

    def client(self, node: int) -> redis.Redis:
        """A plain client of one node (it does not follow MOVED)."""
        return redis.Redis(
            "127.0.0.1",
            self.nodes[node].port,
            password=self.password,
            ssl=self.tls is not None,
            ssl_ca_certs=str(self.tls[0]) if self.tls else None,
            decode_responses=True,
            socket_timeout=5,
        )

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            clients = [self.client(i) for i in range(len(self.nodes))]
            share = SLOTS // self.size
            for index, client in enumerate(clients[: self.size]):
                last = SLOTS - 1 if index == self.size - 1 else (index + 1) * share - 1
                _command(client, "CLUSTER ADDSLOTSRANGE", index * share, last)
            for node, bus in list(zip(self.nodes, self.buses, strict=True))[1:]:
                _command(clients[0], "CLUSTER MEET", "127.0.0.1", node.port, bus)
            for client in clients:
                _until(partial(self._sees_all, client))
            for index, client in enumerate(clients[self.size :]):
                master = _command(clients[index], "CLUSTER MYID")
                _command(client, "CLUSTER REPLICATE", master)
                _until(partial(_in_sync, client))
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise

    def _sees_all(self, client: redis.Redis) -> bool:
        """The node knows every node, and every slot is served."""
        text = _command(client, "CLUSTER INFO")
        lines = (
            text
            if isinstance(text, dict)
            else dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)
        )
        info = {key: str(value).strip() for key, value in lines.items()}
        return (
            info["cluster_state"] == "ok"
            and int(info["cluster_known_nodes"]) == len(self.nodes)
            and int(info["cluster_slots_ok"]) == SLOTS
        )

    def owner(self, key: str) -> int:
        """The index of the master holding `key`'s slot (as started)."""
        client = self.client(0)
        try:
            slot = int(_command(client, "CLUSTER KEYSLOT", key))
        finally:
            client.close()
        return min(slot // (SLOTS // self.size), self.size - 1)

    def flush(self) -> None:
        for index in range(self.size):
            client = self.client(index)
            client.flushall()
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class Sentinel(RedisServer):
    """`redis-server <conf> --sentinel` watching one primary, quick to call it down."""

    def __init__(self, workdir: Path, primary_port: int, password: str | None = None) -> None:
        super().__init__(workdir)
        self.primary_port = primary_port
        self.password = password

    def command(self) -> list[str]:
        conf = self.workdir / "sentinel.conf"  # sentinel rewrites it: one per sentinel
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
            + (f"sentinel auth-pass {SERVICE} {self.password}\n" if self.password else ""),
            encoding="utf-8",
        )
        return [self.binary, str(conf), "--sentinel"]


class SentinelGroup(Started):
    """A primary, one replica and three sentinels (quorum 2) on loopback ports."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        """`password`: the primary's and the replica's (the sentinels ask without one)."""
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        self.servers = [RedisServer(workdir / "a", auth)]
        self.servers.append(
            RedisServer(
                workdir / "b", ("--replicaof", "127.0.0.1", str(self.servers[0].port), *auth)
            )
        )
        self.sentinels = [
            Sentinel(workdir / f"sentinel{i}", self.servers[0].port, password) for i in range(3)
        ]
        self.password = password
        self.promoted_at = self.demoted_at = 0.0  # when the last failover did each

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        credentials = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{credentials}{hosts}/{SERVICE}/0"

    def ask(self) -> redis.Redis:
        return redis.Redis(port=self.sentinels[0].port, decode_responses=True, socket_timeout=5)

    def primary(self) -> int:
        """The port of the primary, as the sentinels say."""
        client = self.ask()
        try:
            _, port = _command(client, "SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE)
        finally:
            client.close()
        return int(port)

    def start(self) -> None:
        try:
            for server in [*self.servers, *self.sentinels]:
                server.start()
            self._until_ready()
        except BaseException:
            self.stop()
            raise

    def failover(self) -> int:
        """Promote the replica (SENTINEL FAILOVER) and wait until it is the primary and the
        old one its replica; the new primary's port."""
        old = self.primary()
        client = self.ask()
        try:
            _command(client, "SENTINEL FAILOVER", SERVICE)
        finally:
            client.close()
        _until(lambda: self.primary() != old, 30)
        self.promoted_at = time.monotonic()
        new = self.primary()
        demoted = redis.Redis(
            port=old, password=self.password, decode_responses=True, socket_timeout=5
        )
        _until(lambda: demoted.info("replication")["role"] == "slave", 30)
        self.demoted_at = time.monotonic()  # from now on, writes reach the new primary only
        demoted.close()
        return new

    def kill_primary(self) -> int:
        """Stop the primary's process and wait until the sentinels promote the replica; the
        new primary's port."""
        old = self.primary()
        next(s for s in self.servers if s.port == old).stop()
        _until(lambda: self.primary() != old, 30)
        self.promoted_at = time.monotonic()
        return self.primary()

    def _until_ready(self) -> None:
        """Every sentinel sees the replica in sync and the two other sentinels."""
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, decode_responses=True, socket_timeout=5)

            def ready(c: redis.Redis = client) -> bool:
                master = cast("dict[str, Any]", c.sentinel_master(SERVICE))
                replicas = c.sentinel_slaves(SERVICE)
                return int(master["num-other-sentinels"]) == 2 and any(
                    r.get("master-link-status") == "ok" for r in replicas
                )

            _until(ready, 30)
            client.close()

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()


def certificates(workdir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate of 127.0.0.1 it signed (openssl): (ca, cert, key).
    A client trusts the CA when SSL_CERT_FILE names it."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca, ca_key = workdir / "ca.crt", workdir / "ca.key"
    cert, key, request = workdir / "server.crt", workdir / "server.key", workdir / "server.csr"
    names = workdir / "names.ext"
    # The extensions a strict verifier asks for (Python 3.13 sets VERIFY_X509_STRICT): a CA
    # that says it signs certificates, a certificate naming its issuer's key and its uses.
    names.write_text(
        "subjectAltName = IP:127.0.0.1\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth, clientAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n",
        encoding="utf-8",
    )
    steps = [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-CA -keyout {ca_key} -out {ca} "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout {key} -out {request}",
        "x509 -req -in {request} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 1 "
        "-extfile {names} -out {cert}",
    ]
    paths = {"ca": ca, "ca_key": ca_key, "cert": cert, "key": key, "request": request}
    for step in steps:
        words = [word.format(names=names, **paths) for word in step.split()]
        subprocess.run(["openssl", *words], check=True, capture_output=True, timeout=60)
    return ca, cert, key


def tls_arguments(ca: Path, cert: Path, key: Path, port: int) -> tuple[str, ...]:
    """redis-server arguments: TLS only, on `port` (the plain port closed)."""
    return (
        *("--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"),
        *("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)),
    )


def _in_sync(replica: redis.Redis) -> bool:
    info: dict[str, Any] = replica.info("replication")
    return info.get("master_link_status") == "up"


def _command(client: redis.Redis, *args: object) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _until(done: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready within {seconds} s")
        time.sleep(0.05)
