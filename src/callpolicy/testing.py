"""Test mode: a fake clock, so policies sleep for no real time and tests stay exact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from callpolicy._clock import CLOCK


class FakeClock:
    """Monotonic time that moves only when a policy sleeps or a test calls `advance`.

    `sleeps` records every sleep in order (seconds). It starts at the real monotonic time so
    quota windows opened before it stay consistent.
    """

    def __init__(self, start: float | None = None) -> None:
        self.time = time.monotonic() if start is None else start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (got {seconds!r})")
        self.time += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # still let other tasks run, as a real sleep would

    @property
    def slept(self) -> float:
        """Total seconds slept."""
        return sum(self.sleeps)


@contextmanager
def fake_time(clock: FakeClock | None = None) -> Iterator[FakeClock]:
    """Within the block every policy reads and sleeps on `clock` (a new `FakeClock` by default)."""
    fake = clock or FakeClock()
    previous = CLOCK.use(fake.now, fake.sleep, fake.async_sleep)
    try:
        yield fake
    finally:
        CLOCK.use(*previous)
