"""Wrapping a function, method or coroutine function in a policy (`@policy` builds on it).

The name is resolved on the first call, not at decoration, so modules may be imported before
policies are loaded; the runner is cached until the registry loads again.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from callpolicy._engine import Runner
from callpolicy._options import Costing

F = TypeVar("F", bound=Callable[..., Any])


class Runners(Protocol):
    """Where a wrapper finds its runner: a registry."""

    generation: int

    def runner(self, name: str, where: tuple[str, int] | None = None) -> Runner: ...


def decorate(fn: F, name: str, registry: Runners, costing: Costing | None = None) -> F:
    if isinstance(fn, (staticmethod, classmethod)):  # @policy above @staticmethod
        return type(fn)(decorate(fn.__func__, name, registry, costing))
    if not callable(fn):
        raise TypeError(f"@policy({name!r}) must decorate a function (got {fn!r})")
    inner = inspect.unwrap(fn)
    if inspect.isgeneratorfunction(inner) or inspect.isasyncgenfunction(inner):
        raise TypeError(
            f"@policy({name!r}) cannot wrap generator function {inner.__qualname__}: its body "
            "runs while it is iterated, after the call returned, so no retry could cover it. "
            "Decorate a function that returns the collected results (e.g. a list) instead."
        )
    where = _where(fn)
    # (generation, compiled): re-bound when the registry loads new policies. One tuple, so
    # a thread never sees a generation paired with another generation's policy.
    cache: list[tuple[int, Any]] = [(-1, None)]

    def bind() -> Runner:
        generation = registry.generation
        compiled = registry.runner(name, where)
        cache[0] = (generation, compiled)
        return compiled

    if _is_async(fn, inner):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            generation, compiled = cache[0]
            if generation != registry.generation:
                compiled = bind()
            return await compiled.async_call(fn, args, kwargs, costing)

        wrapper: Any = async_wrapper
    else:

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            generation, compiled = cache[0]
            if generation == registry.generation:
                return compiled.call(fn, args, kwargs, costing)
            return _checked(name, fn, bind().call(fn, args, kwargs, costing))

        wrapper = sync_wrapper
    wrapper.__callpolicy__ = name
    return wrapper  # type: ignore[no-any-return]


def _is_async(fn: Callable[..., Any], inner: Callable[..., Any]) -> bool:
    """`async def` functions, wrapped ones, and objects with an `async def __call__`."""
    call = getattr(type(fn), "__call__", None)  # noqa: B004 (the method, not callability)
    return (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(inner)
        or (not inspect.isfunction(fn) and inspect.iscoroutinefunction(call))
    )


def _checked(name: str, fn: Callable[..., Any], result: Any) -> Any:
    """On a sync function's first call: refuse a coroutine or generator it returned, which
    the policy could not have covered (their work runs after the call returned)."""
    if inspect.iscoroutine(result) or inspect.isgenerator(result):
        result.close()
        kind = "a coroutine" if inspect.iscoroutine(result) else "a generator"
        raise TypeError(
            f"@policy({name!r}): {getattr(fn, '__qualname__', fn)!r} returned {kind}, which "
            "no retry could cover; decorate an `async def` function (or return a list)"
        )
    if inspect.isawaitable(result):
        raise TypeError(
            f"@policy({name!r}): {getattr(fn, '__qualname__', fn)!r} returned an awaitable; "
            "decorate an `async def` function instead"
        )
    return result


def _where(fn: Callable[..., Any]) -> tuple[str, int] | None:
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return None
    return code.co_filename, code.co_firstlineno
