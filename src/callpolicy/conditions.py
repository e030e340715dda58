"""Retry conditions: raised exceptions, HTTP statuses and returned values.

Also resolves the dotted paths a policy names (`"requests.ConnectionError"`, `"myapp.checks.bad"`).
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
from typing import Any

import tenacity

from callpolicy.errors import AccountLimit
from callpolicy.hints import read_hint
from callpolicy.http import json_of, may_repeat, never_sent, status_of
from callpolicy.model import Retry
from callpolicy.units import UnitError, shown_value

NEVER_RETRIED = "KeyboardInterrupt, SystemExit, GeneratorExit and asyncio.CancelledError"


def resolve_dotted(path: str) -> Any:
    """Import `package.module.attribute`; a bare name is a builtin. Raises LookupError."""
    parts = _dotted_parts(path)
    if len(parts) == 1:
        if hasattr(builtins, path):
            return getattr(builtins, path)
        raise LookupError(f"{path!r} is not a builtin; write its module too, e.g. 'package.{path}'")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # try a shorter module path
            raise LookupError(f"importing {module_name!r} for {path!r} failed: {exc}") from None
        except Exception as exc:
            raise LookupError(f"importing {module_name!r} for {path!r} failed: {exc!r}") from None
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                raise LookupError(f"{'.'.join(parts[:split])!r} has no attribute {attribute!r}")
            obj = getattr(obj, attribute)
        return obj
    raise LookupError(f"cannot import {parts[0]!r} (no module named {parts[0]!r})")


def _dotted_parts(path: str) -> list[str]:
    parts = path.split(".")
    if not all(part.isidentifier() for part in parts):
        raise LookupError(f"must be a dotted Python path like 'package.module.Name' (got {path!r})")
    return parts


def resolve_exception(path: str) -> type[Exception] | None:
    """The exception class at `path`. A leading '?' makes a missing package fine (None)."""
    optional = path.startswith("?")
    name = path[1:] if optional else path
    _dotted_parts(name)  # a malformed path is an error even when optional
    try:
        obj = resolve_dotted(name)
    except LookupError:
        top = name.split(".")[0]
        if optional and importlib.util.find_spec(top) is None:
            return None
        raise
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    if isinstance(obj, type) and issubclass(obj, BaseException):
        raise LookupError(f"{name!r} is never retried ({NEVER_RETRIED} always propagate)")
    raise LookupError(f"must name an Exception subclass ({name!r} is {_kind(obj)})")


def resolve_predicate(path: str) -> Any:
    obj = resolve_dotted(path)
    if not callable(obj):
        raise LookupError(f"must name a callable ({path!r} is {_kind(obj)})")
    return obj


def _kind(obj: object) -> str:
    """What `obj` is, in words, without its (address-bearing) repr."""
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    return f"a {type(obj).__name__}"


def parse_statuses(value: object) -> frozenset[int]:
    """One status entry: 429, "5xx" or "500-504"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 100 <= value <= 599:
            return frozenset({value})
        raise UnitError(f"must be an HTTP status from 100 to 599 (got {shown_value(value)})")
    if isinstance(value, str):
        if len(value) == 3 and value[0] in "12345" and value[1:] == "xx":
            first = int(value[0]) * 100
            return frozenset(range(first, first + 100))
        low, dash, high = value.partition("-")
        if dash and low.isascii() and high.isascii() and low.isdigit() and high.isdigit():
            lo, hi = int(low), int(high)
            if 100 <= lo <= hi <= 599:
                return frozenset(range(lo, hi + 1))
    raise UnitError(f'must be a status like 429, "5xx" or "500-504" (got {shown_value(value)})')


class RetryCondition(tenacity.retry_base):
    """A policy's `retry` table as a tenacity retry strategy, plus fast checks for the wrapper."""

    def __init__(
        self, rule: Retry, policy: str = "", hints: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.rule = rule
        self.policy = policy
        # What counts as "the server said when to come back": the policy's hints, else
        # Retry-After.
        self.hints = hints or (("Retry-After", "retry-after"),)
        self.exceptions = rule.on_exceptions
        self.statuses = rule.on_status
        self.checks_results = rule.checks_results or bool(rule.give_up)

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None:
            return False
        if outcome.failed:
            exc = outcome.exception()
            return exc is not None and self.retries_exception(exc)
        return self.retries_result(outcome.result())

    def retries_exception(self, exc: BaseException) -> bool:
        """Whether `exc` calls for another attempt; raises AccountLimit if it is one."""
        if not isinstance(exc, Exception):  # KeyboardInterrupt, CancelledError, ...
            return False
        if self.rule.give_up:
            self._give_up_if_gone(exc)
        if self.exceptions and isinstance(exc, self.exceptions):
            return self._may_repeat(exc, exc)
        if self.statuses and status_of(exc) in self.statuses:
            return self._may_repeat(exc, exc)
        predicate = self.rule.exception_predicate
        return predicate is not None and bool(predicate(exc)) and self._may_repeat(exc, exc)

    def _may_repeat(self, obj: Any, exc: BaseException | None) -> bool:
        """Whether the request behind `obj` may be sent again: idempotent (by the policy, or
        by its method or Idempotency-Key), never sent at all, or refused by the server with a
        hint (429/503 with Retry-After)."""
        idempotent = self.rule.idempotent
        if idempotent or (idempotent is None and may_repeat(obj)):
            return True
        if exc is not None and never_sent(exc):
            return True
        return (
            self.rule.refused_any_method
            and status_of(obj) in (429, 503)
            and read_hint(self.hints, obj, self.policy) is not None
        )

    def gives_up(self, obj: Any) -> str | None:
        """The give_up rule a response (or an error's) matches, described; else None."""
        status = status_of(obj)
        body = json_of(obj) if any(rule.fields for rule in self.rule.give_up) else None
        for rule in self.rule.give_up:
            if rule.matches(status, body):
                return rule.describe()
        return None

    def _give_up_if_gone(self, obj: Any) -> None:
        matched = self.gives_up(obj)
        if matched is not None:
            raise AccountLimit(self.policy, matched, obj)

    def retries_result(self, result: Any) -> bool:
        """Whether `result` calls for another attempt; raises AccountLimit if it says so."""
        rule = self.rule
        if rule.give_up:
            self._give_up_if_gone(result)
        if self.statuses and status_of(result) in self.statuses:
            return self._may_repeat(result, None)
        if rule.until is not None and not rule.until.matches(result):
            return True
        if rule.while_ is not None and rule.while_.matches(result):
            return True
        return rule.result_predicate is not None and bool(rule.result_predicate(result))
