"""Retry conditions: raised exceptions, HTTP statuses and returned values, and whether the
request behind an outcome may be sent again."""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import Any

import tenacity

from callpolicy._engine.hints import read_hint
from callpolicy._engine.http import json_of, status_of
from callpolicy._engine.repeat import may_repeat, never_sent
from callpolicy._errors import AccountLimit
from callpolicy._explain import describe_give_up
from callpolicy._model import Retry


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
        if not isinstance(exc, Exception) or isinstance(exc, CancelledError):
            return False  # KeyboardInterrupt, a cancelled task or future: never retried
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
                return describe_give_up(rule)
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
