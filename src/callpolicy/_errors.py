"""Errors: `PolicyError` for bad policy files, runtime errors for calls that give up; all
derive from `CallPolicyError`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import Any, NoReturn

import attrs

from callpolicy._text import shown_value


@attrs.frozen
class Problem:
    """One problem of a policy file: where it is (file, line, key path) and what is wrong."""

    path: str
    line: int | None
    key: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        return _printable(text)  # one line, whatever a file name or a value holds


def reraise(error: BaseException) -> NoReturn:
    """Raise `error` again with its chain as it was: a plain `raise error` would make it the
    context of whatever exception the caller happens to be handling."""
    context, suppressed = error.__context__, error.__suppress_context__
    try:
        raise error
    finally:
        error.__context__, error.__suppress_context__ = context, suppressed


class CallPolicyError(Exception):
    """The root of every error callpolicy raises itself (the errors of the functions it
    calls propagate unchanged)."""


class PolicyError(CallPolicyError, ValueError):
    """Policy files are invalid, or a policy name is unknown.

    `problems` lists every problem found, each with `path`, `line`, `key` and `message`;
    `str()` shows them one per line.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        unique: dict[Problem, None] = dict.fromkeys(problems)
        self.problems: tuple[Problem, ...] = tuple(sorted(unique, key=_problem_order))
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [str(p) for p in self.problems[:MAX_SHOWN]]
        if len(lines) == 1:
            return lines[0]
        more = len(self.problems) - len(lines)
        if more:  # all of them stay in .problems
            lines.append(f"... and {more:,} more")
        return f"{len(self.problems)} problems in policy files:\n" + "\n".join(lines)


MAX_SHOWN = 200  # problems shown in the message
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line breaks


def _printable(text: str) -> str:
    """`text` with control characters escaped: a file name cannot fake a line of output or
    steer the terminal."""
    if text.isprintable():
        return text
    return "".join(repr(c)[1:-1] if _CONTROL.match(c) else c for c in text)


def _problem_order(problem: Problem) -> tuple[str, int, str, str]:
    return (problem.path, problem.line or 0, problem.key, problem.message)


class RetryExhausted(CallPolicyError):
    """Retrying on a returned value ran out of attempts (or time).

    `last_result` is the last value the function returned; `attempts` how many calls were made.
    """

    def __init__(self, policy: str, last_result: Any, attempts: int, reason: str) -> None:
        self.policy = policy
        self.last_result = last_result
        self.attempts = attempts
        self.reason = reason
        super().__init__(
            f"{policy}: gave up after {attempts} attempt{'s' if attempts != 1 else ''} "
            f"({reason}); last result: {shown_value(last_result, 200)}"
        )


class QuotaExceeded(CallPolicyError):
    """A call could not be admitted by a quota within the time it may wait.

    `quota` names the quota, `wait` is how many seconds from now the call could go (inf:
    never, or not before a call in flight ends), `max_wait` the most the call was allowed to
    wait, and `reason` why it could not: "max_wait" (the quota's), "deadline" (the policy's
    `stop.deadline`), "cost" (above the quota's limit), "non-blocking" (the call may not
    wait) or "unavailable" (Redis unreachable; see QuotaUnavailable).
    """

    def __init__(self, policy: str, quota: str, wait: float, max_wait: float, reason: str) -> None:
        self.policy = policy
        self.quota = quota
        self.wait = wait
        self.max_wait = max_wait
        self.reason = reason
        when = "never" if wait == float("inf") else f"in {wait:.3f}s"
        why = {
            "max_wait": f"more than its max_wait ({max_wait:.3f}s)",
            "deadline": f"more than the time left before stop.deadline ({max_wait:.3f}s)",
            "cost": "the call's cost is above the quota's limit",
            "non-blocking": "and the call may not wait (call_options(blocking=False))",
        }.get(reason, reason)
        sentence = f"would admit this call {when}, {why}"
        if wait == float("inf") and reason == "max_wait":  # waited for a slot that never came
            sentence = f"did not admit this call within its max_wait ({max_wait:.3f}s)"
        super().__init__(f"{policy}: quota {quota} {sentence}")


class QuotaUnavailable(QuotaExceeded):
    """A shared quota's storage (Redis) could not be reached in time, and the quota says
    `on_unavailable = "fail-closed"`: the call is refused rather than let through uncounted."""

    def __init__(self, quotas: str, storage: str, error: str, policy: str = "") -> None:
        where = f"{policy}: " if policy else ""
        Exception.__init__(
            self, f"{where}quota {quotas}: storage {storage} unreachable ({error}); failing closed"
        )
        self.policy = policy
        self.detail = error
        self.quota = quotas
        self.wait = float("inf")
        self.max_wait = 0.0
        self.reason = "unavailable"
        self.storage = storage


class AccountLimit(CallPolicyError):
    """The server said the quota is gone for good (an account-level limit the policy's
    `retry.give_up` describes): retrying cannot help, so the call stops at once.
    `response` is what the server answered (the response, or the error carrying it)."""

    def __init__(self, policy: str, rule: str, response: Any) -> None:
        self.policy = policy
        self.rule = rule
        self.response = response
        super().__init__(
            f"{policy}: the server says the account's limit is reached ({rule}); not retrying"
        )


class AttemptTimeout(CallPolicyError, TimeoutError):
    """One attempt of a coroutine ran out of its time: `stop.attempt_timeout`, or the time
    left before `stop.deadline` when that was shorter. The attempt was cancelled. A
    `TimeoutError`, so `retry.on_exceptions = ["TimeoutError"]` retries it (when the request
    may be sent again); its cause is the cancellation, with the attempt's frames."""

    def __init__(self, policy: str, seconds: float, by_deadline: bool) -> None:
        self.policy = policy
        self.seconds = seconds
        self.by_deadline = by_deadline
        limit = "the time left before stop.deadline" if by_deadline else "stop.attempt_timeout"
        super().__init__(f"{policy}: the attempt did not end within {seconds:.3f}s ({limit})")


_GAVE_UP = "_callpolicy_gave_up"


def mark_gave_up(error: BaseException, policy: str) -> None:
    """Note on `error` that policy `policy` gave up with it (its retries are over), so a
    fallback can tell it from an error that was never retried."""
    with contextlib.suppress(Exception):  # no __dict__: no fallback stands in for it
        setattr(error, _GAVE_UP, policy)


def gave_up_by(error: BaseException) -> str | None:
    """The policy that gave up with `error`, if one did."""
    policy = getattr(error, _GAVE_UP, None)
    return policy if isinstance(policy, str) else None


class CircuitOpen(CallPolicyError):
    """A circuit breaker refused the attempt: the endpoint failed too often, so no call is
    made (and no quota taken) until it probes again. `breaker` names it, `retry_in` is how
    many seconds from now it lets trial calls through (0: it is probing now and all its
    trial calls are taken). Raised from the last error when it stops a call's retries."""

    def __init__(self, policy: str, breaker: str, retry_in: float) -> None:
        self.policy = policy
        self.breaker = breaker
        self.retry_in = retry_in
        when = (
            f"probes again in {retry_in:.3f}s"
            if retry_in > 0
            else "is probing, its trial calls all taken"
        )
        shown = "its circuit breaker" if breaker == policy else f"circuit breaker {breaker}"
        super().__init__(f"{policy}: {shown} is open and {when}; call not made")
