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
    assert [e.seconds for e in events] == pytest.approx([0.5, 1.502, 0.5, 1.502])
    assert {e.policy for e in events} == {"api.get"}
    assert {e.max_attempts for e in events} == {3}
    assert clock.slept == pytest.approx(4.004)


def test_sleeps_are_logged_at_info_with_structured_fields(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        run(registry_of(api=POLICY))
    records = [r for r in caplog.records if r.name == "callpolicy"]
    assert [r.getMessage() for r in records] == [
        "api.get: attempt 1 of 3 failed (ConnectionError: refused); sleeping 0.500s (backoff)",
        "api.get: attempt 2 of 3 waits 1.502s for quota api.app (1/2s) (quota)",
        "api.get: attempt 2 of 3 failed (HTTP 503); sleeping 0.500s (backoff)",
        "api.get: attempt 3 of 3 waits 1.502s for quota api.app (1/2s) (quota)",
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
