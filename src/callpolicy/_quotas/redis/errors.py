"""Redis errors: every one is handled by the quota's `on_unavailable` (fail-closed raises
QuotaUnavailable from it, fail-open admits, local counts in this process), never raised as
is. They are told apart in the log and for what is sent again:

- outages that pass (unreachable, a read-only replica after a failover, LOADING, BUSY, OOM,
  a Cluster's MOVED/ASK it could not follow, CLUSTERDOWN, a wrong password): a release or
  cost correction that failed is sent again later;
- mistakes (WRONGTYPE: another application's key, NOPERM, a script error, anything else):
  logged as "failing", and sending again would not help.
"""

from __future__ import annotations

from urllib.parse import unquote

try:
    import redis
    import redis.exceptions
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

TRANSIENT_REPLIES = (
    "READONLY",
    "LOADING",
    "BUSY",
    "OOM",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MOVED",
    "ASK",
    "NOAUTH",
    "WRONGPASS",
)
# ConnectionError covers AuthenticationError, BusyLoadingError and a Sentinel group without a
# primary (MasterNotFoundError).
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) if redis else ()
PASSING = tuple(
    getattr(redis.exceptions, name)
    for name in (
        "ReadOnlyError",
        "BusyLoadingError",
        "OutOfMemoryError",
        "ClusterDownError",
        "TryAgainError",
        "MasterDownError",
        "AskError",  # and MovedError
        "RedisClusterException",  # no node for a slot, no node answering
    )
    if redis and hasattr(redis.exceptions, name)
)
# Everything redis-py raises (a Cluster's client raises RedisClusterException, no RedisError).
FAILED = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) if redis else ()


def passing(error: BaseException) -> bool:
    """Whether a Redis error is an outage that passes, rather than a mistake."""
    return isinstance(error, (*UNREACHABLE, *PASSING)) or str(error).startswith(TRANSIENT_REPLIES)


def shown(error: BaseException, url: str) -> str:
    """The error's text, with the storage URL's password (if one shows up) hidden."""
    text = str(error)
    credentials = url.partition("://")[2].rpartition("@")[0]
    password = credentials.partition(":")[2]
    for secret in {password, unquote(password)} - {""}:
        text = text.replace(secret, "***")
    return text
