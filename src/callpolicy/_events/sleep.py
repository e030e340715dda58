"""The event of every sleep a policy makes: a backoff, a quota wait, a server's pause."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import attrs

from callpolicy._events.trace import current_call_id

SleepSource = Literal["backoff", "quota", "pause"]
# Why: an exception was raised, a response came back with a retried status, a returned value
# did not meet the policy's condition yet (polling), or a quota was full.
# A quota wait is said once, when over, by what it waited for most: the quota's time
# ("quota"), a call in flight to end ("slot"), or calls waiting ahead of it ("turn").
SleepTrigger = Literal["exception", "status", "result", "quota", "slot", "turn"]
SHORTEST_INFO = 0.001  # shorter sleeps (retrying at once) are logged at DEBUG


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
    call_id: int = attrs.field(factory=current_call_id, kw_only=True)
    kind: ClassVar[str] = "sleep"

    @property
    def level(self) -> int:
        return logging.INFO if self.seconds >= SHORTEST_INFO else logging.DEBUG

    def extra(self) -> dict[str, object]:
        """The fields a log record carries (`extra=`), as today's log lines have them."""
        return {
            "policy": self.policy,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "sleep_source": self.source,
            "sleep_seconds": self.seconds,
            "cause": self.cause,
            "trigger": self.trigger,
            "quota": self.quota,
            "hint": self.hint,
            "backoff": self.backoff,
            "jitter": self.jitter,
            "hint_seconds": self.hint_seconds,
            "rule": self.rule,
            "rule_attempt": self.rule_attempt,
            "rule_max_attempts": self.rule_max_attempts,
            "gave_up": self.gave_up,
            "call_id": self.call_id,
        }

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
