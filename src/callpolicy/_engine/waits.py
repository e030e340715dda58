"""Wait strategies of a policy as tenacity wait objects.

Exponential waits are our own (`_Exponential`). Jitter is drawn once per sleep and only ever
adds, to the computed wait or to the server's hint that replaces it. A wait with jitter or
hints leaves what its sleep is made of (`SleepParts`) on the retry state, for the log.
"""

from __future__ import annotations

import math
import random

import attrs
import tenacity
from tenacity.wait import wait_base

from callpolicy._engine.estimates import Polls, read_field
from callpolicy._engine.hints import Hint, read_hint
from callpolicy._model import MAX_SECONDS, Wait


@attrs.frozen
class SleepParts:
    """What a backoff sleep is made of: the computed wait (`backoff`), the jitter added
    (None: the wait has none) and, when the server's hint replaced the backoff, the hint's
    seconds. `hint` says what the server said and what became of it."""

    backoff: float
    jitter: float | None = None
    hint: str | None = None
    hint_seconds: float | None = None


def compile_wait(wait: Wait, policy: str = "") -> wait_base:
    """The tenacity strategy for `wait`: the seconds to sleep after attempt n (with server
    hints, what the failed attempt's response says, within the policy's cap)."""
    base = _base(wait)
    jitter = wait.jitter if wait.strategy in ("fixed", "exponential") else 0.0
    if jitter > 0 or wait.hints:
        return _Backoff(base, jitter, wait, policy)
    return base  # nothing to tell apart: the sleep is the computed wait


def _base(wait: Wait) -> wait_base:
    if wait.strategy == "none":
        return tenacity.wait_none()
    if wait.strategy == "fixed":
        return tenacity.wait_fixed(wait.seconds)
    if wait.strategy == "exponential":
        return _Exponential(wait.initial, wait.multiplier, wait.max)
    if wait.strategy == "random":
        return tenacity.wait_random(min=wait.min, max=wait.max)
    return _Chain([compile_wait(step) for step in wait.steps])


class _Exponential(wait_base):
    """`initial * multiplier**(n - 1)` after attempt n, capped at `max` (and a week), never
    decreasing. tenacity's wait_exponential returns `max` once the power overflows, so with
    `initial = 0` it jumps from 0 to `max` (attempt 1025 with multiplier 2, 104 with 1000)."""

    def __init__(self, initial: float, multiplier: float, maximum: float) -> None:
        self.initial = initial
        self.multiplier = multiplier
        self.max = min(maximum, MAX_SECONDS)
        # The exponent stops growing once past `max`: no overflow, and `min` keeps it at max.
        self.top = 0
        if 0 < initial < self.max and multiplier > 1:
            steps = (math.log(self.max) - math.log(initial)) / math.log(multiplier)
            self.top = math.ceil(steps) + 1

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exponent = max(min(retry_state.attempt_number - 1, self.top), 0)
        try:
            return min(self.initial * self.multiplier**exponent, self.max)
        except OverflowError:  # only for an initial near the smallest float: in log space
            log_wait = math.log(self.initial) + exponent * math.log(self.multiplier)
            return self.max if log_wait >= math.log(self.max) else math.exp(log_wait)


class _Chain(wait_base):
    """Step n waits after attempt n; the last step repeats, counting its own attempts from 1
    (tenacity's wait_chain would hand an exponential step the call's attempt number)."""

    def __init__(self, steps: list[wait_base]) -> None:
        self.steps = steps

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        attempt = retry_state.attempt_number
        index = min(attempt, len(self.steps)) - 1
        retry_state.attempt_number = attempt - index
        retry_state.callpolicy_sleep = None  # type: ignore[attr-defined]  # the step's own
        try:
            return float(self.steps[index](retry_state))
        finally:
            retry_state.attempt_number = attempt


class _Backoff(wait_base):
    """The computed wait plus jitter, or the server's word (a hint the response carries)
    instead of the computed wait, capped, plus jitter. Leaves its parts on the retry state."""

    def __init__(self, base: wait_base, jitter: float, wait: Wait, policy: str) -> None:
        self.base = base
        self.jitter = jitter
        self.wait = wait
        self.policy = policy
        self.chained = isinstance(base, _Chain)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        computed = float(self.base(retry_state))
        jitter = random.uniform(0, self.jitter) if self.jitter else None
        parts = getattr(retry_state, "callpolicy_sleep", None) if self.chained else None
        if parts is None:
            parts = SleepParts(computed, jitter)
        seconds = computed + (jitter or 0.0)
        outcome = retry_state.outcome
        if self.wait.hints and outcome is not None:
            answer = outcome.exception() if outcome.failed else outcome.result()
            polls: Polls | None = getattr(retry_state, "callpolicy_polls", None)
            if polls is None:
                polls = retry_state.callpolicy_polls = Polls()  # type: ignore[attr-defined]

            def field(path: str, fmt: str) -> Hint | None:
                return read_field(path, fmt, answer, self.policy, polls)

            hint = read_hint(self.wait.hints, answer, self.policy, field)
            if hint is not None:
                seconds, parts = self._hinted(hint, computed, jitter, seconds, parts)
        retry_state.callpolicy_sleep = parts  # type: ignore[attr-defined]
        return seconds

    def _hinted(
        self, hint: Hint, computed: float, jitter: float | None, seconds: float, parts: SleepParts
    ) -> tuple[float, SleepParts]:
        cap, action = self.wait.hint_cap, self.wait.hint_above_cap
        if hint.estimated:  # not the server's word: a long one is capped, never ignored or fatal
            action = "clamp"
        said, hinted = hint.describe() + hint.read_as, hint.seconds
        if hinted > cap and action == "ignore":
            return seconds, attrs.evolve(parts, hint=f"{said} is above hint_cap {cap:g}s, ignored")
        if hinted > cap and action == "fail":  # the runner gives up at once
            return math.inf, SleepParts(computed, None, f"{said} is above hint_cap {cap:g}s")
        if hinted > cap:
            said, hinted = f"{said}, capped at {cap:g}s", cap
        return hinted + (jitter or 0.0), SleepParts(computed, jitter, said, hinted)
