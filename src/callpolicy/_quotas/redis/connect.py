"""Redis clients of a storage URL (see _model/redis_url.py): one server, a Sentinel group's
primary or a Cluster; one sync client per storage, one async client per event loop (a
redis.asyncio client belongs to the loop that made them).

Each keeps at most POOL_SIZE connections per server (per node of a Cluster); a call finding
them all busy waits up to POOL_WAIT for one (a busy server is not an unreachable one).

A failover: a primary demoted to a replica answers writes with READONLY. The scripts here
then drop every connection of the pool, so the next call connects again: through a DNS
endpoint (a managed Redis's) it reaches the new primary; through Sentinel, the primary is
asked again (redis-py's Sentinel pool does this by itself too). A Cluster's client follows
MOVED replies and refreshes its map of slots by itself.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from urllib.parse import quote

from callpolicy._forks import renew_after_fork
from callpolicy._model import CLUSTER, SENTINEL, RedisAddress, Storage, redis_address

try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.retry
    import redis.asyncio.sentinel
    import redis.backoff
    import redis.cluster
    import redis.retry
    import redis.sentinel
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

POOL_SIZE = 64  # connections to one server per process (per event loop for async)
POOL_WAIT = 10.0  # the most a call waits for a free connection
_untyped: Any = redis  # parts of redis-py that are not typed
# A Cluster's client does not send a script again by itself: redis-py would after a read
# timeout (the script may have run: twice, a give-back gives back twice). A lost node fails
# the call (as on_unavailable says) and the client asks for a new map of slots; MOVED and
# ASK are still followed.
CLUSTER_RETRIES = 0


class SyncClient:
    """The storage's sync client, made on first use (a Cluster's client asks a node for the
    map of slots as it is made: a Cluster down must not fail the loading of policies)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.client: Any = None
        self._lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self.client is None:
                self.client = sync_client(self.storage)
            return self.client


class SyncScript:
    """One Lua script on the storage's sync client: script(keys=..., args=...)."""

    __slots__ = ("owner", "script", "text")

    def __init__(self, owner: SyncClient, text: str) -> None:
        self.owner = owner
        self.text = text
        self.script: Any = None

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        script = self.script
        if script is None:
            script = self.script = self.owner.get().register_script(self.text)
        try:
            return script(keys=keys, args=args)
        except redis.exceptions.ReadOnlyError:
            client = self.owner.client
            if not isinstance(client, redis.cluster.RedisCluster):
                client.connection_pool.disconnect()  # the next call connects again
            raise


class AsyncScript:
    """One Lua script on an event loop's client: await script(keys=..., args=...)."""

    __slots__ = ("client", "gate", "script")

    def __init__(self, client: Any, text: str, gate: ClusterGate | None) -> None:
        self.client = client
        self.script = client.register_script(text)
        self.gate = gate

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        if self.gate is not None:
            return await self.gate.run(self.script, keys, args)
        try:
            return await self.script(keys=keys, args=args)
        except redis.exceptions.ReadOnlyError:
            await self.client.connection_pool.disconnect()  # the next call connects again
            raise


class ClusterGate:
    """The calls of a Cluster's async client, which has no waiting pool: at most POOL_SIZE at
    once (so no node needs more connections), and none before it has its map of slots.

    redis-py (8.1) learning the map while calls run may close a connection a call is using,
    which then fails with AttributeError/TypeError on None: that is a lost connection."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.bound = asyncio.Semaphore(POOL_SIZE)
        self.ready = asyncio.Lock()
        self.known = False

    async def run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        async with self.bound:
            if not self.known:
                async with self.ready:
                    if not self.known:
                        await self.client.initialize()
                        self.known = True
            try:
                return await script(keys=keys, args=args)
            except (AttributeError, TypeError) as error:
                if "NoneType" not in str(error):
                    raise
                lost = redis.exceptions.ConnectionError("connection closed under the call")
                raise lost from error


def sync_scripts(storage: Storage, *texts: str) -> tuple[SyncScript, ...]:
    owner = SyncClient(storage)
    return tuple(SyncScript(owner, text) for text in texts)


def async_scripts(storage: Storage, *texts: str) -> tuple[AsyncScript, ...]:
    """In the running event loop."""
    client = async_client(storage)
    cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
    gate = ClusterGate(client) if cluster else None
    return tuple(AsyncScript(client, text, gate) for text in texts)


class LoopScripts:
    """Scripts on a client of the running event loop (a redis.asyncio client belongs to the
    loop that made it): one set per loop, a closed loop's dropped (its client holds it)."""

    def __init__(self, storage: Storage, *texts: str) -> None:
        self.storage = storage
        self.texts = texts
        self.by_loop: dict[asyncio.AbstractEventLoop, tuple[AsyncScript, ...]] = {}
        self.lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        """The parent's event loops and their connections are not the child's."""
        self.by_loop = {}
        self.lock = threading.Lock()

    def get(self) -> tuple[AsyncScript, ...]:
        loop = asyncio.get_running_loop()
        scripts = self.by_loop.get(loop)
        if scripts is None:
            with self.lock:  # threads, each running loops of its own
                scripts = self.by_loop.get(loop)
                if scripts is None:
                    known = {k: v for k, v in self.by_loop.items() if not k.is_closed()}
                    scripts = known[loop] = async_scripts(self.storage, *self.texts)
                    self.by_loop = known  # replaced whole: read without the lock
        return scripts


def sync_client(storage: Storage) -> Any:
    address = redis_address(storage.url)
    options = _options(storage)
    if address.topology == CLUSTER:
        (host, port), *others = address.hosts
        return redis.cluster.RedisCluster(
            # through a URL, redis-py builds each node's pool of the given class
            url=_server_url(address, host, port),
            startup_nodes=[_untyped.cluster.ClusterNode(h, p) for h, p in others],
            dynamic_startup_nodes=False,  # see async_client
            connection_pool_class=redis.BlockingConnectionPool,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT,
            retry=_cluster_retry(redis.retry.Retry),
            **options,
        )
    if address.topology == SENTINEL:
        sentinel = _untyped.sentinel.Sentinel(
            list(address.hosts), sentinel_kwargs=_sentinel_options(address, options)
        )
        return sentinel.master_for(
            address.service,
            connection_pool_class=SentinelBlockingPool,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT,
            **_credentials(address),
            **options,
        )
    pool = redis.BlockingConnectionPool.from_url(
        storage.url, max_connections=POOL_SIZE, timeout=POOL_WAIT, **options
    )
    return redis.Redis(connection_pool=pool)


def async_client(storage: Storage) -> Any:
    address = redis_address(storage.url)
    options = _options(storage)
    if address.topology == CLUSTER:
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in address.hosts],
            # the map of slots is always asked of the URL's nodes: a managed Cluster's
            # configuration endpoint (a DNS name) keeps working when every node is replaced
            dynamic_startup_nodes=False,
            max_connections=POOL_SIZE,
            retry=_cluster_retry(redis.asyncio.retry.Retry),
            **_credentials(address),
            **options,
        )
    if address.topology == SENTINEL:
        sentinel = _untyped.asyncio.sentinel.Sentinel(
            list(address.hosts), sentinel_kwargs=_sentinel_options(address, options)
        )
        return sentinel.master_for(
            address.service,
            connection_pool_class=AsyncSentinelBlockingPool,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT,
            **_credentials(address),
            **options,
        )
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        storage.url, max_connections=POOL_SIZE, timeout=POOL_WAIT, **options
    )
    return redis.asyncio.Redis(connection_pool=pool)


def _options(storage: Storage) -> dict[str, Any]:
    return {"socket_timeout": storage.timeout, "socket_connect_timeout": storage.timeout}


def _credentials(address: RedisAddress) -> dict[str, Any]:
    """The data nodes' user, password, database and TLS."""
    found: dict[str, Any] = {"username": address.username, "password": address.password}
    if address.topology != CLUSTER:
        found["db"] = address.db
    if address.tls:
        found["ssl"] = True
    return found


def _sentinel_options(address: RedisAddress, options: dict[str, Any]) -> dict[str, Any]:
    """How the sentinels are asked: the same timeouts and TLS, no credentials."""
    return {**options, "ssl": True} if address.tls else dict(options)


def _server_url(address: RedisAddress, host: str, port: int) -> str:
    """A plain redis(s):// URL of one node, for redis-py's from_url."""
    user = quote(address.username or "", safe="")
    password = quote(address.password or "", safe="")
    credentials = f"{user}:{password}@" if user or password else ""
    shown = f"[{host}]" if ":" in host else host
    return f"{'rediss' if address.tls else 'redis'}://{credentials}{shown}:{port}"


def _cluster_retry(kind: Any) -> Any:
    """No tries beyond the first (CLUSTER_RETRIES)."""
    return kind(redis.backoff.ExponentialWithJitterBackoff(base=0.01, cap=0.25), CLUSTER_RETRIES)


if redis is not None:

    class SentinelBlockingPool(redis.sentinel.SentinelConnectionPool, redis.BlockingConnectionPool):
        """The Sentinel group's primary, through a pool that waits for a free connection."""

    class AsyncSentinelBlockingPool(
        redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
    ):
        """The same, for redis.asyncio."""
