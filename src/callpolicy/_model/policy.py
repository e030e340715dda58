"""The policy model's calls side: retry conditions and rules, waits, stops, pause, and the
Policy holding them with its quotas (quotas.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
from attrs import validators as v

from callpolicy._model.fallback import Fallback
from callpolicy._model.quotas import Quota
from callpolicy._model.resilience import Breaker, Budget

WaitStrategy = Literal["none", "fixed", "exponential", "random", "chain"]
WAIT_STRATEGIES: tuple[str, ...] = ("none", "fixed", "exponential", "random", "chain")
# Keys each wait strategy uses, besides `strategy` itself.
STRATEGY_KEYS: dict[str, tuple[str, ...]] = {
    "none": (),
    "fixed": ("seconds", "jitter"),
    "exponential": ("initial", "multiplier", "max", "jitter"),
    "random": ("min", "max"),
    "chain": ("steps",),
}
HINT_ACTIONS: tuple[str, ...] = ("clamp", "ignore", "fail")
HINT_FORMATS: tuple[str, ...] = (
    "retry-after",
    "delta-seconds",
    "delta-millis",
    "epoch-seconds",
    "epoch-millis",
    "rfc3339",
    "duration",
    "progress",  # a field only: a fraction done, 0 to 1 (see _engine/estimates.py)
    "percent",  # a field only: 0 to 100
)
PROGRESS_FORMATS = ("progress", "percent")
HEADER_FORMATS = tuple(f for f in HINT_FORMATS if f not in PROGRESS_FORMATS)
HINT_FIELD = "field:"  # a hint source read from the returned value: ("field:<path>", format)
# The format a header is read in when the policy names only the header.
KNOWN_HINT_HEADERS = {
    "retry-after": "retry-after",
    "retry-after-ms": "delta-millis",  # OpenAI's and Anthropic's APIs
    "x-ratelimit-reset": "delta-seconds",
    "ratelimit-reset": "delta-seconds",
    "anthropic-ratelimit-requests-reset": "rfc3339",
    "anthropic-ratelimit-tokens-reset": "rfc3339",
    "anthropic-ratelimit-input-tokens-reset": "rfc3339",
    "anthropic-ratelimit-output-tokens-reset": "rfc3339",
    "x-ratelimit-reset-requests": "duration",
    "x-ratelimit-reset-tokens": "duration",
}
NEVER_RETRIED = (
    "KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError and "
    "concurrent.futures.CancelledError"
)
MAX_SECONDS = 7 * 24 * 3600.0  # no wait, deadline or period beyond a week (a longer
# server hint is above any hint_cap)
# Numbers past these are typos, not plans (a million attempts of a 1 s poll outlast any
# deadline, which is at most a week).
MAX_ATTEMPTS = 1_000_000
MAX_MULTIPLIER = 1000.0
DEFAULT_RULE_NAME = "rule {}"  # a retry rule without a name, by its place (from 1)
ConditionOp = Literal["in", "not_in", "equals"]
_MISSING = object()


def hint_format(header: str) -> str:
    """The format a header is read in when a policy does not say."""
    return KNOWN_HINT_HEADERS.get(header.lower(), "delta-seconds")


@attrs.frozen
class ResultCondition:
    """A test on one field (mapping key or attribute, dotted for nesting) of a returned value."""

    field: str
    op: ConditionOp
    values: tuple[Any, ...]

    def matches(self, result: Any) -> bool:
        value = result
        for part in self.field.split("."):
            if isinstance(value, Mapping):
                value = value.get(part, _MISSING)
            else:
                value = getattr(value, part, _MISSING)
            if value is _MISSING:
                return False
        if self.op == "not_in":
            return value not in self.values
        return value in self.values


@attrs.frozen
class GiveUp:
    """A response meaning "the quota is gone for good" (an account-level limit): a status
    (any if empty) and JSON body fields (dotted paths) with the values they must have."""

    statuses: frozenset[int] = frozenset()
    fields: tuple[tuple[str, Any], ...] = ()

    def matches(self, status: int | None, body: Any) -> bool:
        if self.statuses and status not in self.statuses:
            return False
        for path, expected in self.fields:
            value = body
            for part in path.split("."):
                value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
            if value != expected:
                return False
        return True


@attrs.frozen
class Match:
    """What calls for another attempt: raised exceptions, statuses, returned values."""

    on_exceptions: tuple[type[Exception], ...] = ()
    on_status: frozenset[int] = frozenset()
    until: ResultCondition | None = None
    while_: ResultCondition | None = None
    result_predicate: Callable[[Any], bool] | None = None
    exception_predicate: Callable[[BaseException], bool] | None = None

    @property
    def checks_results(self) -> bool:
        """Whether returned values (not only exceptions) can trigger a retry."""
        return bool(self.on_status or self.until or self.while_ or self.result_predicate)


@attrs.frozen
class RetryRule(Match):
    """One cause of retries (`[[retry.rules]]`): what it matches, the wait after it (None:
    the policy's) and how many attempts may end in it, the first included (None: as many
    as `stop.attempts`)."""

    name: str = ""  # "": "rule N", by its place
    wait: Wait | None = None
    attempts: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))


@attrs.frozen
class Retry(Match):
    """When an attempt's outcome calls for another attempt. Empty means never retry. The
    first of `rules` that matches decides; this table's own matching keys are the last
    rule (the policy's wait, `stop.attempts`). The other keys are shared by all rules."""

    # HTTP: None decides by the request's method (and Idempotency-Key); True/False say so.
    idempotent: bool | None = None
    refused_any_method: bool = True  # 429/503 with a Retry-After: retried for any method
    # A header by which the server says whether to retry ("true"/"false"), before statuses.
    should_retry_header: str = ""
    give_up: tuple[GiveUp, ...] = ()
    rules: tuple[RetryRule, ...] = ()

    def __attrs_post_init__(self) -> None:
        names = rule_names(self.rules)
        if len(set(names)) != len(names):
            raise ValueError(f"retry rules need distinct names (got {names})")

    @property
    def checks_results(self) -> bool:
        return super().checks_results or any(r.checks_results for r in self.rules)


def rule_names(rules: tuple[RetryRule, ...]) -> list[str]:
    """Each rule's name: its own, else "rule N" by its place (from 1)."""
    return [rule.name or DEFAULT_RULE_NAME.format(n) for n, rule in enumerate(rules, 1)]


@attrs.frozen
class Wait:
    """How long to sleep before the next attempt. `max` caps the strategy before jitter."""

    strategy: WaitStrategy = attrs.field(default="exponential", validator=v.in_(WAIT_STRATEGIES))
    seconds: float = attrs.field(default=1.0, validator=v.ge(0))
    initial: float = attrs.field(default=1.0, validator=v.ge(0))
    multiplier: float = attrs.field(default=2.0, validator=v.ge(1))
    max: float = attrs.field(default=30.0, validator=v.ge(0))
    min: float = attrs.field(default=0.0, validator=v.ge(0))
    jitter: float = attrs.field(default=0.0, validator=v.ge(0))
    steps: tuple[Wait, ...] = ()
    # Server hints: (header, format) pairs read in order; see callpolicy.hints.
    hints: tuple[tuple[str, str], ...] = ()
    hint_cap: float = attrs.field(default=60.0, validator=v.ge(0))
    hint_above_cap: str = attrs.field(default="clamp", validator=v.in_(HINT_ACTIONS))


@attrs.frozen
class Stop:
    """When to give up: after `attempts` calls, or before a wait that would end past
    `deadline`. `attempt_timeout`: the most one attempt may run (a coroutine is cancelled;
    a sync function reads it through `time_left()`), never past the deadline."""

    attempts: int = attrs.field(default=3, validator=v.ge(1))
    deadline: float | None = attrs.field(default=None, validator=v.optional(v.gt(0)))
    attempt_timeout: float | None = attrs.field(default=None, validator=v.optional(v.gt(0)))


@attrs.frozen
class Pause:
    """When a response's `remaining` header reads 0, the endpoint waits until its `reset`
    header (read in `format`) says, for `max` seconds at most."""

    remaining: str = "X-RateLimit-Remaining"
    reset: str = "X-RateLimit-Reset"
    # By default, the format the reset header is known to use.
    format: str = attrs.field(
        default=attrs.Factory(lambda self: hint_format(self.reset), takes_self=True),
        validator=v.in_(HEADER_FORMATS),
    )
    max: float = attrs.field(default=60.0, validator=v.ge(0))


@attrs.frozen
class Policy:
    """Everything one endpoint's calls obey; `source` is where it was declared (file:line)."""

    name: str
    retry: Retry = Retry()
    wait: Wait = Wait()
    stop: Stop = Stop()
    quotas: tuple[Quota, ...] = ()
    description: str = ""
    source: str = ""
    pause: Pause | None = None
    breaker: Breaker | None = None
    budget: Budget | None = None
    fallback: Fallback | None = None
