"""Retry rules compiled for calls: each cause of retries (a `[[retry.rules]]` entry, or the
plain `retry` keys as the last) with what it matches, its wait and its attempts.

The first cause that matches an outcome decides (a returned value whose status some cause
names: the first cause naming it; see `RetryCondition.retries_result`); each counts the
attempts that ended in it (on the call's `RetryCallState`), and its wait sees that count as
the attempt number.
"""

from __future__ import annotations

from typing import Any

from tenacity.wait import wait_base

from callpolicy._engine.http import status_of
from callpolicy._engine.waits import compile_wait
from callpolicy._model import Match, Policy, rule_names

RETRY_AFTER = (("Retry-After", "retry-after"),)


class Cause:
    """One cause of retries. `name` is None for the plain `retry` keys; `attempts` is the
    most attempts that may end in this cause, the first included."""

    __slots__ = (
        "attempts",
        "exception_predicate",
        "exceptions",
        "hints",
        "index",
        "match",
        "name",
        "reads_values",
        "statuses",
        "wait",
    )

    def __init__(
        self,
        name: str | None,
        index: int,
        match: Match,
        attempts: int,
        hints: tuple[tuple[str, str], ...] = (),
        wait: wait_base | None = None,
    ) -> None:
        self.name = name
        self.index = index
        self.match = match
        self.exceptions = match.on_exceptions
        self.statuses = match.on_status
        self.exception_predicate = match.exception_predicate
        readers = (match.until, match.while_, match.result_predicate)
        self.reads_values = any(reader is not None for reader in readers)  # polling
        self.attempts = attempts
        # What counts as "the server said when to come back": this cause's hints, else
        # Retry-After.
        self.hints = hints or RETRY_AFTER
        self.wait = wait

    def matches_exception(self, exc: BaseException) -> bool:
        if self.exceptions and isinstance(exc, self.exceptions):
            return True
        if self.statuses and status_of(exc) in self.statuses:
            return True
        predicate = self.exception_predicate
        return predicate is not None and bool(predicate(exc))

    def matches_value(self, result: Any) -> bool:
        """Whether a returned value calls for another attempt by what it holds (polling):
        `until` not met yet, `while` met, or the predicate."""
        match = self.match
        if match.until is not None and not match.until.matches(result):
            return True
        if match.while_ is not None and match.while_.matches(result):
            return True
        return match.result_predicate is not None and bool(match.result_predicate(result))


def compile_causes(policy: Policy, plain_wait: wait_base) -> tuple[Cause, ...]:
    """The policy's rules in order, then its plain `retry` keys (when they match anything,
    or when there are no rules), with their waits (`plain_wait`: the policy's, compiled)."""
    retry, wait, most = policy.retry, policy.wait, policy.stop.attempts
    causes = []
    for index, (name, rule) in enumerate(zip(rule_names(retry.rules), retry.rules, strict=True)):
        own = rule.wait or wait
        waits = compile_wait(own, policy.name)
        causes.append(Cause(name, index, rule, rule.attempts or most, own.hints, waits))
    if not retry.rules or _matches_anything(retry):
        causes.append(Cause(None, len(causes), retry, most, wait.hints, plain_wait))
    return tuple(causes)


def _matches_anything(match: Match) -> bool:
    keys = (match.on_exceptions, match.on_status, match.until, match.while_)
    return any(keys) or match.result_predicate is not None or match.exception_predicate is not None
