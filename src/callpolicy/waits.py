"""Wait strategies of a policy as tenacity wait objects.

`initial`/`multiplier`/`max` map onto tenacity's `wait_exponential(multiplier, exp_base, max)`;
jitter is `+ wait_random(0, jitter)`, so it only ever adds to the computed wait.
"""

from __future__ import annotations

import tenacity
from tenacity.wait import wait_base

from callpolicy.model import Wait


def compile_wait(wait: Wait) -> wait_base:
    """The tenacity strategy for `wait`: the seconds to sleep after attempt n."""
    strategy: wait_base
    if wait.strategy == "none":
        strategy = tenacity.wait_none()
    elif wait.strategy == "fixed":
        strategy = tenacity.wait_fixed(wait.seconds)
    elif wait.strategy == "exponential":
        strategy = tenacity.wait_exponential(
            multiplier=wait.initial, exp_base=wait.multiplier, max=wait.max
        )
    elif wait.strategy == "random":
        strategy = tenacity.wait_random(min=wait.min, max=wait.max)
    else:
        strategy = _Chain([compile_wait(step) for step in wait.steps])
    if wait.jitter > 0 and wait.strategy in ("fixed", "exponential"):
        strategy = strategy + tenacity.wait_random(0, wait.jitter)
    return strategy


def describe_wait(wait: Wait) -> str:
    """One line for `callpolicy explain`."""
    jitter = f" + up to {wait.jitter:g}s jitter" if wait.jitter else ""
    if wait.strategy == "none":
        return "retry at once"
    if wait.strategy == "fixed":
        return f"{wait.seconds:g}s{jitter}"
    if wait.strategy == "exponential":
        return f"{wait.initial:g}s x {wait.multiplier:g} per attempt, at most {wait.max:g}s{jitter}"
    if wait.strategy == "random":
        return f"random {wait.min:g}s to {wait.max:g}s"
    return "chain: " + "; ".join(describe_wait(step) for step in wait.steps) + " (last repeats)"


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
