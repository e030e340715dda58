"""A circuit breaker shared through Redis: every process using the same storage and breaker
name opens, probes and closes together. The decisions are the Lua scripts of redis_breaker_lua.py,
atomic in Redis; this process keeps the last state Redis told it (never going back to an older
generation).

Round trips: an attempt's outcome is one script call, whose reply says the breaker's state
(so a process learns of a change another made with its next outcome); entering costs none
while the breaker is closed (as last told, within REFRESH seconds) or open before its probe
time, and one script call otherwise (a trial call is taken in Redis: `probes` in all
processes). The calls are made from the calling thread, in async code too (each at most the
storage's `timeout`). When Redis cannot be reached or fails, the attempt goes through
uncounted (the breaker fails open: it protects the server, and refusing every call because
Redis is away would make the outage ours), warned at most once a minute, and Redis is not
asked again for DOWN_FOR seconds: during an outage, attempts pay no timeout each.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from callpolicy._clock import CLOCK
from callpolicy._engine.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    closed_reason,
    half_open_reason,
    lapsed_reason,
    log_change,
    log_opened,
    opening_reason,
    trial_failed_reason,
)
from callpolicy._engine.redis_breaker_lua import CANCEL, ENTER, RECORD
from callpolicy._model import BREAKER_STATES, TIME_BUCKETS, Breaker
from callpolicy._quotas.redis.connect import sync_scripts
from callpolicy._quotas.redis.errors import FAILED, shown
from callpolicy._text import Throttled, format_seconds

DOWN_FOR = 5.0  # after Redis failed, attempts go uncounted this long without asking it
REFRESH = 1.0  # a closed state told longer ago than this is asked again before an attempt
TTL_MS = 24 * 3600 * 1000  # a breaker's keys go a day after its last outcome
UNCOUNTED = -1  # an attempt let through while Redis was away: its outcome is not recorded
_unreachable = Throttled(60.0)


class RedisBreaker:
    """One breaker's state in Redis, as this process last saw it."""

    def __init__(self, model: Breaker) -> None:
        self.model = model
        self.name = model.name
        storage = model.storage
        self.url = storage.url
        self.enter_script, self.record_script, self.cancel_script = sync_scripts(
            storage, ENTER, RECORD, CANCEL
        )
        base = f"{{{storage.prefix}:breaker}}:{quote(model.name, safe='')}"
        if model.window_calls is not None:
            window, kind, size = f"{model.window_calls}", 0, model.window_calls
        else:
            seconds = model.window_seconds or 0.0
            window, kind = format_seconds(seconds), 1
            size = max(1, round(seconds * 1000 / TIME_BUCKETS))
        self.keys = [base, f"{base}:window:{window}"]  # a new window size starts afresh
        min_calls = model.min_calls if kind else min(model.min_calls, size)
        open_for = round(model.open_for * 1000)
        self.lease = max(model.open_for, model.slow_call)  # half-open undecided: opens again
        lease = round(self.lease * 1000)
        self.enter_args = [TTL_MS, model.probes, open_for, lease]
        self.args = [
            kind,
            size,
            min_calls,
            round(model.failure_ratio * 1000),  # thousandths, compared as integers
            round(model.slow_call_ratio * 1000),
            open_for,
            model.probes,
            lease,
        ]
        self.state = CLOSED
        self.generation = 0
        self.told = float("-inf")  # when Redis last told the state (our clock)
        self.probe_at = 0.0  # open: when trial calls may go (our clock)
        self.trial = -1  # the last half-open generation this process took a trial call in
        self.down_until = float("-inf")  # Redis failed: not asked before then (our clock)

    def enter(self, now: float) -> int | None:
        """The generation an attempt starting `now` counts in; None: refused."""
        state = self.state
        if state is CLOSED and now - self.told < REFRESH:
            return self.generation
        if state is OPEN and now < self.probe_at:
            return None
        if now < self.down_until:
            return UNCOUNTED
        try:
            state_code, generation, wait_ms, changed = map(
                int, self.enter_script(self.keys, self.enter_args)
            )
        except FAILED as error:
            self._unreachable(error, now)
            return UNCOUNTED
        self._told(state_code, generation, wait_ms, now)
        if changed == 1:
            log_change(self.name, HALF_OPEN, half_open_reason(self.model))
        elif changed == 2:
            log_opened(self.model, self._lapsed())
        if wait_ms:
            return None
        if state_code == 2:
            self.trial = max(self.trial, generation)
        return generation

    def retry_in(self, now: float) -> float:
        return max(0.0, self.probe_at - now) if self.state is OPEN else 0.0

    def record(self, generation: int, outcome: int, now: float) -> None:
        if generation == UNCOUNTED or now < self.down_until:
            return
        try:
            reply = self.record_script(self.keys, [TTL_MS, generation, outcome, *self.args])
        except FAILED as error:
            self._unreachable(error, now)
            return
        state_code, new_generation, wait_ms, change, calls, failures, slow = map(int, reply)
        self._told(state_code, new_generation, wait_ms, now)
        if change == 1:
            log_opened(self.model, opening_reason(self.model, calls, failures, slow) or "")
        elif change == 2:
            log_opened(self.model, trial_failed_reason(self.model, calls, failures, slow))
        elif change == 3:
            log_change(self.name, CLOSED, closed_reason(calls, failures))
        elif change == 4:
            log_opened(self.model, self._lapsed())

    def cancel(self, generation: int) -> None:
        """Give back a trial call: whenever the ticket's generation was a half-open one
        (this process's view may have moved on since)."""
        if generation != self.trial:
            return
        now = CLOCK.now()
        if now < self.down_until:
            return
        try:
            self.cancel_script(self.keys, [TTL_MS, generation])
        except FAILED as error:
            self._unreachable(error, now)

    def _told(self, state_code: int, generation: int, wait_ms: int, now: float) -> None:
        if generation < self.generation:
            return  # an older reply, overtaken by one already known
        self.state = BREAKER_STATES[state_code]
        self.generation = generation
        self.told = now
        self.probe_at = now + max(wait_ms, 0) / 1000 if self.state is OPEN else 0.0

    def _lapsed(self) -> str:
        return lapsed_reason(self.lease)

    def _unreachable(self, error: Any, now: float) -> None:
        self.down_until = now + DOWN_FOR
        _unreachable.warn(
            (self.name, type(error).__name__),
            "circuit breaker %s: storage %s unreachable or failing (%s); letting attempts "
            "through uncounted (said at most once a minute)",
            self.name,
            self.model.storage,
            shown(error, self.url),
            breaker=self.name,
        )
