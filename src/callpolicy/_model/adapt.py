"""An adaptive rate (a quota's `adapt`): for servers that announce no limit and only refuse
(429, 503), the quota's rate backs off multiplicatively on each congestion event and probes
upward while calls pass, within a declared floor and ceiling. The vocabulary and every
constant of the two algorithms live here (the algorithms: _quotas/adaptive.py)."""

from __future__ import annotations

import attrs
from attrs import validators as v

from callpolicy._model.quotas import Rate

# "cubic": the rate after a cut climbs back along a cubic curve, fast far below the rate of
# the last cut, flat near it, then probing beyond it (RFC 8312; the AWS SDKs' adaptive retry
# mode). "aimd": it climbs by a fixed step per period (TCP's classic additive increase).
ADAPT_ALGORITHMS = ("cubic", "aimd")
ADAPT_DEFAULT_ALGORITHM = "cubic"
ADAPT_DEFAULT_STATUSES = (429, 503)
# A cut keeps BETA of the rate (CUBIC's 0.7; the AWS SDKs' too).
ADAPT_BETA = 0.7
ADAPT_MEASURED_BETA = 0.9
# The measured cut (to MEASURED_BETA of what passed in the last period) only when the quota was
# saturated: at least this share of the rate answered (passed or refused) in the last period (a
# quota lightly used says nothing of the server's limit by what passed); a cut never keeps less
# than BETA of the rate either way.
ADAPT_SATURATED = 0.8
# CUBIC: periods after a cut until the rate is back at the rate it was cut from (its K; the
# curve's constant C follows, scaled to that rate, so the shape is the same at 5/1s or 5k/1h).
ADAPT_CUBIC_RETURN = 2.0
# AIMD: the step per busy period without a refusal, as a share of the rate at the last cut
# (or the declared limit; at least 1 call): relative to the rate, whatever the ceiling.
ADAPT_AIMD_STEP = 0.05
# Refusals answering calls sent within one period of a cut (times this) are the same
# congestion event: the server still counts the calls sent at the rate before it (in memory,
# only while more of those that passed than the new rate are left in the last period: a
# refusal after they left says the limit is lower still).
ADAPT_HOLD = 1.0
# With `learn` too: a limit announced this many periods ago still holds; adapt does not probe
# above it (headers win when present).
ADAPT_ANNOUNCED_HOLD = 10.0
# Probe only while calls use the rate: at least this share of it (and 2 calls) answered in the
# last period (else the rate would climb far above what is used, without any evidence, then
# burst into refusals); the time between two answers counts at most a period, and only with
# the last period's answers showing the rate used: an idle quota never probes on its next calls.
ADAPT_BUSY = 0.8


@attrs.frozen
class Adapt:
    """A quota's adaptive rate: `statuses` are refusals (a congestion event cuts the rate),
    `algorithm` how it probes back up; always within [`floor`, `ceiling`] (rates over the
    quota's period)."""

    floor: Rate
    ceiling: Rate
    statuses: frozenset[int] = frozenset(ADAPT_DEFAULT_STATUSES)
    algorithm: str = attrs.field(default=ADAPT_DEFAULT_ALGORITHM, validator=v.in_(ADAPT_ALGORITHMS))

    def __attrs_post_init__(self) -> None:
        if self.floor.period != self.ceiling.period or self.floor.calls > self.ceiling.calls:
            raise ValueError(f"adapt: floor {self.floor} must be <= ceiling {self.ceiling}")
        if not self.statuses:
            raise ValueError("adapt: statuses must name at least one status")

    def __str__(self) -> str:
        return f"adapts by {self.algorithm} within {self.floor}..{self.ceiling}"
