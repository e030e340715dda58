"""`@policy("service.endpoint")`: one decorator for functions, methods and coroutines.

The name is resolved on the first call, not at decoration, so modules may be imported before
policies are loaded; the compiled policy is cached until the registry loads again.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from callpolicy.options import Costing

if TYPE_CHECKING:
    from callpolicy.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])


def policy(
    name: str,
    *,
    registry: Registry | None = None,
    cost: float | Callable[..., float] | None = None,
    actual_cost: Callable[[Any], float] | None = None,
) -> Callable[[F], F]:
    """Apply the retry, wait, stop and quota rules of policy `name` (e.g. "spotify.tracks").

    Works on plain functions, methods and `async def` functions; generator functions are
    refused (a generator's body runs after the call returns, out of the policy's reach).
    For weighted quotas, `cost` is what a call takes (a number, or a function of the call's
    arguments; 1 by default) and `actual_cost(result)` corrects it once the call returned.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"policy name must be a non-empty string like 'spotify.tracks' (got {name!r})"
        )

    def apply(fn: F) -> F:
        from callpolicy.registry import default_registry  # noqa: PLC0415 (import cycle)

        costing = None if cost is None and actual_cost is None else Costing(cost, actual_cost)
        return decorate(fn, name, registry or default_registry, costing)

    return apply


def decorate(fn: F, name: str, registry: Registry, costing: Costing | None = None) -> F:
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

    def bind() -> Any:
        generation = registry.generation
        compiled = registry.compiled(name, where)
        cache[0] = (generation, compiled)
        return compiled

    if _is_async(fn, inner):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            generation, compiled = cache[0]
            if generation != registry.generation:
                compiled = bind()
            return await compiled.acall(fn, args, kwargs, costing)

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
