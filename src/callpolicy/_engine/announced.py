"""Limits servers announce in their responses' headers, read for a quota that learns them.

"x-ratelimit": `X-RateLimit-Limit: 5000` (or the header `learn.header` names), counting over
`learn.window` (default: the quota's period), as GitHub, Twitter and most APIs send it; with
`learn.name`, only responses whose `X-RateLimit-Resource` is that (GitHub's "core", "search").
"ratelimit": the IETF draft's `RateLimit-Policy: "default";q=100;w=60` (a structured list;
the item `learn.name` names, else the most restrictive), or its older form `RateLimit-Limit:
100` with `RateLimit-Policy: 100;w=60`. `RateLimit: "default";r=50;t=30` and the
`*-Remaining` headers are read only to catch an inconsistent announcement (more remaining than
the limit).

Every value is read strictly (ASCII digits, at most 15; one value per header); anything else,
or an announcement that contradicts itself, is ignored with a warning at most once a minute
per quota and header, like the hints (hints.py). An announcement over a window shorter than
the quota's period is ignored too (the quota cannot hold it: declare a shorter period); over
a longer one it is scaled down to the period (never more than the server allows, any burst
above the average lost). Nothing here raises on a server's value.
"""

from __future__ import annotations

import math
from typing import Any

from callpolicy._engine.fields import Member, NotAList, parse_list
from callpolicy._engine.http import header_values, safe_getattr, status_of
from callpolicy._model import Learn
from callpolicy._quotas import LearnedLimit
from callpolicy._text import Throttled, format_seconds

MAX_WINDOW = 30 * 86400.0  # an announced window above a month is no rate to follow
_ignored = Throttled(60.0)


class Learner:
    """The quotas of one policy that learn their limit or adapt their rate: each reads every
    response (or error carrying one) an attempt ends with. Never raises, never changes the
    call's outcome. With both, a limit a response announces is followed, and the adaptive
    rate reacts only to answers that announce none (headers win when present)."""

    __slots__ = ("limits",)

    def __init__(self, limits: list[LearnedLimit]) -> None:
        self.limits = limits

    def note(self, answer: Any) -> None:
        for limit in self.limits:
            found = None
            if limit.learn is not None:
                found = announced_limit(limit.learn, limit.period, answer, limit.quota.name)
                if found is not None:
                    limit.offer(*found)
            if limit.adaptive is not None:
                status = status_of(answer)
                latency = latency_of(answer) if status is not None and status >= 400 else None
                limit.answered(status, found is not None, latency)


def latency_of(answer: Any) -> float | None:
    """Seconds between sending the request and its answer, when the client says (requests'
    and httpx's `elapsed`, on the answer or the error's response); None otherwise. A refusal
    of a call sent before a cut belongs to that cut's congestion event."""
    for candidate in (answer, safe_getattr(answer, "response")):
        elapsed = safe_getattr(candidate, "elapsed") if candidate is not None else None
        seconds = safe_getattr(elapsed, "total_seconds")
        if callable(seconds):
            try:
                value = seconds()
            except Exception:  # an odd elapsed tells us nothing
                return None
            if isinstance(value, float) and 0.0 <= value < math.inf:
                return value
    return None


class Unusable(ValueError):
    """An announcement that is not one to follow; the message says why."""


def announced_limit(learn: Learn, period: float, obj: Any, quota: str) -> tuple[int, str] | None:
    """(calls per `period`, the header said) that `obj` (a response, or an error carrying
    one) announces for a quota learning by `learn`; None if it announces nothing usable."""
    if learn.source == "x-ratelimit":
        found = _x_ratelimit(learn, period, obj, quota)
    else:
        found = _ratelimit(learn, period, obj, quota)
    if found is None:
        return None
    calls, window, said = found
    try:
        return per_period(calls, window, period), said
    except Unusable as exc:
        _warn(quota, said.partition(":")[0], str(exc))
        return None


def per_period(calls: int, window: float, period: float) -> int:
    """`calls` per `window` seconds as calls per `period`: never more than the server allows."""
    if not 0 < window <= MAX_WINDOW:
        raise Unusable(f"a window of {format_seconds(window)} is not one to follow")
    if window < period - 1e-9:
        raise Unusable(
            f"counts over {format_seconds(window)}, less than the quota's period "
            f"{format_seconds(period)}: declare a limit per {format_seconds(window)}"
        )
    return calls if window <= period + 1e-9 else math.floor(calls * period / window + 1e-9)


def _one(obj: Any, header: str) -> str | None:
    """The one value of `header` as strict digits; None when absent; Unusable if not digits."""
    values = header_values(obj, header)
    if not values:
        return None
    if len(values) > 1:
        raise Unusable(f"{header}: several values")
    text = values[0].strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 15):
        raise Unusable(f"{header}: {values[0][:40]!r} is not a count (ASCII digits, at most 15)")
    return text


def _x_ratelimit(
    learn: Learn, period: float, obj: Any, quota: str
) -> tuple[int, float, str] | None:
    if learn.name is not None:
        resource = header_values(obj, "X-RateLimit-Resource")
        if len(resource) != 1 or resource[0].strip() != learn.name:
            return None  # another resource's limit, or none said: not this quota's
    try:
        text = _one(obj, learn.header)
        if text is None:
            return None
        limit = int(text)
        if limit == 0:
            raise Unusable(f"{learn.header}: 0 is no limit to follow")
        # (More used than the limit is no contradiction: just after the limit dropped.)
        if learn.header.lower() == "x-ratelimit-limit":
            said = _one(obj, "X-RateLimit-Remaining")
            if said is not None and int(said) > limit:
                raise Unusable(f"X-RateLimit-Remaining: {said} is more than the limit {limit}")
    except Unusable as exc:
        _warn(quota, learn.header, str(exc))
        return None
    return limit, learn.window or period, f"{learn.header}: {text}"


def _ratelimit(learn: Learn, period: float, obj: Any, quota: str) -> tuple[int, float, str] | None:
    window = learn.window or period
    policy = ", ".join(v.strip() for v in header_values(obj, "RateLimit-Policy"))
    try:
        old = _one(obj, "RateLimit-Limit")
        remaining = _one(obj, "RateLimit-Remaining") if old is not None else None
        if old is not None and remaining is not None and int(remaining) > int(old):
            raise Unusable(f"RateLimit-Remaining: {remaining} is more than the limit {old}")
        if not policy:
            if old is None:
                return None
            return _positive(old, "RateLimit-Limit"), window, f"RateLimit-Limit: {old}"
        members = parse_list(policy)
        if old is not None:  # the older draft: the policy item whose quota is the limit
            return _older(members, int(old), window, policy)
        return _newer(learn, members, window, period, policy, obj)
    except (Unusable, NotAList) as exc:
        _warn(quota, "RateLimit-Policy", str(exc))
        return None


def _positive(text: str, header: str) -> int:
    if int(text) == 0:
        raise Unusable(f"{header}: 0 is no limit to follow")
    return int(text)


def _older(members: list[Member], limit: int, window: float, said: str) -> tuple[int, float, str]:
    for member in members:
        item = member.item
        if isinstance(item, int) and not isinstance(item, bool) and item == limit:
            w = _param(member, "w") or window
            shown = f"RateLimit-Limit: {limit}, RateLimit-Policy: {said}"
            return _positive(str(limit), "RateLimit-Limit"), w, shown
    raise Unusable(f"no policy item of {limit} calls, as RateLimit-Limit says")


def _newer(
    learn: Learn, members: list[Member], window: float, period: float, said: str, obj: Any
) -> tuple[int, float, str]:
    if not all(isinstance(m.item, str) and not isinstance(m.item, bool) for m in members):
        raise Unusable("an item is not a policy name")
    if learn.name is not None:
        members = [m for m in members if m.item == learn.name]
        if not members:
            raise Unusable(f"no policy named {learn.name!r}")
    # a policy of another unit (content-bytes, concurrent-requests) says nothing of calls
    members = [m for m in members if str(m.params.get("qu", "requests")) == "requests"]
    if not members:
        raise Unusable('no policy counting requests (qu="requests", the default)')
    best: tuple[int, int, float, Member] | None = None
    for member in members:  # the most restrictive: the fewest calls per period
        q = _param(member, "q")
        if q is None:
            raise Unusable(f"policy {member.item!r} has no q")
        w = _param(member, "w") or window
        per = per_period(q, w, period)
        if best is None or per < best[0]:
            best = (per, q, w, member)
    assert best is not None
    _check_remaining(best[3], best[1], obj)
    return best[1], best[2], f"RateLimit-Policy: {said}"


def _param(member: Member, key: str) -> int | None:
    """A parameter that must be a positive integer when present."""
    value = member.params.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Unusable(f"{key}={value!r} of {member.item!r} is not a positive integer")
    return value


def _check_remaining(member: Member, q: int, obj: Any) -> None:
    """`RateLimit: "name";r=...` must not say more remain than the policy allows."""
    text = ", ".join(v.strip() for v in header_values(obj, "RateLimit"))
    if not text:
        return
    for field in parse_list(text):
        if field.item == member.item:
            r = field.params.get("r")
            if isinstance(r, int) and not isinstance(r, bool) and r > q:
                raise Unusable(f"RateLimit: r={r} of {member.item!r} is more than q={q}")


def _warn(quota: str, header: str, why: str) -> None:
    _ignored.warn(
        (quota, header.lower()),
        "quota %s: ignoring the limit announced by %s (%s); keeping the limit in force "
        "(said at most once a minute)",
        quota,
        header,
        why,
        quota=quota,
        header=header,
    )
