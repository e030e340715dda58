"""The adaptive rate of a quota (`adapt`): what it does on each answer, decided without I/O.

A refusal (a status of `adapt.statuses`, 429 and 503 by default) is a congestion event: the
rate is cut to ADAPT_BETA of itself (never below the floor; in memory, when the quota was
saturated, to ADAPT_MEASURED_BETA of what passed in the last period, never below BETA of the
rate). Every refusal restarts the probing clock, at the floor too. Refusals answered within one
period of a cut (ADAPT_HOLD) belong to the same event, whatever their number: the server is
still counting the calls sent at the rate before the cut, and 10 calls in flight must not cut
it 10 times. So does a later refusal of a call sent before the cut, when the client says when
it was sent (a server slower than a period). In memory (every answer seen here) the event ends
sooner: once fewer calls than the new rate passed in the last period (the calls of before the
cut have left the server's window), a refusal of a call the client says it sent after the cut,
answered after the hold and an interval at the new rate, with the quota used to it, is a new
event (the limit fell below the cut). A cut in memory also holds the quota's calls (a bucket's:
a sliding window holds its own) until fewer than the new rate of those that passed are left in
the last period: the server's window is full, a call sent into it is refused. Every other
answer lets the rate probe upward (never above the ceiling), while the calls use it (ADAPT_BUSY
of it, and 2 calls, answered in the last period; a quota barely used learns nothing about the
server's limit, and would otherwise climb to its ceiling unseen); the time between two answers
counts at most a period, and only when the last period's answers show the rate used, so an idle
hour is never probing time:

- "cubic" (RFC 8312, as the AWS SDKs' adaptive retry mode): the rate follows
  `w_max + c * w_max * (t - K)**3`, `t` the busy periods since the cut, `w_max` the rate
  cut from (lowered when cuts come at falling rates: fast convergence; no higher than the
  calls answered in the last period: a rate not used was not tried), `K` the periods it
  takes to get back there: fast far below, flat near the rate of the last cut, then probing
  beyond it slowly, then faster.
- "aimd": the rate grows by a step per busy period (ADAPT_AIMD_STEP of the rate at the last
  cut, or of the declared limit; at least 1 call).

It starts at the declared rate, on the flat of the curve (as if just back at a last cut).
A limit changed from elsewhere (announced by a header, or adapted by another process through
Redis) becomes the rate to start from (within the bounds that apply: learn's and adapt's);
while a limit announced by headers is fresh (ADAPT_ANNOUNCED_HOLD periods), the rate neither
probes nor cuts for answers that announce one: headers win when present. A success checks for
a probe at most once per tenth of a period (the curve is not evaluated on every call). Times
are in seconds; rates in calls per the quota's period.
"""

from __future__ import annotations

import math

from callpolicy._model import (
    ADAPT_AIMD_STEP,
    ADAPT_ANNOUNCED_HOLD,
    ADAPT_BETA,
    ADAPT_BUSY,
    ADAPT_CUBIC_RETURN,
    ADAPT_HOLD,
    ADAPT_MEASURED_BETA,
    Adapt,
)
from callpolicy._model.adapt import ADAPT_SATURATED

Change = tuple[int, str, bool]  # (calls per period, why, is a probe)


class AdaptiveRate:
    """One quota's adaptive rate. Not thread-safe: its owner (learned.py) serialises calls."""

    def __init__(
        self,
        adapt: Adapt,
        calls: int,
        period: float,
        now: float,
        measures: bool = True,
        bounds: tuple[int, int] | None = None,
    ) -> None:
        self.adapt = adapt
        self.measures = measures  # the answers seen here are all the quota's (not shared)
        self.period = period
        low, high = bounds or (adapt.floor.calls, adapt.ceiling.calls)  # with learn's: both
        self.low, self.high = float(low), float(high)
        self.cubic = adapt.algorithm == "cubic"
        self.cuts = 0  # congestion events that cut the rate
        self.cut_at = -math.inf
        self.announced_at = -math.inf
        self.probe_at = -math.inf  # the next time a success may probe
        self.held = -math.inf  # after a cut: no call before then (the server's window is full)
        self._start(float(calls), now)
        self.answers = Trailing(period)  # answered, passed and refused in the last period

    def _start(self, rate: float, now: float) -> None:
        """Start again from `rate` calls, on the flat of the curve."""
        self.rate = self.base = rate
        self.w_max = rate
        self.step = max(1.0, ADAPT_AIMD_STEP * rate)
        self.calls = self._calls(rate)
        self.known = int(rate)  # the limit in force as last seen or set here
        self.busy_for = ADAPT_CUBIC_RETURN if self.cubic else 0.0  # busy periods since the base
        self.seen = now

    def _calls(self, rate: float) -> int:
        return int(min(max(math.floor(rate + 1e-9), self.low), self.high))

    def answer(
        self, now: float, status: int, in_force: int, announced: bool, sent: float | None = None
    ) -> Change | None:
        """One answer of `status` (`announced`: it announced a limit, followed elsewhere) at
        `now` to a call sent at `sent` (None: not known), the limit in force being
        `in_force`: the new limit and why, if it changes."""
        if in_force != self.known:  # changed elsewhere (headers, another process)
            falling = in_force < self.known
            self._start(float(in_force), now)
            if falling:
                self.cut_at = now  # the refusals still coming belong to that change
        if announced:
            self.announced_at = now
        refused = status in self.adapt.statuses
        answers = self.answers.add(now, refused)
        if refused:
            self.busy_for = 0.0  # probing starts again from each refusal, at the floor too
        elif answers.answered >= max(2.0, ADAPT_BUSY * self.calls):  # the calls use the rate
            # no more than a period: an idle gap counts only when the last period's answers
            # show the rate used (after an idle hour, the first answers do not)
            self.busy_for += min(now - self.seen, self.period) / self.period
        self.seen = now
        if announced:
            return None  # headers win
        if refused:
            return self._refused(now, status, answers, sent)
        return self._passed(now)

    def _refused(
        self, now: float, status: int, answers: Counts, sent: float | None
    ) -> Change | None:
        if sent is not None and sent <= self.cut_at:
            return None  # a call in flight at the cut (a slow server): the same event
        if now - self.cut_at < ADAPT_HOLD * self.period and not (
            sent is not None and self._drained(now, answers)
        ):
            # the same congestion event; only a call known sent after the cut can tell
            # the limit fell meanwhile (one in flight at it is answered any time)
            return None
        self.cut_at = now
        old = float(self.calls)  # the limit in force, as logged (not a probe's fraction)
        if old <= self.low:
            return None  # nothing left to cut
        passed = answers.passed
        answered = answers.answered
        measured = self.measures and answered >= ADAPT_SATURATED * old and passed < old
        if measured and passed * ADAPT_MEASURED_BETA >= old * ADAPT_BETA:
            # A server counting calls over a window refuses once it holds its limit: what
            # passed in the last period of a quota used to the rate is that limit, as near as
            # can be told. Start below it (its window is full), the curve flat at it.
            w_max = float(passed)
            rate = passed * ADAPT_MEASURED_BETA
            why = (
                f"{passed} passed in the last period, the rate cut to {ADAPT_MEASURED_BETA:g} of it"
            )
        else:
            # fast convergence: cut again below the last plateau, the server's limit fell
            w_max = old if old >= self.w_max else old * (1.0 + ADAPT_BETA) / 2.0
            rate = old * ADAPT_BETA
            if self.measures:  # the plateau no higher than what was sent (botocore's too)
                w_max = max(min(w_max, answered), rate)
            why = f"a congestion event, the rate cut to {ADAPT_BETA:g} of itself"
            if measured:  # what passed was lower still (a server that counts refusals too)
                why += f" ({passed} passed in the last period: never lower in one event)"
        if rate < self.low:
            rate = self.low
            why += ", at the floor"
        # the curve's plateau never below the floor
        self.w_max = max(self.low, w_max)
        self.rate = self.base = rate
        self.step = max(1.0, ADAPT_AIMD_STEP * old)
        calls = self._calls(self.rate)
        if calls == self.calls:
            return None  # the same whole number: no change, no cut counted or logged
        self.cuts += 1
        self.calls = self.known = calls
        if self.measures:
            self.held = self.answers.below(calls)
        return calls, f"HTTP {status}: {why}", False

    def _drained(self, now: float, answers: Counts) -> bool:
        """Whether a refusal after a cut is a new congestion event all the same: in memory,
        when the quota is used to the new rate but fewer calls than it passed in the last
        period (the calls of before the cut have left the server's window: they no longer
        explain it), answered after the hold and an interval at the rate (not a call in
        flight at the cut)."""
        after = max(self.held, self.cut_at + self.period / max(self.calls, 1))
        used = answers.answered >= ADAPT_SATURATED * self.rate
        return self.measures and used and answers.passed < self.rate and now >= after

    def _passed(self, now: float) -> Change | None:
        if now < self.probe_at:
            return None  # checked lately: at most once per tenth of a period
        self.probe_at = now + self.period / (Trailing.SLOTS - 1)
        if now - self.announced_at < ADAPT_ANNOUNCED_HOLD * self.period:
            return None  # a limit announced lately holds: no probing above it
        t = self.busy_for
        if self.cubic:
            k = ADAPT_CUBIC_RETURN
            c = (1.0 - ADAPT_BETA) / k**3
            rate = self.w_max * (1.0 + c * (t - k) ** 3)
        else:
            rate = self.base + self.step * t
        self.rate = min(max(rate, self.base), self.high)
        calls = self._calls(self.rate)
        if calls <= self.calls:
            return None
        self.calls = self.known = calls
        since = now - self.cut_at
        quiet = f"for {since:.1f}s" if since < math.inf else "since the start"
        return calls, f"no refusal {quiet}: probing up ({self.adapt.algorithm})", True


class Counts:
    """Answers in the last period."""

    __slots__ = ("answered", "passed")

    def __init__(self) -> None:
        self.answered = self.passed = 0


class Trailing:
    """Answers counted over the last period and a tenth, in slices of a tenth (bounded,
    whatever the rate): a quota's window lets its calls through one period and its guard
    apart, all of them counted here."""

    SLOTS = 11

    def __init__(self, period: float) -> None:
        self.slice = period / (self.SLOTS - 1)
        self.answered = [0] * self.SLOTS
        self.passed = [0] * self.SLOTS
        self.last = 0  # the slice last counted in (its number since the epoch)
        self.totals = Counts()

    def below(self, calls: int) -> float:
        """When fewer than `calls` of the answers that passed here will be left in the last
        period (the server's window, as far as it counts this quota's calls)."""
        left = self.totals.passed
        for index in range(self.last - self.SLOTS + 1, self.last + 1):
            if left < calls:
                return (index + self.SLOTS - 1) * self.slice
            left -= self.passed[index % self.SLOTS]
        return (self.last + self.SLOTS) * self.slice

    def add(self, now: float, refused: bool) -> Counts:
        at = int(now // self.slice)
        if at != self.last:
            for index in range(max(self.last + 1, at - self.SLOTS + 1), at + 1):
                slot = index % self.SLOTS
                self.totals.answered -= self.answered[slot]
                self.totals.passed -= self.passed[slot]
                self.answered[slot] = self.passed[slot] = 0
            self.last = max(at, self.last)
        slot = self.last % self.SLOTS
        self.answered[slot] += 1
        self.totals.answered += 1
        if not refused:
            self.passed[slot] += 1
            self.totals.passed += 1
        return self.totals
