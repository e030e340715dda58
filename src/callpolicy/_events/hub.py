"""Hooks: who receives which events, and emitting one (logged, then passed to hooks).

`add_hook(hook, kinds)` registers a callable for some kinds of events (all by default).
While a hook of a per-call kind (attempt_start, attempt_end, call_end) is registered, calls
are traced (`HOOKS.traced`): each gets an id, which every event of the call carries, and its
attempts and end are events. Hooks of the other kinds only (sleeps, give-ups...) cost the
calls nothing: their events carry the id 0 unless calls are traced for another hook.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from callpolicy._events.kinds import EVENT_KINDS
from callpolicy._forks import renew_after_fork
from callpolicy._text import Throttled

logger = logging.getLogger("callpolicy")


class Event(Protocol):
    """What every event has (see kinds.py and sleep.py)."""

    @property
    def kind(self) -> str: ...

    @property
    def policy(self) -> str: ...

    @property
    def attempt(self) -> int: ...

    @property
    def call_id(self) -> int: ...

    @property
    def level(self) -> int: ...

    def message(self) -> str | None: ...

    def extra(self) -> dict[str, object]: ...


Hook = Callable[[Any], None]
PER_CALL = frozenset({"attempt_start", "attempt_end", "call_end"})  # kinds that trace calls


class _Hooks:
    """The registered hooks by kind, rebuilt (copy on write) when one is added or removed,
    so emitting reads a tuple without a lock."""

    def __init__(self) -> None:
        self.traced = False  # a hook of a per-call kind is registered: calls are traced
        self.by_kind: dict[str, tuple[Hook, ...]] = {}
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def add(self, hook: Hook, kinds: Iterable[str] | None) -> Callable[[], None]:
        if not callable(hook):
            raise TypeError(f"a hook must be callable (got {hook!r})")
        if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
            getattr(hook, "__call__", None)  # noqa: B004 (the method, not callability)
        ):
            raise TypeError(
                f"a hook is called in the call's thread or task and not awaited: {hook!r} is "
                "a coroutine function; give a plain function (it may schedule a task)"
            )
        if isinstance(kinds, str):
            kinds = (kinds,)
        wanted = frozenset(EVENT_KINDS if kinds is None else kinds)
        unknown = sorted(wanted - set(EVENT_KINDS))
        if unknown:
            raise ValueError(f"unknown event kinds {unknown}; known: {', '.join(EVENT_KINDS)}")
        entry = _Entry(hook, wanted)
        with self._lock:
            self._entries.append(entry)
            self._rebuild()

        def remove() -> None:
            with self._lock:
                kept = [e for e in self._entries if e is not entry]  # this registration only
                if len(kept) != len(self._entries):
                    self._entries = kept
                    self._rebuild()

        return remove

    def _rebuild(self) -> None:
        self.by_kind = {
            kind: tuple(e.hook for e in self._entries if kind in e.kinds) for kind in EVENT_KINDS
        }
        self.traced = any(e.kinds & PER_CALL for e in self._entries)


class _Entry:
    """One registration (the same hook may be registered twice: removed one at a time)."""

    __slots__ = ("hook", "kinds")

    def __init__(self, hook: Hook, kinds: frozenset[str]) -> None:
        self.hook = hook
        self.kinds = kinds


HOOKS = _Hooks()
_hook_failures = Throttled(60.0)


def add_hook(hook: Hook, kinds: Iterable[str] | None = None) -> Callable[[], None]:
    """Call `hook(event)` for every event of the given kinds ("attempt_start", "sleep",
    "give_up", ...; all by default) of every policy, in the call's thread or task; returns a
    function removing this registration. A hook that raises an Exception is ignored (said
    at most once a minute per hook): it never changes what a call returns or raises."""
    return HOOKS.add(hook, kinds)


def add_sleep_hook(hook: Hook) -> Callable[[], None]:
    """Call `hook(event)` before every sleep of every policy (`SleepEvent`s); returns a
    function removing it. The same as `add_hook(hook, ["sleep"])`."""
    return HOOKS.add(hook, ("sleep",))


def wants(kind: str) -> bool:
    """Whether an event of `kind` would reach a hook."""
    return bool(HOOKS.by_kind.get(kind))


def listening(kind: str = "sleep") -> bool:
    """Whether an event of `kind` would reach anyone: a hook, or the log at INFO."""
    return bool(HOOKS.by_kind.get(kind)) or logger.isEnabledFor(logging.INFO)


def emit(event: Event) -> None:
    """Log `event` (if it is logged and the level is enabled), then pass it to its hooks."""
    level = event.level
    if logger.isEnabledFor(level):
        message = event.message()
        if message is not None:
            logger.log(level, message, extra=event.extra())
    for hook in HOOKS.by_kind.get(event.kind, ()):
        try:
            hook(event)
        except Exception as error:  # a hook never changes what the call returns or raises
            name = getattr(hook, "__qualname__", None)
            _hook_failures.warn(
                (id(hook), name, type(error)),
                "hook %r raised %s: %s on a %s event (ignored; said at most once a minute "
                "per hook)",
                name or hook,
                type(error).__name__,
                error,
                event.kind,
                policy=event.policy,
            )
