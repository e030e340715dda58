"""Retry conditions: raised exceptions, HTTP statuses and returned values, and whether the
request behind an outcome may be sent again."""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import Any

import tenacity

from callpolicy._engine.hints import read_hint
from callpolicy._engine.http import header_values, json_of, status_of
from callpolicy._engine.repeat import may_repeat, never_sent
from callpolicy._engine.rules import Cause
from callpolicy._errors import AccountLimit
from callpolicy._explain import describe_give_up
from callpolicy._model import MAX_ATTEMPTS, Retry
from callpolicy._text import Throttled

_unread_word = Throttled(60.0)


class RetryCondition(tenacity.retry_base):
    """A policy's `retry` table as a tenacity retry strategy, plus fast checks for the
    wrapper: which cause (a rule, or the plain keys) an outcome calls for, if any."""

    def __init__(
        self,
        rule: Retry,
        policy: str = "",
        hints: tuple[tuple[str, str], ...] = (),
        causes: tuple[Cause, ...] | None = None,
    ) -> None:
        self.rule = rule
        self.policy = policy
        self.causes = causes or (Cause(None, 0, rule, MAX_ATTEMPTS, hints),)
        # A returned value is judged by its status when some cause names that status (a
        # 429 meant for the throttling rule is never "not done yet" to a poll rule written
        # first), else by the causes that read values.
        self.status_causes = tuple(c for c in self.causes if c.statuses)
        self.statuses = frozenset().union(*(c.statuses for c in self.status_causes))
        self.value_causes = tuple(c for c in self.causes if c.reads_values)
        self.checks_results = (
            rule.checks_results or bool(rule.give_up) or bool(rule.should_retry_header)
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None:
            return False
        if outcome.failed:
            exc = outcome.exception()
            return exc is not None and self.retries_exception(exc) is not None
        return self.retries_result(outcome.result()) is not None

    def retries_exception(self, exc: BaseException) -> Cause | None:
        """The cause `exc` calls for another attempt by (None: it does not); raises
        AccountLimit if it is one."""
        if not isinstance(exc, Exception) or isinstance(exc, CancelledError):
            return None  # KeyboardInterrupt, a cancelled task or future: never retried
        if self.rule.give_up:
            self._give_up_if_gone(exc)
        says = self.server_says(exc)
        if says is not None:
            return self._as_server_says(exc, exc, says)
        for cause in self.causes:  # the first that matches decides
            if cause.matches_exception(exc):
                return cause if self._may_repeat(exc, exc, cause.hints) else None
        return None

    def _may_repeat(
        self, obj: Any, exc: BaseException | None, hints: tuple[tuple[str, str], ...]
    ) -> bool:
        """Whether the request behind `obj` may be sent again: idempotent (by the policy, or
        by its method or Idempotency-Key), never sent at all, or refused by the server with a
        hint (429/503 with Retry-After, or what the cause's `hints` name)."""
        idempotent = self.rule.idempotent
        if idempotent or (idempotent is None and may_repeat(obj)):
            return True
        if exc is not None and never_sent(exc):
            return True
        return (
            self.rule.refused_any_method
            and status_of(obj) in (429, 503)
            and read_hint(hints, obj, self.policy) is not None
        )

    def server_says(self, obj: Any) -> bool | None:
        """Whether the server says to retry the error response `obj` (or an error carrying
        one) by the policy's `should_retry_header`: True, False, or None when it says nothing
        usable (no header, a status below 400, a value other than one true or false)."""
        header = self.rule.should_retry_header
        if not header:
            return None
        values = header_values(obj, header)
        if not values:
            return None
        status = status_of(obj)
        if status is None or status < 400:
            return None
        word = values[0].strip().lower() if len(values) == 1 else ""
        if word in ("true", "false"):
            return word == "true"
        shown = ", ".join(repr(value[:40]) for value in values[:3])
        _unread_word.warn(
            (self.policy, header.lower()),
            "%s: ignoring %s %s (not one true or false); the retry rules decide "
            "(said at most once a minute)",
            self.policy,
            header,
            shown,
            policy=self.policy,
            header=header,
        )
        return None

    def said(self, obj: Any) -> str | None:
        """ "x-should-retry: true" when the server's word retried `obj`, for the log."""
        if self.server_says(obj):
            return f"{self.rule.should_retry_header}: true"
        return None

    def _as_server_says(self, obj: Any, exc: BaseException | None, says: bool) -> Cause | None:
        """The server said whether to retry: "false" ends the call; "true" retries it by the
        first cause naming its status or matching the error, else the last cause, for any
        method (the server refused the work) unless `refused_any_method = false`."""
        if not says:
            return None
        status = status_of(obj)
        cause = next(
            (
                c
                for c in self.causes
                if status in c.statuses or (exc is not None and c.matches_exception(exc))
            ),
            self.causes[-1],
        )
        if self.rule.refused_any_method or self._may_repeat(obj, exc, cause.hints):
            return cause
        return None

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

    def retries_result(self, result: Any) -> Cause | None:
        """The cause `result` calls for another attempt by (None: it does not); raises
        AccountLimit if it says so. A status that some cause names is judged by the causes
        naming statuses alone, in their order; any other value by the causes reading values
        (`until`, `while`, `result_predicate`). Either way the request behind it must be
        safe to send again, or the value is final (later causes are not asked)."""
        if self.rule.give_up:
            self._give_up_if_gone(result)
        says = self.server_says(result)
        if says is not None:
            return self._as_server_says(result, None, says)
        status = status_of(result) if self.statuses else None
        if status is not None and status in self.statuses:
            for cause in self.status_causes:  # the first that names it decides
                if status in cause.statuses:
                    return cause if self._may_repeat(result, None, cause.hints) else None
        for cause in self.value_causes:  # the first that matches decides
            if cause.matches_value(result):
                return cause if self._may_repeat(result, None, cause.hints) else None
        return None
