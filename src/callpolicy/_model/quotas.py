"""The policy model's quotas: rates, storages, and the Quota a call must pass, with their
vocabularies (algorithms), bounds and defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from attrs import validators as v

from callpolicy._text import format_seconds, redacted

if TYPE_CHECKING:
    from callpolicy._model.adapt import Adapt

ALGORITHMS: tuple[str, ...] = ("sliding-window", "fixed-window", "leaky-bucket", "token-bucket")
BUCKETS = ("leaky-bucket", "token-bucket")  # take `burst`; the windows take `spread`
UNAVAILABLE_MODES: tuple[str, ...] = ("fail-closed", "fail-open", "local")
MAX_SLOTS = 1_000_000  # past these, numbers are typos, not plans
MAX_BURST = 1_000_000_000
# An exact sliding window keeps one entry per call in the window: past this many, memory
# and time per admission grow too much; a bucket keeps one number whatever N is.
MAX_SLIDING_WINDOW = 1_000_000
# Timing slack of every rate quota: the time between a call's admission and its reaching the
# server varies (a thread switch, a network hop, a new connection's handshake), and servers
# count in whole milliseconds. A window counts each call this much longer than its period
# (costing guard/period of the throughput): measured on loopback, a new connection's first
# call arrived up to ~10 ms after admission, the next ones within 1 ms; 2 ms was refused by a
# rolling-window server in 2 of 12 runs of 3 threads, 20 ms never. A bucket keeps its guard
# of room unused, or with no room spaces calls that much further apart; as it is also told
# when each call ends (see buckets.py), its guard covers only the server's millisecond clock.
DEFAULT_GUARD = 0.02
DEFAULT_BUCKET_GUARD = 0.001
# An in-flight slot in Redis is a lease, renewed every third of it while its call runs: a
# crashed worker's slot comes back within it. 30 s rides out a renewal missed to a GC pause,
# a Redis restart or a failover (up to ~20 s unreachable) without losing the slot.
DEFAULT_LEASE = 30.0
MIN_LEASE = 1.0  # shorter: renewals (every third) would be a steady load on Redis
MAX_LEASE = 3600.0  # longer: a crashed worker's slot would be lost for more than an hour
# Where a quota's limit may be learned from (`learn.from`): X-RateLimit-Limit (GitHub's and
# most APIs' convention) or the IETF draft's RateLimit-Policy (its older RateLimit-Limit too).
LEARN_SOURCES = ("x-ratelimit", "ratelimit")
MEMORY = "memory://"


@attrs.frozen
class Rate:
    """`calls` calls per `period` seconds."""

    calls: int
    period: float

    def __str__(self) -> str:
        return f"{self.calls}/{format_seconds(self.period)}"


@attrs.frozen
class Learn:
    """A quota's limit taken from what responses announce (`source`), kept within [`floor`,
    `ceiling`] (rates over the quota's period). `window`: the seconds an announced limit counts
    over when the header does not say (default: the quota's period). `header`: the limit
    header of "x-ratelimit". `name`: the RateLimit-Policy item to follow ("ratelimit"), or
    the X-RateLimit-Resource responses must name ("x-ratelimit", GitHub's); None: any (the
    most restrictive policy item)."""

    source: str = attrs.field(validator=v.in_(LEARN_SOURCES))
    floor: Rate
    ceiling: Rate
    window: float | None = attrs.field(default=None, validator=v.optional(v.gt(0)))
    header: str = "X-RateLimit-Limit"
    name: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.floor.period != self.ceiling.period or self.floor.calls > self.ceiling.calls:
            raise ValueError(f"learn: floor {self.floor} must be <= ceiling {self.ceiling}")

    def __str__(self) -> str:
        return f"learns from {self.source} within {self.floor}..{self.ceiling}"


@attrs.frozen
class Storage:
    """Where a quota's state lives: `url` "memory://" (this process) or Redis (every process
    using it: one server, a Sentinel group or a Cluster, see redis_url.py), with the options
    of the URL's query read at load time. The URL may hold a password: str() and repr() never
    show it."""

    url: str = attrs.field(default=MEMORY, repr=redacted)
    prefix: str = "callpolicy"  # ?prefix=: namespaces the keys
    timeout: float = attrs.field(default=0.25, validator=v.gt(0))  # ?timeout=

    @property
    def is_memory(self) -> bool:
        return self.url.startswith(MEMORY)

    def __str__(self) -> str:
        return redacted(self.url)


def _storage(value: Storage | str) -> Storage:
    """A plain "memory://" may be given as a string when a Quota is built by hand."""
    if isinstance(value, Storage):
        return value
    if value == MEMORY:
        return Storage()
    raise TypeError("a Quota's storage is a Storage (callpolicy reads URLs from policy files)")


@attrs.frozen
class Quota:
    """A limit every call of the policies naming it must pass, shared by all of them.

    Exactly one of: `rate` (at most `rate.calls` calls, or cost units when `weighted`, per
    `rate.period` seconds), `concurrency` (calls in flight), `pool` (member quotas, of which
    a call takes the first that admits it). `storage` is "memory://" (this process) or a
    Redis URL (every process using it); `on_unavailable` says what to do when Redis is not.
    """

    name: str
    rate: Rate | None = None
    concurrency: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    pool: tuple[Quota, ...] = ()
    algorithm: str = attrs.field(default="sliding-window", validator=v.in_(ALGORITHMS))
    max_wait: float = attrs.field(default=60.0, validator=v.ge(0))
    weighted: bool = False
    storage: Storage = attrs.field(default=Storage(), converter=_storage)
    on_unavailable: str = attrs.field(default="fail-closed", validator=v.in_(UNAVAILABLE_MODES))
    local_limit: Rate | None = None
    guard: float = attrs.field(
        default=attrs.Factory(
            lambda self: DEFAULT_BUCKET_GUARD if self.algorithm in BUCKETS else DEFAULT_GUARD,
            takes_self=True,
        ),
        validator=v.ge(0),
    )
    # Buckets: calls (cost units) beyond the steady pace (leaky), or the size (token); None:
    # 0 for a leaky bucket, the limit's N for a token bucket.
    burst: int | None = attrs.field(default=None, validator=v.optional(v.ge(0)))
    spread: bool = False  # windows: calls at least period / N apart, not back to back
    # In-flight slots in Redis: a slot's lease, renewed while its call runs (see DEFAULT_LEASE).
    lease: float = attrs.field(default=DEFAULT_LEASE, validator=[v.ge(MIN_LEASE), v.le(MAX_LEASE)])
    learn: Learn | None = None  # the limit taken from responses' headers, within bounds
    adapt: Adapt | None = None  # the rate adapted to refusals (429, 503), within bounds

    def __attrs_post_init__(self) -> None:
        kinds = sum(x is not None and x != () for x in (self.rate, self.concurrency, self.pool))
        if kinds != 1:
            raise ValueError(f"quota {self.name!r} needs exactly one of rate, concurrency, pool")
        if self.burst is not None and self.algorithm not in BUCKETS:
            raise ValueError(f"quota {self.name!r}: burst applies to {' and '.join(BUCKETS)}")
        if self.spread and self.algorithm in BUCKETS:
            raise ValueError(f"quota {self.name!r}: spread applies to the windows, not buckets")
        if self.burst == 0 and self.algorithm == "token-bucket":
            raise ValueError(f"quota {self.name!r}: a token bucket's burst (its size) is >= 1")
        for key, bounded in (("learn", self.learn), ("adapt", self.adapt)):
            if bounded is not None:
                self._check_bounds(key, bounded.floor, bounded.ceiling)

    def _check_bounds(self, key: str, floor: Rate, ceiling: Rate) -> None:
        if self.rate is None:
            raise ValueError(f"quota {self.name!r}: {key} applies only to a quota with a rate")
        if floor.period != self.rate.period:
            raise ValueError(f"quota {self.name!r}: {key}'s bounds count over {self.rate}'s period")
        if not floor.calls <= self.rate.calls <= ceiling.calls:
            raise ValueError(f"quota {self.name!r}: {self.rate} is outside {key}'s bounds")

    @property
    def changes_limit(self) -> bool:
        """Whether its limit may change while it runs (learned, or adapted)."""
        return self.learn is not None or self.adapt is not None

    @staticmethod
    def algorithm_default() -> str:
        return str(attrs.fields(Quota).algorithm.default)

    @property
    def bucket_room(self) -> int:
        """A bucket's burst as declared, or its default."""
        if self.burst is not None:
            return self.burst
        return self.rate.calls if self.algorithm == "token-bucket" and self.rate else 0
