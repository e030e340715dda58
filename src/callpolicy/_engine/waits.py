"""Wait strategies of a policy as tenacity wait objects.

Exponential waits are our own (`_Exponential`); jitter is `+ wait_random(0, jitter)`, so it
only ever adds to the computed wait.
"""

from __future__ import annotations

import math
import random

import tenacity
from tenacity.wait import wait_base

from callpolicy._engine.hints import read_hint
from callpolicy._model import MAX_SECONDS, Wait


def compile_wait(wait: Wait, policy: str = "") -> wait_base:
    """The tenacity strategy for `wait`: the seconds to sleep after attempt n (with server
    hints, what the failed attempt's response says, within the policy's cap)."""
    computed = _computed(wait)
    return _Hinted(computed, wait, policy) if wait.hints else computed


def _computed(wait: Wait) -> wait_base:
    strategy: wait_base
    if wait.strategy == "none":
        strategy = tenacity.wait_none()
    elif wait.strategy == "fixed":
        strategy = tenacity.wait_fixed(wait.seconds)
    elif wait.strategy == "exponential":
        strategy = _Exponential(wait.initial, wait.multiplier, wait.max)
    elif wait.strategy == "random":
        strategy = tenacity.wait_random(min=wait.min, max=wait.max)
    else:
        strategy = _Chain([compile_wait(step) for step in wait.steps])
    if wait.jitter > 0 and wait.strategy in ("fixed", "exponential"):
        strategy = strategy + tenacity.wait_random(0, wait.jitter)
    return strategy


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
        try:
            return float(self.steps[index](retry_state))
        finally:
            retry_state.attempt_number = attempt


class _Hinted(wait_base):
    """The server's word (a hint the response carries) instead of the computed backoff,
    capped; jitter only adds. What it did is left on the retry state for the log."""

    def __init__(self, computed: wait_base, wait: Wait, policy: str) -> None:
        self.computed = computed
        self.wait = wait
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        computed = float(self.computed(retry_state))
        retry_state.callpolicy_hint = None  # type: ignore[attr-defined]
        outcome = retry_state.outcome
        if outcome is None:
            return computed
        answer = outcome.exception() if outcome.failed else outcome.result()
        hint = read_hint(self.wait.hints, answer, self.policy)
        if hint is None:
            return computed
        cap, action = self.wait.hint_cap, self.wait.hint_above_cap
        said, seconds = hint.describe(), hint.seconds
        if seconds > cap and action == "ignore":
            note = f"{said} is above hint_cap {cap:g}s: ignored, computed backoff used"
            seconds = computed
        elif seconds > cap and action == "fail":
            note = f"{said} is above hint_cap {cap:g}s"
            seconds = math.inf  # the runner gives up at once
        else:
            if seconds > cap:
                said, seconds = f"{said}, capped at {cap:g}s", cap
            if self.wait.jitter:
                seconds += random.uniform(0, self.wait.jitter)
            note = f"{said} instead of the computed {computed:.3f}s"
        retry_state.callpolicy_hint = note + hint.read_as  # type: ignore[attr-defined]
        return seconds
