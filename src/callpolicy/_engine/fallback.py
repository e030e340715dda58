"""Fallbacks: the outermost layer of a call. When the call gives up (its retries are over,
a quota would not admit it in time, an account limit, an open circuit), serve the last good
result for the same arguments, else call the policy's fallback function.

`FallbackRunner` is a `Runner` whose two shells catch what the whole call (deadline,
retries, quotas, attempts) raised. Only a give-up of this policy, of a kind its `on` lists,
is served: any other error (not retried, a programming error, a give-up of a nested call's
policy) propagates unchanged. The fallback function is called with the call's own arguments
(`last_fallback()` tells it the error); an error it raises propagates with the give-up as
its cause. Policies without a fallback get a plain `Runner`: their calls pay nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from callpolicy._engine import fallback_used
from callpolicy._engine.fallback_used import FallbackEvent
from callpolicy._engine.last_good import LastGood
from callpolicy._engine.outcomes import describe_exception
from callpolicy._engine.resilience import ResilienceStore
from callpolicy._engine.runner import Args, Kwargs, Runner
from callpolicy._engine.traced import Traced, async_traced_call, traced_call
from callpolicy._errors import (
    AccountLimit,
    CircuitOpen,
    QuotaExceeded,
    RetryExhausted,
    gave_up_by,
)
from callpolicy._events import HOOKS
from callpolicy._model import Policy
from callpolicy._options import Costing
from callpolicy._quotas import QuotaStore
from callpolicy._stats import Tally


def build_runner(
    policy: Policy,
    quotas: QuotaStore,
    tally: Tally | None = None,
    layers: ResilienceStore | None = None,
) -> Runner:
    """The runner of a policy: with its fallback around it when it declares one."""
    if policy.fallback is None:
        return Runner(policy, quotas, tally, layers)
    return FallbackRunner(policy, quotas, tally, layers)


def give_up_kind(error: BaseException, policy: str) -> str | None:
    """Which give-up of `policy` `error` is ("retries", "quota", "account", "circuit"), or
    None: an error the policy did not give up with, or one no fallback may hide (a cost
    above a quota's limit, which no wait would ever admit)."""
    kind: str | None = None
    if isinstance(error, RetryExhausted):
        kind = "retries"
    elif isinstance(error, QuotaExceeded):
        if error.reason == "cost":
            return None  # a cost above the quota's limit: never admitted, a programming error
        kind = "quota"
    elif isinstance(error, AccountLimit):
        kind = "account"
    elif isinstance(error, CircuitOpen):
        kind = "circuit"
    elif gave_up_by(error) == policy:
        return "retries"
    if kind is not None and getattr(error, "policy", None) != policy:
        return None  # a nested call's give-up, which this call did not retry
    return kind


def _name(function: Callable[..., Any] | None) -> str | None:
    if function is None:
        return None
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{name}" if module else name


def _chain(failed: BaseException, error: BaseException) -> None:
    """The fallback's own error keeps the give-up as its cause (unless it has its own)."""
    if failed.__cause__ is None:
        failed.__cause__ = error


class FallbackRunner(Runner):
    """A `Runner` whose calls serve the policy's fallback when they give up."""

    def __init__(
        self,
        policy: Policy,
        quotas: QuotaStore,
        tally: Tally | None = None,
        layers: ResilienceStore | None = None,
    ) -> None:
        super().__init__(policy, quotas, tally, layers)
        fallback = policy.fallback
        assert fallback is not None
        self.kinds = fallback.on
        self.last_good = None if fallback.last_good is None else LastGood(policy.name, fallback)
        self.function = fallback.call
        self.function_name = fallback.call_name or _name(fallback.call)

    def call(
        self,
        fn: Callable[..., Any],
        args: Args,
        kwargs: Kwargs,
        costing: Costing | None = None,
        trace: Traced = None,
    ) -> Any:
        if trace is None and HOOKS.traced:  # the trace covers the fallback too
            return traced_call(self, fn, args, kwargs, costing)
        try:
            result = Runner.call(self, fn, args, kwargs, costing, trace or False)
        except Exception as error:
            plan = self._plan(error, fn, args, kwargs)
            if plan is None:
                fallback_used.settle(None)
                raise  # unchanged: not a give-up this fallback stands in for
            kind, found = plan
            if found is not None:
                return self._serve(kind, error, found)
            function = self.function
            assert function is not None
            if inspect.iscoroutinefunction(function):
                fallback_used.settle(None)
                raise TypeError(
                    f"{self.name}: fallback.call {self.function_name} is a coroutine function, "
                    "which a sync call cannot await; give it a plain function"
                ) from error
            event = self._serve(kind, error, None)
            token = fallback_used.enter(self.name)
            try:
                result = function(*args, **kwargs)
            except BaseException as failed:
                self._failed(failed, error)
                raise
            finally:
                fallback_used.leave(token)
            self._refuse_unrun(result, error)
            fallback_used.settle(event)  # the function may have made calls of its own
            return result
        except BaseException:
            fallback_used.settle(None)
            raise
        if self.last_good is not None:
            self._keep(fn, args, kwargs, result)
        fallback_used.settle(None)
        return result

    async def async_call(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: Args,
        kwargs: Kwargs,
        costing: Costing | None = None,
        trace: Traced = None,
    ) -> Any:
        if trace is None and HOOKS.traced:
            return await async_traced_call(self, fn, args, kwargs, costing)
        try:
            result = await Runner.async_call(self, fn, args, kwargs, costing, trace or False)
        except Exception as error:
            plan = self._plan(error, fn, args, kwargs)
            if plan is None:
                fallback_used.settle(None)
                raise  # unchanged: not a give-up this fallback stands in for
            kind, found = plan
            if found is not None:
                return self._serve(kind, error, found)
            function = self.function
            assert function is not None
            event = self._serve(kind, error, None)
            token = fallback_used.enter(self.name)
            try:
                result = function(*args, **kwargs)
                if inspect.isawaitable(result):  # an async fallback, or a sync one
                    result = await result
            except BaseException as failed:
                self._failed(failed, error)
                raise
            finally:
                fallback_used.leave(token)
            fallback_used.settle(event)  # the function may have made calls of its own
            return result
        except BaseException:
            fallback_used.settle(None)
            raise
        if self.last_good is not None:
            self._keep(fn, args, kwargs, result)
        fallback_used.settle(None)
        return result

    # -- shared by both flavours -------------------------------------------------------------
    def _keep(self, fn: Callable[..., Any], args: Args, kwargs: Kwargs, result: Any) -> None:
        assert self.last_good is not None
        key = self.last_good.key(fn, args, kwargs)
        if key is not None:
            self.last_good.store(key, result)

    def _plan(
        self, error: Exception, fn: Callable[..., Any], args: Args, kwargs: Kwargs
    ) -> tuple[str, tuple[Any, float] | None] | None:
        """What stands in for `error`: the give-up's kind and the last good result with its
        age, or None for the fallback function; or nothing (None: raise it). Not the
        function while it is already serving this policy in this context (a fallback
        calling its own decorated function): the give-up is raised instead."""
        kind = give_up_kind(error, self.name)
        if kind is None or kind not in self.kinds:
            return None
        found = None
        if self.last_good is not None:
            key = self.last_good.key(fn, args, kwargs)
            found = None if key is None else self.last_good.recall(key)
        if found is None and (self.function is None or fallback_used.serving(self.name)):
            return None  # nothing to serve: the give-up is the outcome
        return kind, found

    def _serve(self, kind: str, error: Exception, found: tuple[Any, float] | None) -> Any:
        """The use noted (log, hooks, `last_fallback()`, stats): the last good result is
        returned; for the function, the event (it is about to be called)."""
        cause = describe_exception(error)
        if found is not None:
            event = FallbackEvent(self.name, kind, "last_good", error, cause, age=found[1])
        else:
            event = FallbackEvent(
                self.name, kind, "call", error, cause, function=self.function_name
            )
        fallback_used.note(event)
        self.tally.fell_back()
        return event if found is None else found[0]

    @staticmethod
    def _failed(failed: BaseException, error: Exception) -> None:
        """The fallback function raised: the call raises that (an error with the give-up as
        its cause), and `last_fallback()` says no fallback served it."""
        if isinstance(failed, Exception):
            _chain(failed, error)
        fallback_used.settle(None)

    def _refuse_unrun(self, result: Any, error: Exception) -> None:
        """A sync call's fallback must return its result, not work a caller would have to
        run (a coroutine, an awaitable, a generator): closed, and a TypeError."""
        if inspect.isawaitable(result) or inspect.isgenerator(result):
            what = "a generator" if inspect.isgenerator(result) else "an awaitable"
            close = getattr(result, "close", None)
            if callable(close):
                close()  # never run: no "coroutine was never awaited" warning
            fallback_used.settle(None)
            raise TypeError(
                f"{self.name}: fallback.call {self.function_name} returned {what} "
                f"({type(result).__name__}), which a sync call cannot run as its result; "
                "give it a plain function that returns the result"
            ) from error
