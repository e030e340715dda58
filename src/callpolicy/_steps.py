"""Code written once for sync and async callers (sans-I/O).

What may block (a storage round trip, a sleep, waiting for a turn, the user's function) is
not done by the code that decides: it yields a `Step`, and a driver does it, `run` in the
calling thread or `async_run` awaiting it on the event loop, then sends back the result (or
throws in the error). So each decision is written once and the two flavours cannot drift;
the two drivers are the only twins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from callpolicy._clock import CLOCK
from callpolicy._errors import reraise

R = TypeVar("R")


class Step:
    """Something that may block: `sync()` does it in this thread, `async_()` awaits it."""

    __slots__ = ()

    def sync(self) -> Any:
        raise NotImplementedError

    async def async_(self) -> Any:
        raise NotImplementedError


Steps = Generator[Step, Any, R]


class Method(Step):
    """`obj.<name>(*args)`; async callers await `obj.async_<name>(*args)` instead when `obj`
    may block (its `remote` is true: state behind I/O, or waits)."""

    __slots__ = ("args", "name", "obj")

    def __init__(self, obj: Any, name: str, *args: Any) -> None:
        self.obj = obj
        self.name = name
        self.args = args

    def sync(self) -> Any:
        return getattr(self.obj, self.name)(*self.args)

    async def async_(self) -> Any:
        if self.obj.remote:
            return await getattr(self.obj, f"async_{self.name}")(*self.args)
        return getattr(self.obj, self.name)(*self.args)


class Sleep(Step):
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def sync(self) -> None:
        CLOCK.sleep(self.seconds)

    async def async_(self) -> None:
        await CLOCK.async_sleep(self.seconds)


class Call(Step):
    """The user's function: called (sync), or called and awaited (async)."""

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def sync(self) -> Any:
        return self.fn(*self.args, **self.kwargs)

    async def async_(self) -> Any:
        return await self.fn(*self.args, **self.kwargs)


class Wait(Step):
    """Wait until woken or `timeout` passes (`sync`, `async_` are the waiter's); True if woken."""

    __slots__ = ("async_wait", "timeout", "wait")

    def __init__(
        self,
        wait: Callable[[float], bool],
        async_wait: Callable[[float], Awaitable[bool]],
        timeout: float,
    ) -> None:
        self.wait = wait
        self.async_wait = async_wait
        self.timeout = timeout

    def sync(self) -> bool:
        return self.wait(self.timeout)

    async def async_(self) -> bool:
        return await self.async_wait(self.timeout)


class Raised:
    """What steps return instead of raising the user's error: a generator must not let a
    `StopIteration` out (PEP 479 turns it into RuntimeError), so the driver raises it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _outcome(value: Any) -> Any:
    """The steps' result, or their error raised unchanged (its chain kept as it was)."""
    if not isinstance(value, Raised):
        return value
    reraise(value.error)


def run(steps: Steps[R]) -> R:
    """Drive `steps` in the calling thread."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as done:
            return _outcome(done.value)  # type: ignore[no-any-return]
        try:
            value, error = step.sync(), None
        except BaseException as raised:  # handed to the code that asked for the step
            value, error = None, raised


async def async_run(steps: Steps[R]) -> R:
    """Drive `steps` on the running event loop."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as done:
            return _outcome(done.value)  # type: ignore[no-any-return]
        try:
            value, error = await step.async_(), None
        except BaseException as raised:
            value, error = None, raised
