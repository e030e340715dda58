"""Pausing an endpoint when the server says its quota is spent (`[endpoints.x] pause`).

When a response's `X-RateLimit-Remaining` (or the header the policy names) is no more than
the endpoint's other calls already in flight, which will use up what remains, and its reset
header says when the window reopens, the endpoint's next calls wait until then, before the
server has to refuse one. The reset is read like any server hint (strictly, capped by
`pause.max`); a value that is not a usable hint pauses nothing.
"""

from __future__ import annotations

import threading
from typing import Any

from callpolicy._clock import CLOCK
from callpolicy._engine.hints import read_hint
from callpolicy._engine.http import header_values
from callpolicy._errors import QuotaExceeded
from callpolicy._events import QuotaRefused, SleepEvent, emit, wants
from callpolicy._forks import renew_after_fork
from callpolicy._model import Pause


class ServerPause:
    """The pause state of one endpoint, shared by its calls in every thread and task."""

    def __init__(self, policy: str, max_attempts: int, pause: Pause) -> None:
        self.policy = policy
        self.max_attempts = max_attempts
        self.pause = pause
        self.sources = ((pause.reset, pause.format),)
        self.until = 0.0  # CLOCK time before which calls wait
        self.in_flight = 0  # attempts sent and not answered yet
        self._lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0  # the parent's

    def leave(self) -> None:
        """An attempt ended without an answer to read (interrupted, cancelled)."""
        with self._lock:
            self.in_flight = max(self.in_flight - 1, 0)

    def note(self, answer: Any) -> None:
        """Read a response (or an error carrying one) after an attempt."""
        self.leave()
        values = header_values(answer, self.pause.remaining)
        text = values[0].strip() if len(values) == 1 else ""
        # ASCII digits, and few of them: int() refuses more than 4300 digits.
        if not (text.isascii() and text.isdigit() and len(text) <= 15):
            return
        if int(text) > self.in_flight:
            return
        hint = read_hint(self.sources, answer, self.policy)
        if hint is None:
            return
        until = CLOCK.now() + min(hint.seconds, self.pause.max)
        with self._lock:
            self.until = max(self.until, until)

    def left(self, attempt: int, deadline_at: float | None) -> float:
        """Seconds the next attempt must wait (0: none); logged. QuotaExceeded if the wait
        would pass the deadline."""
        now = CLOCK.now()
        left = self.until - now
        if left <= 0:
            return 0.0
        if deadline_at is not None and now + left > deadline_at:
            name = f"{self.policy} (paused by the server)"
            if wants("quota_refused"):
                emit(QuotaRefused(self.policy, attempt, name, "deadline"))
            raise QuotaExceeded(self.policy, name, left, max(deadline_at - now, 0.0), "deadline")
        cause = f"{self.pause.remaining}: 0 until {self.pause.reset}"
        emit(SleepEvent(self.policy, attempt, self.max_attempts, "pause", left, cause, "quota"))
        return left

    def enter(self) -> None:
        """An attempt is about to be sent: in flight until note() or leave()."""
        with self._lock:
            self.in_flight += 1

    def wait(self, attempt: int, deadline_at: float | None) -> None:
        left = self.left(attempt, deadline_at)
        if left:
            CLOCK.sleep(left)

    async def async_wait(self, attempt: int, deadline_at: float | None) -> None:
        left = self.left(attempt, deadline_at)
        if left:
            await CLOCK.async_sleep(left)
