"""Every sleep is logged at INFO by the "callpolicy" logger and passed to hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from callpolicy import FakeClock, Registry, SleepEvent, add_sleep_hook

RegistryOf = Callable[..., Registry]

POLICY = """
[quotas.app]
limit = "1/2s"
[endpoints.get]
quotas = ["app"]
retry.on_exceptions = ["ConnectionError"]
retry.on_status = [503]
wait = { strategy = "fixed", seconds = "500ms" }
stop.attempts = 3
"""


class Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


@pytest.fixture
def events() -> Iterator[list[SleepEvent]]:
    seen: list[SleepEvent] = []
    remove = add_sleep_hook(seen.append)
    yield seen
    remove()


def run(registry: Registry) -> object:
    outcomes = iter([ConnectionError("refused"), Response(503), Response(200)])

    def call() -> object:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return registry.policy("api.get")(call)()


def test_backoff_and_quota_sleeps_are_events_with_cause_and_length(
    registry_of: RegistryOf, clock: FakeClock, events: list[SleepEvent]
) -> None:
    run(registry_of(api=POLICY))
    assert [(e.source, e.attempt, e.trigger, e.cause) for e in events] == [
        ("backoff", 1, "exception", "ConnectionError: refused"),
        ("quota", 2, "quota", "quota api.app (1/2s)"),
        ("backoff", 2, "status", "HTTP 503"),
        ("quota", 3, "quota", "quota api.app (1/2s)"),
    ]
    assert [e.seconds for e in events] == pytest.approx([0.5, 1.52, 0.5, 1.52])
    assert {e.policy for e in events} == {"api.get"}
    assert {e.max_attempts for e in events} == {3}
    assert clock.slept == pytest.approx(4.04)


def test_sleeps_are_logged_at_info_with_structured_fields(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        run(registry_of(api=POLICY))
    records = [r for r in caplog.records if r.name == "callpolicy"]
    assert [r.getMessage() for r in records] == [
        "api.get: attempt 1 of 3 failed (ConnectionError: refused); sleeping 0.500s (backoff)",
        "api.get: attempt 2 of 3 waited 1.520s for quota api.app (1/2s) (quota)",
        "api.get: attempt 2 of 3 failed (HTTP 503); sleeping 0.500s (backoff)",
        "api.get: attempt 3 of 3 waited 1.520s for quota api.app (1/2s) (quota)",
    ]
    first = records[0]
    assert first.levelno == logging.INFO
    assert (first.policy, first.attempt, first.max_attempts) == ("api.get", 1, 3)  # type: ignore[attr-defined]
    assert (first.sleep_source, first.sleep_seconds) == ("backoff", 0.5)  # type: ignore[attr-defined]
    assert first.cause == "ConnectionError: refused"  # type: ignore[attr-defined]
    assert records[1].quota == "api.app"  # type: ignore[attr-defined]


def test_a_removed_hook_hears_nothing(registry_of: RegistryOf, clock: FakeClock) -> None:
    seen: list[SleepEvent] = []
    remove = add_sleep_hook(seen.append)
    remove()
    run(registry_of(api=POLICY))
    assert seen == []


def test_the_success_path_logs_nothing(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(api=POLICY)
    with caplog.at_level(logging.DEBUG, logger="callpolicy"):
        registry.policy("api.get")(lambda: Response(200))()
    assert caplog.records == []


def test_a_poll_that_is_not_done_is_logged_as_such(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(
        clari="""
        [endpoints.status]
        retry.until = { field = "status", equals = "DONE" }
        quotas = ["5/1s"]
        wait = { strategy = "fixed", seconds = "1s" }
        """
    )
    states = iter([{"status": "RUNNING"}, {"status": "DONE"}])
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        registry.policy("clari.status")(lambda: next(states))()
    assert [r.getMessage() for r in caplog.records] == [
        "clari.status: attempt 1 of 3 is not done yet (returned {'status': 'RUNNING'}); "
        "sleeping 1.000s (backoff)"
    ]
    assert caplog.records[0].trigger == "result"  # type: ignore[attr-defined]


def test_an_inline_quota_is_named_once_in_the_log(
    registry_of: RegistryOf, clock: FakeClock, events: list[SleepEvent]
) -> None:
    registry = registry_of(api='[endpoints.get]\nquotas = ["1/1s"]\n')
    fn = registry.policy("api.get")(noop)
    fn()
    fn()
    assert [e.cause for e in events] == ["quota api.get[1/1s]"]


def noop() -> None:
    return None


# -- a backoff sleep says its real length and its parts, each once ----------------------------


def script(*outcomes: object) -> Callable[[], object]:
    """Returns (or raises) each of `outcomes` in turn, then "ok"."""
    replies = iter([*outcomes, "ok"])

    def call() -> object:
        outcome = next(replies)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call


class HintedResponse(Response):
    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(status_code)
        self.headers = headers


def test_a_hint_with_jitter_shows_both_and_adds_up(
    registry_of: RegistryOf, clock: FakeClock, events: list[SleepEvent]
) -> None:
    """The issue's defect: `sleeping 1.816s (backoff; Retry-After: 1 ...)` hid its jitter
    (and drew a second one, for the computed backoff it did not use)."""
    registry = registry_of(
        api="""
        [endpoints.get]
        retry.on_status = [429]
        wait = { strategy = "fixed", seconds = "1s", server_hints = ["Retry-After"], \
jitter = "3s" }
        """
    )
    for _ in range(20):
        registry.policy("api.get")(script(HintedResponse(429, {"Retry-After": "2"})))()
    for event, slept in zip(events, clock.sleeps, strict=True):
        assert event.jitter is not None and 0 <= event.jitter <= 3
        assert (event.hint, event.hint_seconds, event.backoff) == ("Retry-After: 2", 2.0, 1.0)
        assert event.seconds == slept == pytest.approx(2.0 + event.jitter)
        assert event.message() == (
            f"api.get: attempt 1 of 3 failed (HTTP 429); sleeping {event.seconds:.3f}s "
            f"(Retry-After: 2 + jitter {event.jitter:.3f}s, instead of the backoff 1.000s)"
        )
    assert len({e.jitter for e in events}) > 1


def test_a_backoff_with_jitter_shows_both(
    registry_of: RegistryOf, clock: FakeClock, events: list[SleepEvent]
) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        retry.on_exceptions = ["ConnectionError"]
        wait = { strategy = "fixed", seconds = "2s", jitter = "1s" }
        """
    )
    registry.policy("api.get")(script(ConnectionError("down")))()
    [event] = events
    assert event.backoff == 2.0 and event.jitter is not None
    assert event.seconds == pytest.approx(2.0 + event.jitter) == clock.sleeps[0]
    assert event.message().endswith(
        f"sleeping {event.seconds:.3f}s (backoff 2.000s + jitter {event.jitter:.3f}s)"
    )


def test_an_ignored_hint_says_so_beside_the_backoff(
    registry_of: RegistryOf, clock: FakeClock, events: list[SleepEvent]
) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        retry.on_status = [429]
        wait = { strategy = "fixed", seconds = "2s", jitter = "1s", \
server_hints = ["Retry-After"], hint_cap = "10s", hint_above_cap = "ignore" }
        """
    )
    registry.policy("api.get")(script(HintedResponse(429, {"Retry-After": "3600"})))()
    [event] = events
    assert event.hint_seconds is None and event.jitter is not None
    assert event.seconds == pytest.approx(2.0 + event.jitter) == clock.sleeps[0]
    assert event.message().endswith(
        f"(backoff 2.000s + jitter {event.jitter:.3f}s; "
        "Retry-After: 3600 is above hint_cap 10s, ignored)"
    )


def test_sleeps_under_a_millisecond_are_logged_at_debug(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        retry.on_exceptions = ["ConnectionError"]
        wait = { strategy = "chain", steps = [{ strategy = "none" }, \
{ strategy = "fixed", seconds = "1ms" }] }
        """
    )
    with caplog.at_level(logging.DEBUG, logger="callpolicy"):
        registry.policy("api.get")(script(ConnectionError("a"), ConnectionError("b")))()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.DEBUG,
            "api.get: attempt 1 of 3 failed (ConnectionError: a); sleeping 0.000s (backoff)",
        ),
        (
            logging.INFO,
            "api.get: attempt 2 of 3 failed (ConnectionError: b); sleeping 0.001s (backoff)",
        ),
    ]
