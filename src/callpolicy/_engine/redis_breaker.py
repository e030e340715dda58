"""A circuit breaker shared through Redis: every process using the same storage and breaker
name opens, probes and closes together. The decisions are the Lua scripts of redis_breaker_lua.py,
atomic in Redis; this process keeps the last state Redis told it (never going back to an older
generation).

Round trips: an attempt's outcome is one script call, whose reply says the breaker's state
(so a process learns of a change another made with its next outcome); entering costs none
while the breaker is closed (as last told, within REFRESH seconds) or open before its probe
time, and one script call otherwise (a trial call is taken in Redis: `probes` in all
processes). Each operation is written once, as steps (see callpolicy._steps), and the reply
read by plain functions of it: sync callers make the script call in their thread, async
callers await it on a redis.asyncio client of their event loop (each at most the storage's
`timeout`). A task cancelled while it awaits one does not cancel the round trip: its reply is
still read when it comes (a state told, a change logged), and a trial call it took is given
back, from the thread; unless the loop ends first (then the half-open lease frees it, as for a
process killed mid-trial).

When Redis cannot be reached or fails, the attempt goes through uncounted (the breaker fails
open: it protects the server, and refusing every call because Redis is away would make the
outage ours), warned at most once a minute, and Redis is not asked again for DOWN_FOR
seconds: during an outage, attempts pay no timeout each.
"""

from __future__ import annotations

import asyncio
from functools import partial
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
from callpolicy._quotas.redis.connect import LoopScripts, sync_scripts
from callpolicy._quotas.redis.errors import FAILED, shown
from callpolicy._steps import Step, Steps, async_run, run
from callpolicy._text import Throttled, format_seconds

DOWN_FOR = 5.0  # after Redis failed, attempts go uncounted this long without asking it
REFRESH = 1.0  # a closed state told longer ago than this is asked again before an attempt
TTL_MS = 24 * 3600 * 1000  # a breaker's keys go a day after its last outcome
UNCOUNTED = -1  # an attempt let through while Redis was away: its outcome is not recorded
_unreachable = Throttled(60.0)
ENTERED, RECORDED, GIVEN_BACK = 0, 1, 2  # the scripts, in this order
ASK = -3  # enter: the state this process knows does not decide, Redis is asked


class RedisBreaker:
    """One breaker's state in Redis, as this process last saw it."""

    remote = True  # its operations may block: async callers await them (see _steps.Method)

    def __init__(self, model: Breaker) -> None:
        self.model = model
        self.name = model.name
        storage = model.storage
        self.url = storage.url
        self.scripts = sync_scripts(storage, ENTER, RECORD, CANCEL)
        self.loop_scripts = LoopScripts(storage, ENTER, RECORD, CANCEL)
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

    # -- the shells: the operations below, run in this thread or awaited -----------------------
    def enter(self, now: float) -> int | None:
        """The generation an attempt starting `now` counts in; None: refused."""
        known = self._known(now)
        return known if known != ASK else run(self.entering(now))

    async def async_enter(self, now: float) -> int | None:
        known = self._known(now)
        return known if known != ASK else await async_run(self.entering(now))

    def record(self, generation: int, outcome: int, now: float) -> None:
        run(self.recording(generation, outcome, now))

    async def async_record(self, generation: int, outcome: int, now: float) -> None:
        await async_run(self.recording(generation, outcome, now))

    def cancel(self, generation: int) -> None:
        run(self.cancelling(generation))

    async def async_cancel(self, generation: int) -> None:
        await async_run(self.cancelling(generation))

    def retry_in(self, now: float) -> float:
        return max(0.0, self.probe_at - now) if self.state is OPEN else 0.0

    # -- the operations, as steps -------------------------------------------------------------
    def entering(self, now: float) -> Steps[int | None]:
        """Redis asked whether an attempt may go (`_known` did not decide)."""
        try:
            reply = yield Script(self, ENTERED, self.enter_args, now)
        except FAILED as error:
            self._unreachable(error, now)
            return UNCOUNTED
        return self._entered(reply, now)

    def recording(self, generation: int, outcome: int, now: float) -> Steps[None]:
        if generation == UNCOUNTED or now < self.down_until:
            return
        args = [TTL_MS, generation, outcome, *self.args]
        try:
            reply = yield Script(self, RECORDED, args, now)
        except FAILED as error:
            self._unreachable(error, now)
            return
        self._recorded(reply, now)

    def cancelling(self, generation: int) -> Steps[None]:
        """Give back a trial call: whenever the ticket's generation was a half-open one
        (this process's view may have moved on since)."""
        if generation != self.trial:
            return
        now = CLOCK.now()
        if now < self.down_until:
            return
        try:
            yield Script(self, GIVEN_BACK, [TTL_MS, generation], now)
        except FAILED as error:
            self._unreachable(error, now)

    # -- the decisions: what this process knows, and each reply read --------------------------
    def _known(self, now: float) -> int | None:
        """The generation, or None (refused), when the state this process knows decides;
        ASK: Redis is asked. UNCOUNTED while Redis is not asked after a failure."""
        state = self.state
        if state is CLOSED and now - self.told < REFRESH:
            return self.generation
        if state is OPEN and now < self.probe_at:
            return None
        if now < self.down_until:
            return UNCOUNTED
        return ASK

    def _entered(self, reply: list[Any], now: float) -> int | None:
        state_code, generation, wait_ms, changed = map(int, reply)
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

    def _recorded(self, reply: list[Any], now: float) -> None:
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

    def _told(self, state_code: int, generation: int, wait_ms: int, now: float) -> None:
        if generation < self.generation:
            return  # an older reply, overtaken by one already known
        self.state = BREAKER_STATES[state_code]
        self.generation = generation
        self.told = now
        self.probe_at = now + max(wait_ms, 0) / 1000 if self.state is OPEN else 0.0

    def _late(self, script: int, now: float, done: asyncio.Future[Any]) -> None:
        """The reply of a round trip whose caller was cancelled meanwhile, read as any: an
        outcome recorded is told; a trial call taken for an attempt now never made is given
        back."""
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            if isinstance(error, FAILED):
                self._unreachable(error, now)
            return
        if script == RECORDED:
            self._recorded(done.result(), now)
        elif script == ENTERED:
            generation = self._entered(done.result(), now)
            if generation is not None and int(done.result()[0]) == 2:  # a trial call taken
                # given back in the thread: rare, and a task for it could be cancelled in
                # turn when the loop ends (asyncio.run cancels every task left)
                self.cancel(generation)

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


class Script(Step):
    """One of the breaker's scripts: on the sync client, or awaited on the event loop's. The
    awaited round trip is shielded: a cancelled caller leaves it to end, its reply read then."""

    __slots__ = ("args", "breaker", "now", "script")

    def __init__(self, breaker: RedisBreaker, script: int, args: list[Any], now: float) -> None:
        self.breaker = breaker
        self.script = script
        self.args = args
        self.now = now

    def sync(self) -> list[Any]:
        breaker = self.breaker
        reply: list[Any] = breaker.scripts[self.script](breaker.keys, self.args)
        return reply

    async def async_(self) -> list[Any]:
        breaker = self.breaker
        call = breaker.loop_scripts.get()[self.script](breaker.keys, self.args)
        pending = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(partial(breaker._late, self.script, self.now))
            raise
