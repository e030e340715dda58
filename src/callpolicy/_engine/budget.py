"""A retry budget: gRPC's retry throttling (gRFC A6, "A6-client-retries.md"). A bucket of
`max_tokens` starts full; every attempt whose outcome the policy retries on takes one
token, every call that succeeds gives `token_ratio` back; a retry goes only while more than
half the tokens are left. First attempts always go, so the budget limits retries to a share
of the traffic: with the defaults (100, 0.1), about one retry per ten successes once 50
failures more than that have drained it.

Tokens are counted in thousandths (token_ratio has at most three decimals), as gRPC does,
so no rounding drifts. Exhausted and available again are each logged once per change, by
`log_change`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import NoReturn

import tenacity

from callpolicy._errors import RetryExhausted, mark_gave_up, reraise
from callpolicy._events import BudgetChanged, emit
from callpolicy._forks import renew_after_fork
from callpolicy._model import TOKEN_SCALE, Budget


def log_change(budget: str, exhausted: bool, tokens: float, max_tokens: int) -> None:
    """The budget ran out of retries, or has them again: an event, logged once per change."""
    emit(BudgetChanged(budget, exhausted, tokens, max_tokens))


class LocalBudget:
    """One budget's tokens, shared by every policy of this process that names it."""

    def __init__(self, model: Budget) -> None:
        self.model = model
        self.name = model.name
        self.most = model.max_tokens * TOKEN_SCALE
        self.half = self.most // 2
        self.gain = round(model.token_ratio * TOKEN_SCALE)
        self.tokens = self.most
        self.exhausted = False
        self.lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        self.lock = threading.Lock()

    def failed(self) -> bool:
        """An attempt's outcome is retried on: take a token; whether a retry may go."""
        with self.lock:
            self.tokens = tokens = max(0, self.tokens - TOKEN_SCALE)
            allowed = tokens > self.half
            changed = not allowed and not self.exhausted
            if changed:
                self.exhausted = True
        if changed:
            log_change(self.name, True, tokens / TOKEN_SCALE, self.model.max_tokens)
        return allowed

    def succeeded(self) -> None:
        """A call succeeded: give token_ratio back."""
        if self.tokens == self.most:  # full: nothing to give back (read without the lock:
            return  # this success is ordered before any failure racing with it)
        with self.lock:
            self.tokens = tokens = min(self.most, self.tokens + self.gain)
            changed = self.exhausted and tokens > self.half
            if changed:
                self.exhausted = False
        if changed:
            log_change(self.name, False, tokens / TOKEN_SCALE, self.model.max_tokens)

    @property
    def left(self) -> float:
        return self.tokens / TOKEN_SCALE


def budget_stop(policy: str, budget: LocalBudget, state: tenacity.RetryCallState) -> NoReturn:
    """The budget stops this call's retries: its last error (with a note saying so), or
    RetryExhausted with its last result."""
    outcome = state.outcome
    assert outcome is not None
    model = budget.model
    why = (
        f"retry budget {budget.name} exhausted ({budget.left:.1f} of {model.max_tokens} "
        f"tokens left, retries go above {model.max_tokens / 2:g})"
    )
    if outcome.failed:
        error = outcome.exception()
        assert error is not None
        note = f"callpolicy: {policy} did not retry: {why}"
        if hasattr(error, "add_note"):  # Python 3.11+
            error.add_note(note)
        else:  # 3.10: the list add_note keeps (PEP 678), for code to read (not printed)
            with contextlib.suppress(AttributeError, TypeError):
                error.__notes__ = [*getattr(error, "__notes__", ()), note]  # type: ignore[attr-defined]
        mark_gave_up(error, policy)  # a give-up: a fallback may stand in for it
        reraise(error)
    raise RetryExhausted(policy, outcome.result(), state.attempt_number, why)
