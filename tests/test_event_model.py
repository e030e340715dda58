"""One event model: every attempt, sleep, give-up, quota refusal and call end is an event
carrying its call's id and attempt, passed to the hooks that asked for its kind; and the
per-policy statistics snapshot counts the calls exactly, from threads and tasks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from callpolicy import (
    AttemptEnded,
    AttemptStarted,
    CallEnded,
    CircuitOpen,
    FakeClock,
    GaveUp,
    QuotaExceeded,
    QuotaRefused,
    Registry,
    SleepEvent,
    add_hook,
)

RegistryOf = Callable[..., Registry]

POLICY = """
[endpoints.get]
quotas = ["2/1s"]
retry.on_exceptions = ["ConnectionError"]
retry.on_status = [503]
wait = { strategy = "fixed", seconds = "100ms" }
stop.attempts = 3

[endpoints.plain]

[endpoints.strict]
quotas = [{ limit = "1/10s", max_wait = "1s" }]
"""


class Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code

    def __repr__(self) -> str:
        return f"<Response {self.status_code}>"


class Script:
    """Raises (or returns) `outcomes` in turn."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)

    def __call__(self) -> Any:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def ok() -> str:
    return "ok"


def nothing() -> None:
    return None


@pytest.fixture
def seen() -> Iterator[list[Any]]:
    events: list[Any] = []
    remove = add_hook(events.append)
    yield events
    remove()


def story(events: list[Any]) -> list[tuple[Any, ...]]:
    """Each event as (kind, attempt, what), in order."""
    told: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, AttemptEnded):
            told.append((e.kind, e.attempt, e.outcome, e.retried))
        elif isinstance(e, SleepEvent):
            told.append((e.kind, e.attempt, e.source))
        elif isinstance(e, CallEnded):
            told.append((e.kind, e.attempt, e.failed, e.error))
        elif isinstance(e, GaveUp):
            told.append((e.kind, e.attempt, e.reason, e.error))
        elif isinstance(e, QuotaRefused):
            told.append((e.kind, e.attempt, e.quota, e.reason))
        else:
            told.append((e.kind, e.attempt))
    return told


RETRIED_STORY = [
    ("attempt_start", 1),
    ("attempt_end", 1, "ConnectionError: refused", True),
    ("sleep", 1, "backoff"),
    ("attempt_start", 2),
    ("attempt_end", 2, "HTTP 503", True),
    ("sleep", 2, "backoff"),
    ("attempt_start", 3),
    ("sleep", 3, "quota"),  # 2/1s: the third attempt within the second waits
    ("attempt_end", 3, "returned", False),
    ("call_end", 3, False, None),
]


def test_a_retried_call_is_told_attempt_by_attempt_with_one_call_id(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    fn = registry_of(api=POLICY).policy("api.get")(
        Script(ConnectionError("refused"), Response(503), "ok")
    )
    assert fn() == "ok"
    assert story(seen) == RETRIED_STORY
    ids = {e.call_id for e in seen}
    assert len(ids) == 1 and ids != {0}
    assert all(e.policy == "api.get" for e in seen)
    ended = [e for e in seen if isinstance(e, AttemptEnded)]
    quota_wait = next(e.seconds for e in seen if isinstance(e, SleepEvent) and e.quota)
    assert [e.seconds for e in ended] == [0.0, 0.0, pytest.approx(quota_wait)]  # it waited
    assert quota_wait > 0.5


async def test_a_retried_coroutine_is_told_the_same_way(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    script = Script(ConnectionError("refused"), Response(503), "ok")

    @registry_of(api=POLICY).policy("api.get")
    async def fn() -> Any:
        return script()

    assert await fn() == "ok"
    assert story(seen) == RETRIED_STORY
    assert len({e.call_id for e in seen}) == 1


def test_giving_up_is_an_event_and_the_call_ends_with_the_error(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    fn = registry_of(api=POLICY).policy("api.get")(Script(*[ConnectionError("down")] * 3))
    with pytest.raises(ConnectionError):
        fn()
    assert story(seen)[-3:] == [
        ("attempt_end", 3, "ConnectionError: down", True),
        ("give_up", 3, "stop", "ConnectionError: down"),
        ("call_end", 3, True, "ConnectionError: down"),
    ]


def test_an_error_not_retried_ends_its_attempt_and_the_call(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    fn = registry_of(api=POLICY).policy("api.get")(Script(ValueError("bad")))
    with pytest.raises(ValueError, match="bad"):
        fn()
    assert story(seen) == [
        ("attempt_start", 1),
        ("attempt_end", 1, "ValueError: bad", False),
        ("call_end", 1, True, "ValueError: bad"),
    ]


def test_a_quota_refusal_is_an_event(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    fn = registry_of(api=POLICY).policy("api.strict")(ok)
    assert fn() == "ok"
    seen.clear()
    with pytest.raises(QuotaExceeded):
        fn()
    quota = next(e.quota for e in seen if isinstance(e, QuotaRefused))
    assert story(seen) == [
        ("attempt_start", 1),
        ("quota_refused", 1, quota, "max_wait"),
        ("attempt_end", 1, f"QuotaExceeded: {seen[-1].error.partition(': ')[2]}", False),
        ("call_end", 1, True, seen[-1].error),
    ]
    assert "max_wait" in seen[-1].error


def test_nested_calls_have_their_own_ids_and_the_outer_id_comes_back(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    registry = registry_of(api=POLICY)
    inner = registry.policy("api.plain")(ok)

    @registry.policy("api.get")
    def outer() -> str:
        assert inner() == "ok"
        raise ConnectionError("after inner")

    with pytest.raises(ConnectionError):
        outer()
    outer_ids = {e.call_id for e in seen if e.policy == "api.get"}
    inner_ids = [e.call_id for e in seen if e.policy == "api.plain"]
    assert len(outer_ids) == 1
    assert len(set(inner_ids)) == 3 and not outer_ids & set(inner_ids)  # one per attempt


def test_hooks_get_only_the_kinds_they_ask_for(registry_of: RegistryOf, clock: FakeClock) -> None:
    got: list[Any] = []
    remove = add_hook(got.append, kinds=["give_up", "call_end"])
    try:
        fn = registry_of(api=POLICY).policy("api.get")(Script(*[ConnectionError("x")] * 3))
        with pytest.raises(ConnectionError):
            fn()
    finally:
        remove()
    assert [e.kind for e in got] == ["give_up", "call_end"]
    with pytest.raises(ValueError, match="unknown event kinds \\['sleeps'\\]"):
        add_hook(got.append, kinds=["sleeps"])
    with pytest.raises(TypeError, match="must be callable"):
        add_hook("not a function")  # type: ignore[arg-type]


def test_without_hooks_events_carry_no_call_id_and_calls_are_not_traced(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="callpolicy")
    fn = registry_of(api=POLICY).policy("api.get")(Script(ConnectionError("x"), "ok"))
    assert fn() == "ok"
    (record,) = caplog.records
    assert record.call_id == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["attempt_start", "attempt_end", "call_end", "give_up"])
def test_a_failing_hook_of_any_kind_never_changes_the_outcome(
    registry_of: RegistryOf, clock: FakeClock, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Any) -> None:
        raise RuntimeError(f"metrics down at {event.kind}")

    remove = add_hook(broken, kinds=[kind])
    try:
        registry = registry_of(api=POLICY)
        fn = registry.policy("api.get")(Script(ConnectionError("x"), "ok"))
        assert fn() == "ok"
        failing = registry.policy("api.get")(Script(*[ConnectionError("y")] * 3))
        with pytest.raises(ConnectionError, match="y"):
            failing()
    finally:
        remove()
    warned = [r for r in caplog.records if "metrics down" in r.getMessage()]
    assert len(warned) == 1  # said once a minute per hook


# -- statistics -------------------------------------------------------------------------


def test_stats_count_calls_successes_failures_retries_and_give_ups(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(api=POLICY)
    registry.policy("api.get")(Script(ConnectionError("x"), Response(503), "ok"))()
    with pytest.raises(ConnectionError):
        registry.policy("api.get")(Script(*[ConnectionError("x")] * 3))()
    with pytest.raises(ValueError):
        registry.policy("api.get")(Script(ValueError("not retried")))()
    stats = registry.stats()["api.get"]
    assert (stats.calls, stats.successes, stats.failures, stats.in_flight) == (3, 1, 2, 0)
    assert (stats.retries, stats.give_ups, stats.sleeps) == (4, 1, 4)
    assert stats.sleep_seconds == pytest.approx(0.4)
    assert stats.sleep_buckets[stats.sleep_bounds.index(0.1)] == 4
    assert stats.failure_rate == pytest.approx(2 / 3)
    assert registry.stats()["api.plain"].calls == 0


def test_stats_survive_a_reload_and_count_quota_refusals_as_failures(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(api=POLICY)
    fn = registry.policy("api.strict")(ok)
    fn()
    with pytest.raises(QuotaExceeded):
        fn()
    registry.load()
    stats = registry.stats()["api.strict"]
    assert (stats.calls, stats.successes, stats.failures) == (2, 1, 1)


def test_stats_are_exact_from_100_threads(registry_of: RegistryOf) -> None:
    registry = registry_of(
        api="[endpoints.e]\nretry.on_exceptions = ['ConnectionError']\n"
        "wait.strategy = 'none'\nstop.attempts = 2\n"
    )
    lock = threading.Lock()
    tried: set[tuple[int, int]] = set()  # (worker, call) that failed once already

    @registry.policy("api.e")
    def fn(worker: int, call: int) -> int:
        with lock:
            first = (worker, call) not in tried
            tried.add((worker, call))
        if first and call % 3 == 0:
            raise ConnectionError("every third call, once")
        return call

    barrier = threading.Barrier(100)

    def worker(n: int) -> None:
        barrier.wait()
        for call in range(20):
            fn(n, call)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = registry.stats()["api.e"]
    assert stats.calls == stats.successes == 2000
    assert stats.retries == 100 * 7  # calls 0, 3, ..., 18 of each worker
    assert stats.failures == stats.in_flight == 0


async def test_stats_are_exact_from_100_tasks(registry_of: RegistryOf) -> None:
    registry = registry_of(api="[endpoints.e]\n")
    started = asyncio.Event()

    @registry.policy("api.e")
    async def fn(i: int) -> int:
        await started.wait()
        if i % 4 == 0:
            raise ValueError(i)
        return i

    tasks = [asyncio.create_task(fn(i)) for i in range(100)]
    await asyncio.sleep(0)
    assert registry.stats()["api.e"].in_flight == 100
    started.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stats = registry.stats()["api.e"]
    assert sum(isinstance(r, ValueError) for r in results) == stats.failures == 25
    assert (stats.calls, stats.successes, stats.in_flight) == (100, 75, 0)
    assert stats.failure_rate == 0.25


def test_event_ids_from_100_threads_are_distinct_per_call(registry_of: RegistryOf) -> None:
    registry = registry_of(api="[endpoints.e]\n")
    ends: list[CallEnded] = []
    starts: list[AttemptStarted] = []
    remove = add_hook(
        lambda e: (ends if e.kind == "call_end" else starts).append(e),
        kinds=["call_end", "attempt_start"],
    )
    fn = registry.policy("api.e")(nothing)
    try:
        threads = [threading.Thread(target=lambda: [fn() for _ in range(10)]) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        remove()
    assert len({e.call_id for e in ends}) == len(ends) == 1000
    assert {e.call_id for e in starts} == {e.call_id for e in ends}


FALLBACK = """
[endpoints.get]
retry.on_exceptions = ["ConnectionError"]
wait.strategy = "none"
stop.attempts = 2
fallback = { call = "test_event_model.ok" }
"""


def test_a_fallback_is_an_event_of_its_call_and_counted(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    registry = registry_of(api=FALLBACK)
    fn = registry.policy("api.get")(Script(ConnectionError("a"), ConnectionError("b")))
    assert fn() == "ok"
    assert [e.kind for e in seen][-3:] == ["give_up", "fallback", "call_end"]
    fallback, end = seen[-2], seen[-1]
    assert (fallback.give_up, fallback.source, fallback.attempt) == ("retries", "call", 2)
    assert fallback.call_id == end.call_id == seen[0].call_id > 0
    assert not end.failed  # the caller got a value
    stats = registry.stats()["api.get"]
    assert (stats.calls, stats.failures, stats.fallbacks, stats.give_ups) == (1, 1, 1, 1)


# -- found by review: each of these once broke a call or a count --------------------------

NO_QUOTA_FOR_RETRY = """
[endpoints.get]
quotas = [{ limit = "2/10s", max_wait = "1s" }]
retry.on_exceptions = ["ConnectionError"]
wait.strategy = "none"
stop.attempts = 5
"""


def test_a_give_up_hook_sees_a_retry_refused_by_its_quota(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    registry = registry_of(api=NO_QUOTA_FOR_RETRY)
    fn = registry.policy("api.get")(Script(*[ConnectionError("down")] * 5))
    with pytest.raises(QuotaExceeded):
        fn()
    told = story(seen)
    assert told[-4:] == [
        ("quota_refused", 3, told[-4][2], "max_wait"),
        ("attempt_end", 3, told[-3][2], False),
        ("give_up", 2, "quota", "ConnectionError: down"),  # the last attempt that ran
        ("call_end", 3, True, told[-1][3]),
    ]
    assert told[-3][2].startswith("QuotaExceeded: ")  # the third attempt was refused
    stats = registry.stats()["api.get"]
    assert (stats.calls, stats.failures, stats.give_ups, stats.in_flight) == (1, 1, 1, 0)


class Unprintable(ConnectionError):
    def __str__(self) -> str:
        raise RuntimeError("str broke")


def test_an_error_whose_str_fails_changes_nothing_for_traced_calls(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    registry = registry_of(api=POLICY)
    assert registry.policy("api.get")(Script(Unprintable(), "ok"))() == "ok"
    with pytest.raises(Unprintable):
        registry.policy("api.get")(Script(*[Unprintable()] * 3))()
    ended = [e for e in seen if isinstance(e, AttemptEnded)]
    assert ended[0].outcome == "Unprintable: (its message could not be read)"
    assert registry.stats()["api.get"].in_flight == 0


@pytest.mark.parametrize("kind", ["attempt_start", "attempt_end", "call_end"])
def test_a_hook_raising_an_interrupt_leaves_the_counts_whole(
    registry_of: RegistryOf, clock: FakeClock, kind: str
) -> None:
    def interrupt(event: Any) -> None:
        raise KeyboardInterrupt

    registry = registry_of(api=POLICY)
    remove = add_hook(interrupt, [kind])
    try:
        with pytest.raises(KeyboardInterrupt):  # interrupts are not swallowed
            registry.policy("api.get")(Script(ConnectionError("x"), "ok"))()
    finally:
        remove()
    stats = registry.stats()["api.get"]
    assert stats.in_flight == 0
    assert stats.calls == stats.successes + stats.failures


def test_hooks_of_sleeps_only_do_not_trace_calls(registry_of: RegistryOf, clock: FakeClock) -> None:
    from callpolicy._events import HOOKS  # noqa: PLC0415

    sleeps: list[SleepEvent] = []
    remove = add_hook(sleeps.append, ["sleep", "give_up", "fallback"])
    try:
        assert not HOOKS.traced
        registry_of(api=POLICY).policy("api.get")(Script(ConnectionError("x"), "ok"))()
    finally:
        remove()
    assert [e.call_id for e in sleeps] == [0]  # untraced: the id is 0


def test_a_hook_is_removed_one_registration_at_a_time_and_async_hooks_are_refused() -> None:
    from callpolicy._events import HOOKS  # noqa: PLC0415

    def hook(event: Any) -> None:
        return None

    first = add_hook(hook, ["give_up"])
    second = add_hook(hook, ["give_up"])
    first()
    first()  # twice: still only the first registration
    assert HOOKS.by_kind["give_up"] == (hook,)
    second()
    assert len(HOOKS.by_kind["give_up"]) == 0

    async def ahook(event: Any) -> None:
        return None

    with pytest.raises(TypeError, match="coroutine function"):
        add_hook(ahook)


def test_an_untraced_call_inside_a_traced_one_leaves_its_attempts_alone(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(api=POLICY)
    got: list[Any] = []
    removers = [add_hook(got.append)]
    inner = registry.policy("api.get")(Script(ConnectionError("a"), ConnectionError("b"), "in"))

    @registry.policy("api.plain")
    def outer() -> str:
        removers.pop()()  # the last hook goes: the inner call is not traced
        result: str = inner()
        removers.append(add_hook(got.append))
        return result

    assert outer() == "in"
    removers.pop()()
    assert [(e.kind, e.attempt) for e in got if e.policy == "api.plain"] == [
        ("attempt_start", 1),
        ("attempt_end", 1),
        ("call_end", 1),
    ]


BREAKER = """
[endpoints.get]
retry.on_exceptions = ["ConnectionError"]
wait.strategy = "none"
stop.attempts = 1
breaker = { window = 4, min_calls = 2, failure_ratio = 0.5, open_for = "10s", probes = 1 }
budget = { max_tokens = 2, token_ratio = 0.5 }
"""


def test_breaker_and_budget_changes_are_events_of_the_call_that_caused_them(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    registry = registry_of(api=BREAKER)
    fn = registry.policy("api.get")(Script(*[ConnectionError("down")] * 2, "ok"))
    for _ in range(2):
        with pytest.raises(ConnectionError):
            fn()
    (opened,) = [e for e in seen if e.kind == "breaker"]
    assert (opened.breaker, opened.state, opened.policy) == ("api.get", "open", "api.get")
    assert opened.call_id == seen[-1].call_id  # the second call opened it
    assert "2 of 2 calls failed" in opened.message()
    assert registry.stats()["api.get"].breaker == "open"
    with pytest.raises(CircuitOpen):
        fn()
    clock.advance(10)
    assert fn() == "ok"
    assert [e.state for e in seen if e.kind == "breaker"] == ["open", "half-open", "closed"]
    assert registry.stats()["api.get"].breaker == "closed"


FALLBACK_ON_QUOTA = """
[endpoints.get]
quotas = [{ limit = "1/10s", max_wait = "1s" }]
fallback = { call = "test_event_model.ok" }
"""


def test_an_attempt_refused_is_said_failed_even_when_a_fallback_serves_the_call(
    registry_of: RegistryOf, clock: FakeClock, seen: list[Any]
) -> None:
    fn = registry_of(api=FALLBACK_ON_QUOTA).policy("api.get")(nothing)
    assert fn() is None
    seen.clear()
    assert fn() == "ok"  # refused by the quota: the fallback served
    told = story(seen)
    assert [t[0] for t in told] == [
        "attempt_start",
        "quota_refused",
        "attempt_end",
        "fallback",
        "call_end",
    ]
    assert told[2][2].startswith("QuotaExceeded: ") and told[4][2] is False
