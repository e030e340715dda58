"""Resilience layers in plain words, for `callpolicy explain`: the retry budget, the
fallback, and the order a call passes a policy's layers in (the breaker: _explain.py)."""

from __future__ import annotations

from callpolicy._model import FALLBACK_ON, Budget, Fallback, Policy
from callpolicy._text import format_seconds


def layers(policy: Policy) -> str:
    """The policy's layers in the order a call passes them (docs: the order of the layers)."""
    present = (
        ("fallback", policy.fallback is not None),
        ("deadline", policy.stop.deadline is not None),
        ("retry", True),
        ("budget", policy.budget is not None),
        ("breaker", policy.breaker is not None),
        ("pause", policy.pause is not None),
        ("quotas", bool(policy.quotas)),
        ("attempt timeout", policy.stop.attempt_timeout is not None),
    )
    order = " > ".join(name for name, there in present if there)
    return f"{order} (outside in; each retry passes the layers inside retry again)"


def describe_fallback(fallback: Fallback) -> str:
    """ "on giving up (retries, quota): the last good result ..., else f(...)"."""
    kinds = ", ".join(kind for kind in FALLBACK_ON if kind in fallback.on)
    served = []
    if fallback.last_good is not None:
        key = f" (keyed by {fallback.key_name or _qualified(fallback.key)})" if fallback.key else ""
        served.append(
            f"the last good result for the same arguments{key}, at most "
            f"{format_seconds(fallback.last_good)} old, {fallback.max_entries:,} kept"
        )
    if fallback.call is not None:
        served.append(f"{fallback.call_name or _qualified(fallback.call)}(same arguments)")
    return f"on giving up ({kinds}): {', else '.join(served)}"


def _qualified(function: object) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{name}" if module else str(name)


def describe_budget(budget: Budget, policy: str) -> str:
    """A retry budget in words (gRPC's retry throttling)."""
    whose = "its own" if budget.name == policy else f"{budget.name}, shared by name"
    return (
        f"{whose}: {budget.max_tokens} tokens, 1 per retried failure, {budget.token_ratio:g} "
        f"back per success; retries only above {budget.max_tokens / 2:g} (first attempts "
        "always go)"
    )
