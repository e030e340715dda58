"""A circuit breaker's state in this process: closed (counting outcomes in its window),
open (refusing attempts until `open_for` has passed), half-open (letting `probes` trial
attempts through). Modelled on resilience4j's CircuitBreaker.

Every state has a generation, bumped at each change: an attempt is counted in the one it
entered in, so an outcome that comes back after the state changed (a call admitted while
closed that fails after the breaker opened) changes nothing. A closed breaker admits
without its lock (one attribute read); recording an outcome takes it. Each change is
logged once, with the numbers that caused it, by `log_change` (the one place to route it).
"""

from __future__ import annotations

import itertools
import threading

from callpolicy._engine.windows import FAILED, CountWindow, TimeWindow, Window
from callpolicy._events import BreakerChanged, emit
from callpolicy._forks import renew_after_fork
from callpolicy._model import BREAKER_STATES, Breaker
from callpolicy._stats import peek_count
from callpolicy._text import format_seconds

CLOSED, OPEN, HALF_OPEN = BREAKER_STATES


def make_window(model: Breaker) -> Window:
    if model.window_calls is not None:
        return CountWindow(model.window_calls)
    assert model.window_seconds is not None
    return TimeWindow(model.window_seconds)


def log_change(breaker: str, state: str, why: str) -> None:
    """A breaker changed state: an event, logged (said once per change, by whichever
    process changed it)."""
    emit(BreakerChanged(breaker, state, why))


def permille(ratio: float) -> int:
    """A ratio in thousandths: shares are compared in integers (0.07 of 100 calls is 7,
    where floats say 7.000000000000001)."""
    return round(ratio * 1000)


def reaches(count: int, of: int, ratio_permille: int) -> bool:
    """Whether `count` of `of` calls is a share of at least `ratio_permille` thousandths."""
    return count * 1000 >= ratio_permille * of


def opening_reason(model: Breaker, calls: int, failures: int, slow: int) -> str | None:
    """Why a closed breaker with these counts opens; None: it stays closed."""
    if calls < model.least_calls:
        return None
    failing = reaches(failures, calls, permille(model.failure_ratio))
    if not failing and not reaches(slow, calls, permille(model.slow_call_ratio)):
        return None
    window = (
        f"the last {model.window_calls} calls"
        if model.window_calls is not None
        else f"the last {format_seconds(model.window_seconds or 0.0)}"
    )
    if failing:
        share = f"{failures / calls:.0%} >= failure_ratio {model.failure_ratio:g}"
        return f"{failures} of {calls} calls failed ({share}) over {window}"
    share = f"{slow / calls:.0%} >= slow_call_ratio {model.slow_call_ratio:g}"
    shown = format_seconds(model.slow_call)
    return f"{slow} of {calls} calls took {shown} or more ({share}) over {window}"


def half_open_reason(model: Breaker) -> str:
    probes = f"{model.probes} trial call{'s' if model.probes != 1 else ''}"
    return f"open_for {format_seconds(model.open_for)} passed; letting {probes}"


def trial_failed_reason(model: Breaker, done: int, failed: int, slow: int) -> str:
    """Why the trial calls open the breaker again: enough of `model.probes` failed (or
    were slow) that their share reaches the ratio, whatever the others do."""
    probes = model.probes
    if reaches(failed, probes, permille(model.failure_ratio)):
        share = f"{failed / probes:.0%} >= failure_ratio {model.failure_ratio:g}"
        return f"{failed} of {probes} trial calls failed ({share})"
    share = f"{slow / probes:.0%} >= slow_call_ratio {model.slow_call_ratio:g}"
    return f"{slow} of {probes} trial calls were slow ({share})"


def lapsed_reason(lease: float) -> str:
    """Why a half-open breaker opens again without an outcome (both breakers say it so)."""
    return f"the trial calls did not end within {format_seconds(lease)}"


def closed_reason(done: int, failed: int) -> str:
    if not failed:
        return f"{done} trial call{'s' if done != 1 else ''} succeeded"
    return f"{done - failed} of {done} trial calls succeeded, under failure_ratio"


def log_opened(model: Breaker, why: str) -> None:
    log_change(model.name, OPEN, f"{why}; probing again in {format_seconds(model.open_for)}")


class LocalBreaker:
    """One breaker's state, shared by every policy of this process that names it."""

    remote = False  # never blocks: async callers call it as sync ones do

    def __init__(self, model: Breaker) -> None:
        self.model = model
        self.name = model.name
        self.window = make_window(model)
        self.min_calls = model.least_calls
        self.failing, self.slowing = permille(model.failure_ratio), permille(model.slow_call_ratio)
        # Half-open that has not decided by then (trial calls that never ended): open again.
        self.half_open_for = max(model.open_for, model.slow_call)
        self.state = CLOSED
        # Fast successes of a settled count window, counted without the lock and added to
        # the window when the lock is next taken (see record).
        self.lazy = isinstance(self.window, CountWindow)
        self.settled = False
        self.fast_successes = itertools.count()
        self.drained = 0
        self.generation = 0
        self.probe_at = 0.0  # open: when trial calls may go; half-open: when it began
        self.probes_taken = 0  # half-open: trial calls let through
        self.probes_done = self.probes_failed = self.probes_slow = 0  # and their outcomes
        self.lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        self.lock = threading.Lock()

    def enter(self, now: float) -> int | None:
        """The generation an attempt starting `now` is counted in; None: refused."""
        if self.state is CLOSED:
            return self.generation
        entered = half = opened = None
        with self.lock:
            if self.state is CLOSED:
                return self.generation
            if self.state is OPEN:
                if now < self.probe_at:
                    return None
                half = half_open_reason(self.model)
                self._change(HALF_OPEN, now)
            elif now - self.probe_at >= self.half_open_for:  # its trial calls never ended
                opened = lapsed_reason(self.half_open_for)
                self._change(OPEN, now)
            if opened is None and self.probes_taken < self.model.probes:
                self.probes_taken += 1
                entered = self.generation
        if half is not None:
            log_change(self.name, HALF_OPEN, half)
        if opened is not None:
            log_opened(self.model, opened)
        return entered

    def retry_in(self, now: float) -> float:
        """Seconds until a refused attempt could go (0: trial calls are out now)."""
        return max(0.0, self.probe_at - now) if self.state is OPEN else 0.0

    def record(self, generation: int, outcome: int, now: float) -> None:
        """An attempt counted in `generation` ended: FAILED and SLOW bits (0: success).

        A fast success in a closed count window that holds `min_calls` already cannot open
        the breaker (the shares of failed and slow calls only go down): it is counted
        without the lock, and added to the window before anything reads it."""
        if not outcome and self.settled and generation == self.generation:
            next(self.fast_successes)
            return
        with self.lock:
            if generation != self.generation:
                return  # entered under a state since left
            if self.state is CLOSED:
                window = self.window
                self._drain()
                window.add(outcome, now)
                calls = window.calls
                if self.lazy and calls >= self.min_calls:
                    self.settled = True
                if calls < self.min_calls or (
                    not reaches(window.failures, calls, self.failing)
                    and not reaches(window.slow, calls, self.slowing)
                ):
                    return
                why = opening_reason(self.model, calls, window.failures, window.slow) or ""
                state = OPEN
            else:  # half-open: the trial calls are judged as the window is
                self.probes_done += 1
                self.probes_failed += outcome & FAILED
                self.probes_slow += outcome >> 1
                probes = self.model.probes
                done, failed, slow = self.probes_done, self.probes_failed, self.probes_slow
                if reaches(failed, probes, self.failing) or reaches(slow, probes, self.slowing):
                    why = trial_failed_reason(self.model, done, failed, slow)
                    state = OPEN
                elif done < probes:
                    return
                else:
                    why = closed_reason(done, failed)
                    state = CLOSED
            self._change(state, now)
        if state == OPEN:
            log_opened(self.model, why)
        else:
            log_change(self.name, state, why)

    def cancel(self, generation: int) -> None:
        """An attempt entered in `generation` was not made, or ended without an outcome
        (an interrupt): a trial call it took is given back."""
        if self.state is not HALF_OPEN:
            return
        with self.lock:
            if self.state is HALF_OPEN and generation == self.generation:
                self.probes_taken -= 1

    def counts(self) -> tuple[int, int, int]:
        """The window's calls, failures and slow calls now."""
        with self.lock:
            self._drain()
            window = self.window
            return window.calls, window.failures, window.slow

    def _drain(self) -> None:
        """Add the successes counted without the lock to the window (under the lock)."""
        if self.lazy:
            total = peek_count(self.fast_successes)
            if total != self.drained:
                self.window.add_successes(total - self.drained)  # type: ignore[attr-defined]
                self.drained = total

    def _change(self, state: str, now: float) -> None:
        self._drain()  # the old state's successes: dropped with its window below
        self.settled = False
        self.state = state
        self.generation += 1
        self.probes_taken = self.probes_done = self.probes_failed = self.probes_slow = 0
        if state == OPEN:
            self.probe_at = now + self.model.open_for
        elif state == HALF_OPEN:
            self.probe_at = now  # when it began
        elif state == CLOSED:
            self.window.clear()
