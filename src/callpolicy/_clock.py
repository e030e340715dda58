"""The time source every policy reads and sleeps with; `callpolicy.fake_time()` swaps it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Clock:
    """Monotonic time, a blocking sleep and an event-loop sleep, replaceable as a whole."""

    def __init__(self) -> None:
        self.now: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], None] = time.sleep
        self.async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def use(
        self,
        now: Callable[[], float],
        sleep: Callable[[float], None],
        async_sleep: Callable[[float], Awaitable[None]],
    ) -> tuple[Callable[[], float], Callable[[float], None], Callable[[float], Awaitable[None]]]:
        """Install new time functions; return the previous ones."""
        previous = (self.now, self.sleep, self.async_sleep)
        self.now, self.sleep, self.async_sleep = now, sleep, async_sleep
        return previous


CLOCK = Clock()
