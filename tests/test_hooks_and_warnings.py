"""Sleep hooks never change a call's outcome, and every warning a call can cause is said at
most once a minute (per hook, function, policy and header, or server): a warning that every
call causes must not flood the log, whatever the number of calls."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

import callpolicy
from callpolicy import FakeClock, Registry, RetryExhausted, SleepEvent, add_sleep_hook

RegistryOf = Callable[..., Registry]


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The WARNING lines logged by callpolicy so far."""
    caplog.set_level(logging.WARNING, logger="callpolicy")

    def said() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "callpolicy" and r.levelno == logging.WARNING
        ]

    return said


@attrs.define
class Response:
    status_code: int
    headers: dict[str, str] = attrs.Factory(dict)


class Script:
    """Raises (or returns) `outcomes` in turn, forever; counts the calls."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = outcomes
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        outcome = self.outcomes[self.calls % len(self.outcomes)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@pytest.fixture
def hook_errors() -> Iterator[Callable[[BaseException], list[SleepEvent]]]:
    """hook_errors(error) adds a hook raising `error` at every event it gets (and keeps);
    removed after the test."""
    removers: list[Callable[[], None]] = []

    def add(error: BaseException) -> list[SleepEvent]:
        seen: list[SleepEvent] = []

        def failing_hook(event: SleepEvent) -> None:
            seen.append(event)
            raise error

        removers.append(add_sleep_hook(failing_hook))
        return seen

    yield add
    for remove in removers:
        remove()


# -- 1. a failing sleep hook ------------------------------------------------------------------

HOOK_ERRORS = [AttributeError("no such field"), RuntimeError("metrics down"), KeyError("x")]
RETRIED = """
[endpoints.e]
quotas = ["1/1s"]
retry.on_exceptions = ["ConnectionError"]
retry.on_status = [503]
wait = { strategy = "fixed", seconds = "250ms" }
stop.attempts = 3
"""


@pytest.mark.parametrize("error", HOOK_ERRORS, ids=lambda e: type(e).__name__)
def test_a_failing_hook_never_changes_what_a_retried_call_returns(
    registry_of: RegistryOf,
    clock: FakeClock,
    hook_errors: Callable[[BaseException], list[SleepEvent]],
    error: BaseException,
) -> None:
    seen = hook_errors(error)
    script = Script(ConnectionError("refused"), Response(503), "done")
    fn = registry_of(svc=RETRIED).policy("svc.e")(script)
    assert fn() == "done"
    assert script.calls == 3
    # backoff, quota, backoff, quota: the hook saw every sleep, and every sleep was slept
    assert [e.source for e in seen] == ["backoff", "quota", "backoff", "quota"]
    assert clock.sleeps == pytest.approx([e.seconds for e in seen])


@pytest.mark.parametrize("error", HOOK_ERRORS, ids=lambda e: type(e).__name__)
async def test_a_failing_hook_never_changes_what_a_retried_coroutine_returns(
    registry_of: RegistryOf,
    clock: FakeClock,
    hook_errors: Callable[[BaseException], list[SleepEvent]],
    error: BaseException,
) -> None:
    seen = hook_errors(error)
    script = Script(ConnectionError("refused"), Response(503), "done")

    @registry_of(svc=RETRIED).policy("svc.e")
    async def fn() -> Any:
        return script()

    assert await fn() == "done"
    assert script.calls == 3
    assert [e.source for e in seen] == ["backoff", "quota", "backoff", "quota"]
    assert clock.sleeps == pytest.approx([e.seconds for e in seen])


@pytest.mark.parametrize("error", HOOK_ERRORS, ids=lambda e: type(e).__name__)
def test_a_call_running_out_of_retries_raises_its_own_error_not_the_hooks(
    registry_of: RegistryOf,
    clock: FakeClock,
    hook_errors: Callable[[BaseException], list[SleepEvent]],
    error: BaseException,
) -> None:
    hook_errors(error)
    errors = [ConnectionError(f"refused {n}") for n in range(3)]
    fn = registry_of(svc=RETRIED).policy("svc.e")(Script(*errors))
    with pytest.raises(ConnectionError) as raised:
        fn()
    assert raised.value is errors[-1]
    assert raised.value.__context__ is None  # not chained to the hook's error
    fn = registry_of(svc=RETRIED).policy("svc.e")(Script(Response(503)))
    with pytest.raises(RetryExhausted) as exhausted:
        fn()
    assert exhausted.value.last_result == Response(503)
    assert exhausted.value.__context__ is None


@pytest.mark.parametrize("error", HOOK_ERRORS, ids=lambda e: type(e).__name__)
async def test_a_coroutine_running_out_of_retries_raises_its_own_error_not_the_hooks(
    registry_of: RegistryOf,
    clock: FakeClock,
    hook_errors: Callable[[BaseException], list[SleepEvent]],
    error: BaseException,
) -> None:
    hook_errors(error)
    errors = [ConnectionError(f"refused {n}") for n in range(3)]
    script = Script(*errors)

    @registry_of(svc=RETRIED).policy("svc.e")
    async def fn() -> Any:
        return script()

    with pytest.raises(ConnectionError) as raised:
        await fn()
    assert raised.value is errors[-1]
    assert raised.value.__context__ is None


NO_WAIT = """
[endpoints.e]
retry.on_exceptions = ["ConnectionError"]
wait.strategy = "none"
"""


def test_a_failing_hook_is_logged_once_in_10_000_calls(
    registry_of: RegistryOf,
    clock: FakeClock,
    hook_errors: Callable[[BaseException], list[SleepEvent]],
    warnings: Callable[[], list[str]],
) -> None:
    seen = hook_errors(AttributeError("no such field"))
    fn = registry_of(svc=NO_WAIT).policy("svc.e")(Script(ConnectionError("refused"), "ok"))
    assert [fn() for _ in range(10_000)] == ["ok"] * 10_000
    assert len(seen) == 10_000
    [line] = warnings()
    assert "AttributeError" in line
    assert "no such field" in line


async def test_a_failing_hook_is_logged_once_in_10_000_coroutine_calls(
    registry_of: RegistryOf,
    clock: FakeClock,
    hook_errors: Callable[[BaseException], list[SleepEvent]],
    warnings: Callable[[], list[str]],
) -> None:
    seen = hook_errors(RuntimeError("metrics down"))
    script = Script(ConnectionError("refused"), "ok")

    @registry_of(svc=NO_WAIT).policy("svc.e")
    async def fn() -> Any:
        return script()

    assert [await fn() for _ in range(10_000)] == ["ok"] * 10_000
    assert len(seen) == 10_000
    [line] = warnings()
    assert "RuntimeError" in line


def test_a_failing_hook_is_logged_again_after_a_minute(
    registry_of: RegistryOf,
    clock: FakeClock,
    hook_errors: Callable[[BaseException], list[SleepEvent]],
    warnings: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a minute, by the real monotonic clock (moved here by hand), not once ever."""
    real = time.monotonic
    offset = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: real() + offset[0])
    hook_errors(RuntimeError("metrics down"))
    fn = registry_of(svc=NO_WAIT).policy("svc.e")(Script(ConnectionError("refused"), "ok"))
    for step in (0.0, 30.0, 29.0, 2.0, 30.0, 31.0):
        offset[0] += step
        fn()
    # said at 0 s, not at 30 or 59 s, again at 61 s, not at 91 s, again at 122 s
    assert len(warnings()) == 3


def test_two_failing_hooks_are_each_logged_once(
    registry_of: RegistryOf,
    clock: FakeClock,
    hook_errors: Callable[[BaseException], list[SleepEvent]],
    warnings: Callable[[], list[str]],
) -> None:
    hook_errors(RuntimeError("first"))
    hook_errors(RuntimeError("second"))
    fn = registry_of(svc=NO_WAIT).policy("svc.e")(Script(ConnectionError("refused"), "ok"))
    for _ in range(1_000):
        assert fn() == "ok"
    said = warnings()
    assert len(said) == 2
    assert any("first" in line for line in said)
    assert any("second" in line for line in said)


# -- 2. what a hook receives, and what a log record carries ----------------------------------

EVENT_FIELDS = [
    "policy",
    "attempt",
    "max_attempts",
    "source",
    "seconds",
    "cause",
    "trigger",
    "quota",
    "hint",
    "backoff",
    "jitter",
    "hint_seconds",
    "rule",
    "rule_attempt",
    "rule_max_attempts",
    "gave_up",
    "call_id",
]
# The record's `extra`: the event's fields, `source` and `seconds` under other names.
RECORD_FIELDS = {field: field for field in EVENT_FIELDS} | {
    "source": "sleep_source",
    "seconds": "sleep_seconds",
}
HINTED_AND_PAUSED = """
[endpoints.e]
quotas = ["1/1s"]
retry.on_exceptions = ["ConnectionError"]
retry.on_status = [503]
wait = { strategy = "fixed", seconds = "250ms", server_hints = ["Retry-After"] }
pause = { remaining = "X-Remaining", reset = "X-Reset" }
stop.attempts = 4
"""


def test_a_hook_gets_these_fields_and_the_log_record_carries_them(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    assert [f.name for f in attrs.fields(SleepEvent)] == EVENT_FIELDS
    seen: list[SleepEvent] = []
    remove = add_sleep_hook(seen.append)
    untrace = callpolicy.add_hook(lambda event: None, ["call_end"])  # calls get ids
    caplog.set_level(logging.INFO, logger="callpolicy")
    try:
        fn = registry_of(svc=HINTED_AND_PAUSED).policy("svc.e")(
            Script(
                ConnectionError("refused"),
                Response(503, {"Retry-After": "2"}),
                Response(200, {"X-Remaining": "0", "X-Reset": "5"}),
                Response(200),
            )
        )
        fn()  # backoff, quota, backoff (hinted, past the quota's window): then paused
        fn()  # by the last answer
    finally:
        remove()
        untrace()
    assert [(e.source, e.trigger) for e in seen] == [
        ("backoff", "exception"),
        ("quota", "quota"),
        ("backoff", "status"),
        ("pause", "quota"),
    ]
    assert seen[2].hint is not None and "Retry-After: 2" in seen[2].hint
    assert seen[1].quota is not None
    # A hook of call ends is registered: calls are traced, each sleep carries its call's id
    assert seen[0].call_id == seen[1].call_id == seen[2].call_id != seen[3].call_id > 0
    records = [r for r in caplog.records if r.name == "callpolicy" and r.levelno == logging.INFO]
    assert len(records) == len(seen)
    for event, record in zip(seen, records, strict=True):
        assert record.getMessage() == event.message()
        for field, extra in RECORD_FIELDS.items():
            assert getattr(record, extra) == getattr(event, field), (field, record.getMessage())


# -- 3. an actual cost that is not a number ---------------------------------------------------

WEIGHTED = """
[quotas.tokens]
limit = "1000000/1s"
weighted = true
[endpoints.a]
quotas = ["tokens"]
[endpoints.b]
quotas = ["tokens"]
"""
BAD_COSTS: list[Any] = [None, "x", math.nan, -1, math.inf, -math.inf, True, "3", [], {"total": 3}]


@pytest.mark.parametrize("bad", BAD_COSTS, ids=repr)
def test_an_actual_cost_that_is_not_a_number_warns_once_per_function(
    registry_of: RegistryOf, clock: FakeClock, warnings: Callable[[], list[str]], bad: Any
) -> None:
    registry = registry_of(svc=WEIGHTED)

    def messages_cost(reply: Any) -> Any:
        return bad

    def search_cost(reply: Any) -> Any:
        return bad

    @registry.policy("svc.a", cost=2, actual_cost=messages_cost)
    def messages(n: int) -> int:
        return n

    @registry.policy("svc.b", cost=2, actual_cost=search_cost)
    def search(n: int) -> int:
        return -n

    for n in range(10_000):
        assert messages(n) == n
        assert search(n) == -n
    said = warnings()
    assert len(said) == 2, said
    assert all("actual_cost returned" in line for line in said)


@pytest.mark.parametrize("bad", [None, "x", math.nan, -1], ids=repr)
async def test_an_async_actual_cost_that_is_not_a_number_warns_once(
    registry_of: RegistryOf, clock: FakeClock, warnings: Callable[[], list[str]], bad: Any
) -> None:
    @registry_of(svc=WEIGHTED).policy("svc.a", cost=2, actual_cost=lambda reply: bad)
    async def messages(n: int) -> int:
        return n

    for n in range(10_000):
        assert await messages(n) == n
    said = warnings()
    assert len(said) == 1, said
    assert "actual_cost returned" in said[0]


# -- 4. every other warning a call can cause --------------------------------------------------

HINTED = """
[endpoints.{name}]
retry.on_status = [503]
wait = {{ strategy = "fixed", seconds = "1s", server_hints = ["Retry-After", "X-Reset"] }}
"""
BAD_HINTS = ["soon", "-1", "nan", "5 seconds", "1e3", "٣"]


def hinted_calls(n: int) -> Script:
    """n calls' worth of: a 503 with bad hints, then a 200."""
    outcomes: list[Any] = []
    for k in range(n):
        bad = BAD_HINTS[k % len(BAD_HINTS)]
        outcomes += [Response(503, {"Retry-After": bad, "X-Reset": bad}), Response(200)]
    return Script(*outcomes)


def test_bad_hints_warn_once_per_policy_and_header_in_1_000_calls(
    registry_of: RegistryOf, clock: FakeClock, warnings: Callable[[], list[str]]
) -> None:
    registry = registry_of(svc=HINTED.format(name="a") + HINTED.format(name="b"))
    first = registry.policy("svc.a")(hinted_calls(1_000))
    second = registry.policy("svc.b")(hinted_calls(1_000))
    for _ in range(1_000):
        assert first().status_code == 200
        assert second().status_code == 200
    assert clock.sleeps == [1.0] * 2_000  # the computed backoff, every time
    said = sorted(line.split(" (")[0].split(" '")[0] for line in warnings())
    assert said == [
        "svc.a: ignoring Retry-After",
        "svc.a: ignoring X-Reset",
        "svc.b: ignoring Retry-After",
        "svc.b: ignoring X-Reset",
    ], warnings()


async def test_bad_hints_warn_once_per_policy_and_header_in_1_000_coroutine_calls(
    registry_of: RegistryOf, clock: FakeClock, warnings: Callable[[], list[str]]
) -> None:
    script = hinted_calls(1_000)

    @registry_of(svc=HINTED.format(name="a")).policy("svc.a")
    async def fn() -> Any:
        return script()

    for _ in range(1_000):
        assert (await fn()).status_code == 200
    assert len(warnings()) == 2, warnings()


def test_a_bad_pause_reset_warns_once_in_1_000_calls(
    registry_of: RegistryOf, clock: FakeClock, warnings: Callable[[], list[str]]
) -> None:
    fn = registry_of(
        svc='[endpoints.e]\npause = { remaining = "X-Left", reset = "X-Reset" }'
    ).policy("svc.e")(
        Script(*[Response(200, {"X-Left": "0", "X-Reset": bad}) for bad in BAD_HINTS])
    )
    for _ in range(1_000):
        assert fn().status_code == 200
    assert clock.sleeps == []  # a reset that is not a hint pauses nothing
    assert len(warnings()) == 1, warnings()


def test_arguments_that_cannot_be_sent_again_warn_once_in_1_000_calls(
    registry_of: RegistryOf, clock: FakeClock, warnings: Callable[[], list[str]]
) -> None:
    fn = registry_of(svc=NO_WAIT).policy("svc.e")(Script(ConnectionError("refused")))
    for _ in range(1_000):
        pages = iter([1, 2, 3])
        next(pages)
        with pytest.raises(ConnectionError):
            fn(pages)
    [line] = warnings()
    assert "not retrying" in line


DOWN = "redis://127.0.0.1:1/0?timeout=100ms"  # nothing listens on port 1


def ran() -> str:
    return "ran"


@pytest.mark.parametrize("mode", ["fail-open", "local", "fail-closed"])
def test_an_unreachable_server_warns_once_in_200_calls(
    registry_of: RegistryOf, warnings: Callable[[], list[str]], mode: str
) -> None:
    local = 'local_limit = "1000/1s"' if mode == "local" else ""
    fn = registry_of(
        svc=f"""
        [quotas.q]
        limit = "1000/1s"
        storage = "{DOWN}"
        on_unavailable = "{mode}"
        {local}
        [endpoints.e]
        quotas = ["q"]
        """
    ).policy("svc.e")(ran)
    outcomes = []
    for _ in range(200):
        try:
            outcomes.append(fn())
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    expected = "QuotaUnavailable" if mode == "fail-closed" else "ran"
    assert outcomes == [expected] * 200
    [line] = warnings()
    assert "unreachable" in line


@pytest.mark.parametrize("mode", ["fail-open", "fail-closed"])
async def test_an_unreachable_server_warns_once_in_200_coroutine_calls(
    registry_of: RegistryOf, warnings: Callable[[], list[str]], mode: str
) -> None:
    @registry_of(
        svc=f"""
        [quotas.q]
        limit = "1000/1s"
        storage = "{DOWN}"
        on_unavailable = "{mode}"
        [endpoints.e]
        quotas = ["q", {{ concurrency = 5, storage = "{DOWN}", on_unavailable = "{mode}" }}]
        """
    ).policy("svc.e")
    async def fn() -> str:
        return "ran"

    outcomes = []
    for _ in range(200):
        try:
            outcomes.append(await fn())
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    expected = "QuotaUnavailable" if mode == "fail-closed" else "ran"
    assert outcomes == [expected] * 200
    [line] = warnings()
    assert "unreachable" in line
