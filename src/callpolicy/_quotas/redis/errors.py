"""Which Redis errors are outages that pass (the quota does what `on_unavailable` says) and
which are mistakes to see."""

from __future__ import annotations

try:
    import redis
    import redis.exceptions
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

# Errors that pass (unreachable, a read-only replica after a failover, LOADING, BUSY, OOM):
# the quota does what on_unavailable says, and a release or cost correction that fails is
# sent again later. Other errors (WRONGTYPE, NOPERM, a script error) are mistakes to see:
# they raise at admission, and are logged, never raised, when giving back.
TRANSIENT_REPLIES = ("READONLY", "LOADING", "BUSY", "OOM", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
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
    )
    if redis and hasattr(redis.exceptions, name)
)
FAILED = (redis.exceptions.RedisError,) if redis else ()


def passing(error: BaseException) -> bool:
    """Whether a Redis error is an outage that passes, rather than a mistake."""
    return isinstance(error, (*UNREACHABLE, *PASSING)) or str(error).startswith(TRANSIENT_REPLIES)
