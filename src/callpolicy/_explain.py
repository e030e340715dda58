"""Policies in plain words: `callpolicy explain` and the descriptions logs and errors use."""

from __future__ import annotations

import attrs

from callpolicy._explain_layers import describe_budget, describe_fallback, layers
from callpolicy._model import (
    ADAPT_BETA,
    ADAPT_MEASURED_BETA,
    HINT_FIELD,
    PROGRESS_FORMATS,
    Adapt,
    Breaker,
    GiveUp,
    Learn,
    Match,
    Policy,
    Quota,
    ResultCondition,
    Wait,
    rule_names,
)
from callpolicy._model.adapt import ADAPT_SATURATED
from callpolicy._text import format_seconds


def explain(policy: Policy) -> str:
    """A policy in plain words, one line per rule."""
    retry = policy.retry
    lines = [f"{policy.name}  ({policy.source})"]
    if policy.description:
        lines.append(f"  {policy.description}")
    names = rule_names(retry.rules)
    for number, (name, rule) in enumerate(zip(names, retry.rules, strict=True), 1):
        wait = describe_wait(rule.wait) if rule.wait else "the policy's wait"
        attempts = rule.attempts or policy.stop.attempts
        lines.append(
            f'  {f"rule {number}:":<10}"{name}": '
            f"{', '.join(_triggers(rule)) or 'nothing'}; "
            f"wait: {wait}; at most {attempts} attempt{'s' if attempts != 1 else ''}"
        )
    triggers = _triggers(retry)
    shared_wait: str | None = describe_wait(policy.wait)
    if not retry.rules:
        shown = ", ".join(triggers) if triggers else "nothing (no retries)"
    elif triggers:  # the plain keys: the last rule
        shown = f"{', '.join(triggers)} (when no rule matches)"
    else:  # rules only: the policy's wait is only theirs that have none of their own
        shown = "no other outcome (an outcome no rule matches is final)"
        users = [str(n) for n, rule in enumerate(retry.rules, 1) if rule.wait is None]
        plural = "s" if len(users) > 1 else ""
        shared_wait = f"{shared_wait} (used by rule{plural} {', '.join(users)})" if users else None
    lines.append(f"  retry on: {shown}")
    if shared_wait is not None:
        lines.append(f"  wait:     {shared_wait}")
    attempts = policy.stop.attempts
    stop = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if policy.stop.deadline is not None:
        stop += f", or before a wait that would end past {format_seconds(policy.stop.deadline)}"
    if policy.stop.attempt_timeout is not None:
        stop += (
            f"; each attempt at most {format_seconds(policy.stop.attempt_timeout)} "
            "(a coroutine is cancelled: AttemptTimeout; time_left() tells the function)"
        )
    lines.append(f"  stop:     {stop}")
    if retry.give_up:
        rules = "; ".join(describe_give_up(rule) for rule in retry.give_up)
        lines.append(f"  give up:  {rules} (AccountLimit, no retry)")
    if retry.idempotent is not None or not retry.refused_any_method:
        lines.append(f"  repeat:   {_describe_repeat(retry.idempotent, retry.refused_any_method)}")
    if retry.should_retry_header:
        lines.append(
            f"  server:   {retry.should_retry_header}: true retries an error response "
            "(any method), false ends the call, before the statuses"
        )
    if policy.budget is not None:
        lines.append(f"  budget:   {describe_budget(policy.budget, policy.name)}")
    if policy.breaker is not None:
        lines.append(f"  breaker:  {describe_breaker(policy.breaker, policy.name)}")
    if policy.pause is not None:
        pause = policy.pause
        lines.append(
            f"  pause:    when {pause.remaining} is no more than the calls in flight, until "
            f"{pause.reset} ({pause.format}), at most {format_seconds(pause.max)}"
        )
    quotas = ", ".join(describe_quota(q) for q in policy.quotas) or "none"
    lines.append(f"  quotas:   {quotas}")
    if policy.fallback is not None:
        lines.append(f"  fallback: {describe_fallback(policy.fallback)}")
    if policy.fallback or policy.budget or policy.breaker or policy.stop.attempt_timeout:
        lines.append(f"  layers:   {layers(policy)}")
    return "\n".join(lines)


def _triggers(match: Match) -> list[str]:
    """What a rule (or the plain `retry` keys) matches, in words."""
    triggers = [e.__module__ + "." + e.__qualname__ for e in match.on_exceptions]
    if match.on_status:
        triggers.append("HTTP " + status_ranges(match.on_status))
    if match.until:
        triggers.append(f"until {describe_condition(match.until)}")
    if match.while_:
        triggers.append(f"while {describe_condition(match.while_)}")
    for label, predicate in (
        ("result", match.result_predicate),
        ("exception", match.exception_predicate),
    ):
        if predicate is not None:
            triggers.append(f"{label} predicate {getattr(predicate, '__qualname__', predicate)}")
    return triggers


def describe_breaker(breaker: Breaker, policy: str) -> str:
    """A circuit breaker in words (`policy`: the policy it is shown for)."""
    whose = "its own" if breaker.name == policy else f"{breaker.name}, shared by name"
    window = (
        f"the last {breaker.window_calls} calls"
        if breaker.window_calls is not None
        else f"the last {format_seconds(breaker.window_seconds or 0.0)}"
    )
    slow = f"{breaker.slow_call_ratio:.0%} slower than {format_seconds(breaker.slow_call)}"
    probes = f"{breaker.probes} trial call{'s' if breaker.probes != 1 else ''}"
    failures = "what the policy retries on"
    if breaker.judged:
        match = Match(on_exceptions=breaker.on_exceptions, on_status=breaker.on_status)
        failures = ", ".join(_triggers(match)) or "nothing"
    where = "" if breaker.storage.is_memory else f", shared in {breaker.storage}"
    return (
        f"{whose}: opens at {breaker.failure_ratio:.0%} failed or {slow} over {window} "
        f"(from {breaker.least_calls} calls); open {format_seconds(breaker.open_for)}, then "
        f"{probes}; failed: {failures}{where}"
    )


def describe_quota(quota: Quota) -> str:
    wait = f"max_wait {format_seconds(quota.max_wait)}"
    if quota.pool:  # a pool waits as long as its members
        wait = f"max_wait {format_seconds(max(q.max_wait for q in quota.pool))}"
        return f"{quota.name} (pool of {', '.join(q.name for q in quota.pool)}, {wait})"
    where = ""
    if not quota.storage.is_memory:
        local = f" {quota.local_limit}" if quota.on_unavailable == "local" else ""
        where = f", {quota.storage}, {quota.on_unavailable}{local} when unreachable"
    if quota.concurrency is not None:
        lease = f", lease {format_seconds(quota.lease)}" if where else ""
        return f"{quota.name} ({quota.concurrency} in flight{where}{lease}, {wait})"
    unit = " cost units" if quota.weighted else ""
    how = f"{_describe_algorithm(quota)}, guard {format_seconds(quota.guard)}"
    learns = f"; {describe_learn(quota.learn)}" if quota.learn is not None else ""
    if quota.adapt is not None:
        learns += f"; {describe_adapt(quota.adapt, quota.storage.is_memory)}"
    return f"{quota.name} ({quota.rate}{unit}, {how}{where}, {wait}{learns})"


def describe_adapt(adapt: Adapt, measures: bool = False) -> str:
    """ "adapts its rate to HTTP 429, 503 (x0.7 per congestion event, ...)"; `measures`: in
    memory, where a saturated quota's cut goes by what passed."""
    statuses = ", ".join(str(s) for s in sorted(adapt.statuses))
    probe = "a cubic curve" if adapt.algorithm == "cubic" else "a step per period"
    cut = f"x{ADAPT_BETA:g} per congestion event"
    if measures:
        cut += (
            f", or {ADAPT_MEASURED_BETA:g} of what passed in the last period when the rate "
            f"was used to {ADAPT_SATURATED:g} of it (never below x{ADAPT_BETA:g}), and a "
            "bucket's calls held after it until fewer than the new rate of those that passed "
            "are left in the last period"
        )
    return (
        f"adapts its rate to HTTP {statuses} ({cut}, up again by {probe} while no refusal "
        f"comes and the calls use the rate), from the limit, within {adapt.floor}..{adapt.ceiling}"
    )


def describe_learn(learn: Learn) -> str:
    """ "learns its limit from X-RateLimit-Limit, within 5/1s..50/1s" and what it reads."""
    window = f" per {format_seconds(learn.window)}" if learn.window is not None else ""
    if learn.source == "x-ratelimit":
        source = f"{learn.header}{window}"
        if learn.name is not None:
            source += f" when X-RateLimit-Resource is {learn.name!r}"
    else:
        item = f"item {learn.name!r}" if learn.name is not None else "most restrictive item"
        source = f"RateLimit-Policy ({item}; RateLimit-Limit{window or ' per period'})"
    return f"learns its limit from {source}, within {learn.floor}..{learn.ceiling}"


def _describe_algorithm(quota: Quota) -> str:
    if quota.algorithm == "leaky-bucket":
        return f"leaky-bucket, burst {quota.bucket_room}"
    if quota.algorithm == "token-bucket":
        return f"token-bucket of {quota.bucket_room}"
    return f"{quota.algorithm}, spread evenly" if quota.spread else quota.algorithm


def quota_cause(quota: Quota) -> str:
    """A quota as the cause of a wait; an inline quota's name already holds its rate."""
    if "[" in quota.name:
        return f"quota {quota.name}"
    if quota.pool:
        return f"quota {quota.name} (a pool)"
    limit = quota.rate if quota.rate is not None else f"{quota.concurrency} in flight"
    return f"quota {quota.name} ({limit})"


def _hint_source(name: str, fmt: str) -> str:
    if not name.startswith(HINT_FIELD):
        return name
    field = name[len(HINT_FIELD) :]
    if fmt in PROGRESS_FORMATS:
        return f"the time left by the {fmt} in field {field}"
    return f"field {field} ({fmt})"


def describe_wait(wait: Wait) -> str:
    """One line for `callpolicy explain`."""
    if wait.hints:
        headers = ", ".join(_hint_source(name, fmt) for name, fmt in wait.hints)
        plain = describe_wait(attrs.evolve(wait, hints=(), jitter=0.0))
        cap = format_seconds(wait.hint_cap)
        above = wait.hint_above_cap
        jitter = ""
        if wait.jitter:
            jitter = f"; plus up to {wait.jitter:g}s jitter (added to the hint or the backoff)"
        return f"{headers} when the server says (at most {cap}, else {above}); else {plain}{jitter}"
    jitter = f" + up to {wait.jitter:g}s jitter" if wait.jitter else ""
    if wait.strategy == "none":
        return "retry at once"
    if wait.strategy == "fixed":
        return f"{wait.seconds:g}s{jitter}"
    if wait.strategy == "exponential":
        return f"{wait.initial:g}s x {wait.multiplier:g} per attempt, at most {wait.max:g}s{jitter}"
    if wait.strategy == "random":
        return f"random {wait.min:g}s to {wait.max:g}s"
    return "chain: " + "; ".join(describe_wait(step) for step in wait.steps) + " (last repeats)"


def _describe_repeat(idempotent: bool | None, refused_any_method: bool) -> str:
    if idempotent:
        return "any method may be sent again (idempotent = true)"
    words = "POST and PATCH" if idempotent is None else "no method (idempotent = false)"
    refused = "" if refused_any_method else "; not even after a 429/503 with Retry-After"
    return f"{words} only if never sent{refused}"


def describe_condition(condition: ResultCondition) -> str:
    values = condition.values
    shown = repr(values[0]) if condition.op == "equals" else repr(list(values))
    return f"{condition.field} {condition.op.replace('_', ' ')} {shown}"


def describe_give_up(rule: GiveUp) -> str:
    parts = [f"HTTP {', '.join(map(str, sorted(rule.statuses)))}"] if rule.statuses else []
    parts += [f"{path} = {value!r}" for path, value in rule.fields]
    return ", ".join(parts)


def status_ranges(statuses: frozenset[int]) -> str:
    """429, 500-504, 5xx: statuses in their shortest form."""
    ordered = sorted(statuses)
    ranges: list[str] = []
    start = previous = ordered[0]
    for status in [*ordered[1:], None]:
        if status is not None and status == previous + 1:
            previous = status
            continue
        if start % 100 == 0 and previous == start + 99:
            ranges.append(f"{start // 100}xx")
        else:
            ranges.append(str(start) if start == previous else f"{start}-{previous}")
        if status is not None:
            start = previous = status
    return ", ".join(ranges)
