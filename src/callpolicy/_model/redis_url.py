"""The parts of a Redis storage URL, by topology:

    redis://[user:password@]host:port/db                          one server (or a managed
                                                                   primary's endpoint)
    redis+sentinel://[user:password@]host:port[,host:port]/service[/db]   a Sentinel group's
                                                                   primary (the hosts are
                                                                   the sentinels)
    redis+cluster://[user:password@]host:port[,host:port]          a Cluster (any nodes)

"rediss" instead of "redis" for TLS. The credentials are the data nodes' (a Sentinel group's
sentinels are asked without them). Reasons given for a bad URL never hold the password.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import attrs

SERVER, SENTINEL, CLUSTER = "server", "sentinel", "cluster"
TOPOLOGIES = {"": SERVER, "+sentinel": SENTINEL, "+cluster": CLUSTER}
REDIS_SCHEMES = tuple(f"{base}{kind}" for kind in TOPOLOGIES for base in ("redis", "rediss"))
DEFAULT_PORTS = {SERVER: 6379, SENTINEL: 26379, CLUSTER: 6379}
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/,]+)(?::(\d{1,5}))?")
_SERVICE = re.compile(r"[^\s/]{1,200}")


@attrs.frozen
class RedisAddress:
    """Where a Redis storage is: its topology, hosts, and what every connection uses."""

    topology: str
    tls: bool
    hosts: tuple[tuple[str, int], ...]
    username: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    service: str = ""  # a Sentinel group's primary, by name
    db: int = 0


def redis_address(url: str) -> RedisAddress:
    """The parts of a Redis storage URL (without its query); ValueError with the reason."""
    scheme, sep, rest = url.partition("://")
    base, plus, kind = scheme.partition("+")
    topology = TOPOLOGIES.get(plus + kind)
    if not sep or base not in ("redis", "rediss") or topology is None:
        raise ValueError("unknown scheme")
    credentials, _, located = rest.rpartition("@")
    netloc, _, path = located.partition("/")
    hosts = tuple(_host(host, DEFAULT_PORTS[topology]) for host in netloc.split(","))
    if topology == SERVER and len(hosts) > 1:
        raise ValueError("several hosts: use redis+sentinel:// or redis+cluster://")
    user, _, password = credentials.partition(":")
    service, db = _path(topology, path)
    return RedisAddress(
        topology,
        base == "rediss",
        hosts,
        unquote(user) or None,
        unquote(password) or None,
        service,
        db,
    )


def _host(text: str, default_port: int) -> tuple[str, int]:
    match = _HOST.fullmatch(text)
    if match is None:
        raise ValueError("no host" if not text else "not a valid host:port")
    port = int(match.group(2) or default_port)
    if not 0 < port < 65536:
        raise ValueError("not a valid port")
    return match.group(1).strip("[]"), port


def _path(topology: str, path: str) -> tuple[str, int]:
    """(service, db) from the URL's path."""
    parts = [part for part in path.split("/") if part] if path else []
    if topology == SENTINEL:
        if not parts or not _SERVICE.fullmatch(unquote(parts[0])):
            raise ValueError("no service name: write redis+sentinel://host:port/service")
        service, parts = unquote(parts[0]), parts[1:]
    else:
        service = ""
    if len(parts) > 1 or (parts and not (parts[0].isascii() and parts[0].isdigit())):
        raise ValueError("the path must be a database number")
    db = int(parts[0]) if parts else 0
    if topology == CLUSTER and db != 0:
        raise ValueError("a Cluster has database 0 only")
    return service, db
