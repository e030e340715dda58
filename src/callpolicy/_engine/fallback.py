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
        self.function_name = _name(fallback.call)

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
        fallback_used.forget()
        try:
            result = Runner.call(self, fn, args, kwargs, costing, trace or False)
        except Exception as error:
            plan = self._plan(error, fn, args, kwargs)
            if plan is None:
                raise  # unchanged: not a give-up this fallback stands in for
            event, served = plan
            if event.source == "last_good":
                return served
            assert self.function is not None
            if inspect.iscoroutinefunction(self.function):
                raise TypeError(
                    f"{self.name}: fallback.call {self.function_name} is a coroutine function, "
                    "which a sync call cannot await; give it a plain function"
                ) from error
            try:
                result = self.function(*args, **kwargs)
            except Exception as failed:
                _chain(failed, error)
                raise
            fallback_used.renote(event)
            return result
        if self.last_good is not None:
            self._keep(fn, args, kwargs, result)
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
        fallback_used.forget()
        try:
            result = await Runner.async_call(self, fn, args, kwargs, costing, trace or False)
        except Exception as error:
            plan = self._plan(error, fn, args, kwargs)
            if plan is None:
                raise  # unchanged: not a give-up this fallback stands in for
            event, served = plan
            if event.source == "last_good":
                return served
            assert self.function is not None
            try:
                result = self.function(*args, **kwargs)
                if inspect.isawaitable(result):  # an async fallback, or a sync one
                    result = await result
            except Exception as failed:
                _chain(failed, error)
                raise
            fallback_used.renote(event)
            return result
        if self.last_good is not None:
            self._keep(fn, args, kwargs, result)
        return result

    # -- shared by both flavours -------------------------------------------------------------
    def _keep(self, fn: Callable[..., Any], args: Args, kwargs: Kwargs, result: Any) -> None:
        assert self.last_good is not None
        key = self.last_good.key(fn, args, kwargs)
        if key is not None:
            self.last_good.store(key, result)

    def _plan(
        self, error: Exception, fn: Callable[..., Any], args: Args, kwargs: Kwargs
    ) -> tuple[FallbackEvent, Any] | None:
        """What stands in for `error`: the last good result (the event's source
        "last_good", and the result), the fallback function ("call"), or nothing (None:
        raise it). The use is noted (log, hooks, `last_fallback()`)."""
        kind = give_up_kind(error, self.name)
        if kind is None or kind not in self.kinds:
            return None
        found = None
        if self.last_good is not None:
            key = self.last_good.key(fn, args, kwargs)
            found = None if key is None else self.last_good.recall(key)
        if found is None and self.function is None:
            return None  # nothing to serve: the give-up is the outcome
        cause = describe_exception(error)
        if found is not None:
            event = FallbackEvent(self.name, kind, "last_good", error, cause, age=found[1])
        else:
            event = FallbackEvent(
                self.name, kind, "call", error, cause, function=self.function_name
            )
        fallback_used.note(event)
        self.tally.fell_back()
        return event, None if found is None else found[0]
