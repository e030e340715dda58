"""One event for every sleep a policy makes, logged and passed to hooks (metrics, tests)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import attrs

from callpolicy._text import Throttled

logger = logging.getLogger("callpolicy")

SleepSource = Literal["backoff", "quota", "pause"]
# Why: an exception was raised, a response came back with a retried status, a returned value
# did not meet the policy's condition yet (polling), or a quota was full.
# A quota wait is said once, when over, by what it waited for most: the quota's time
# ("quota"), a call in flight to end ("slot"), or calls waiting ahead of it ("turn").
SleepTrigger = Literal["exception", "status", "result", "quota", "slot", "turn"]
SleepHook = Callable[["SleepEvent"], None]
SHORTEST_INFO = 0.001  # shorter sleeps (retrying at once) are logged at DEBUG
_hooks: list[SleepHook] = []
_hook_failures = Throttled(60.0)


@attrs.frozen
class SleepEvent:
    """A sleep about to happen (a quota wait: one just over, all of its sleeps together):
    which policy, after which attempt, why, how long, for what.

    A backoff sleep is `backoff + jitter`, or `hint_seconds + jitter` when the server's
    hint replaced the backoff; `rule` names the retry rule that decided (None: the plain
    `retry` keys), and `rule_attempt` counts the attempts that ended in it so far."""

    policy: str
    attempt: int  # the attempt that failed (backoff) or is waiting to start (quota)
    max_attempts: int
    source: SleepSource
    seconds: float
    cause: str  # "ConnectionError: refused", "HTTP 429", "quota spotify.app (180/30s)"
    trigger: SleepTrigger
    quota: str | None = None
    hint: str | None = None  # the server's hint and what became of it: "Retry-After: 12"
    backoff: float | None = None  # the computed wait, before jitter (backoff sleeps only)
    jitter: float | None = None  # the jitter added; None: the wait has none
    hint_seconds: float | None = None  # the hint's part, when it replaced the backoff
    rule: str | None = None
    rule_attempt: int | None = None
    rule_max_attempts: int | None = None
    gave_up: bool = False  # a quota wait that ended without admission (max_wait, cancelled)

    def message(self) -> str:
        if self.source == "pause":
            return (
                f"{self.policy}: attempt {self.attempt} of {self.max_attempts} waits "
                f"{self.seconds:.3f}s: the server said {self.cause} (pause)"
            )
        if self.source == "quota":
            until = ""
            if self.gave_up:
                until = ", then gave up"
            elif self.trigger in ("slot", "turn"):
                ended = "a call in flight ended" if self.trigger == "slot" else "its turn came"
                until = f" until {ended}"
            return (
                f"{self.policy}: attempt {self.attempt} of {self.max_attempts} waited "
                f"{self.seconds:.3f}s for {self.cause}{until} (quota)"
            )
        outcome = "is not done yet" if self.trigger == "result" else "failed"
        rule = ""
        if self.rule is not None:
            rule = f', rule "{self.rule}" {self.rule_attempt} of {self.rule_max_attempts}'
        return (
            f"{self.policy}: attempt {self.attempt} of {self.max_attempts} {outcome} "
            f"({self.cause}){rule}; sleeping {self.seconds:.3f}s ({self._parts()})"
        )

    def _parts(self) -> str:
        """What a backoff sleep is made of, each part once. The jitter is shown as what the
        total has over the part it was added to, each rounded to the millisecond as shown,
        so that the parts shown add up to the total shown."""
        backoff = self.seconds if self.backoff is None else self.backoff
        jitter = ""
        if self.jitter is not None:
            added_to = backoff if self.hint_seconds is None else self.hint_seconds
            shown = float(f"{self.seconds:.3f}") - float(f"{added_to:.3f}")
            jitter = f" + jitter {shown:.3f}s"
        if self.hint_seconds is not None:
            return f"{self.hint}{jitter}, instead of the backoff {backoff:.3f}s"
        if self.hint is not None:  # a hint not used
            return f"backoff {backoff:.3f}s{jitter}; {self.hint}"
        return f"backoff {backoff:.3f}s{jitter}" if jitter else "backoff"


def add_sleep_hook(hook: SleepHook) -> Callable[[], None]:
    """Call `hook(event)` before every sleep of every policy; returns a function removing it."""
    _hooks.append(hook)

    def remove() -> None:
        if hook in _hooks:
            _hooks.remove(hook)

    return remove


def listening() -> bool:
    """Whether an event would reach anyone: a hook, or a logger enabled for INFO."""
    return bool(_hooks) or logger.isEnabledFor(logging.INFO)


def emit(event: SleepEvent) -> None:
    level = logging.INFO if event.seconds >= SHORTEST_INFO else logging.DEBUG
    if logger.isEnabledFor(level):
        logger.log(
            level,
            event.message(),
            extra={
                "policy": event.policy,
                "attempt": event.attempt,
                "max_attempts": event.max_attempts,
                "sleep_source": event.source,
                "sleep_seconds": event.seconds,
                "cause": event.cause,
                "trigger": event.trigger,
                "quota": event.quota,
                "hint": event.hint,
                "backoff": event.backoff,
                "jitter": event.jitter,
                "hint_seconds": event.hint_seconds,
                "rule": event.rule,
                "rule_attempt": event.rule_attempt,
                "rule_max_attempts": event.rule_max_attempts,
                "gave_up": event.gave_up,
            },
        )
    for hook in tuple(_hooks):
        try:
            hook(event)
        except Exception as error:  # a hook never changes what the call returns or raises
            _hook_failures.warn(
                (
                    id(hook),
                    getattr(hook, "__qualname__", None),
                    type(error),
                ),
                "sleep hook %r raised %s: %s (ignored; said at most once a minute per hook)",
                getattr(hook, "__qualname__", hook),
                type(error).__name__,
                error,
                policy=event.policy,
            )
