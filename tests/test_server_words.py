"""What OpenAI- and Anthropic-style APIs say besides Retry-After, read only when the policy
names it: `retry-after-ms` (a delay in milliseconds) and `x-should-retry` (the server's own
word on whether to retry, before the status rules). Against a local server, through real
HTTP clients (requests returning responses, httpx raising on error statuses)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
import requests
from local_http import serving

from callpolicy import FakeClock, PolicyError, Registry, RetryExhausted
from callpolicy._engine.hints import NotAHint, parse
from callpolicy._explain import explain

RegistryOf = Callable[..., Registry]
Answer = tuple[int, dict[str, str]]


@contextmanager
def answering(*answers: Answer) -> Iterator[tuple[str, list[str]]]:
    """A server giving `answers` in turn (then 200s); yields its URL and the methods seen."""
    queue = list(answers)
    seen: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            with lock:
                seen.append(self.command)
                status, headers = queue.pop(0) if queue else (200, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url, seen


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # 127.0.0.1 only, no proxy from the environment
    return s


WORDS = """
[endpoints.get]
retry.on_status = [429, 503]
retry.should_retry_header = "x-should-retry"{extra}
wait = {{ strategy = "fixed", seconds = "1s" }}
stop.attempts = 4
"""


def registry(registry_of: RegistryOf, extra: str = "") -> Registry:
    return registry_of(api=WORDS.format(extra=extra))


@pytest.mark.parametrize(
    ("raw", "seconds"), [("1500", 1.5), ("250.5", 0.2505), ("0.5", 0.0005), ("0", 0.0)]
)
def test_retry_after_ms_is_read_in_milliseconds(raw: str, seconds: float) -> None:
    assert parse("delta-millis", raw, 0.0) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["-5", "1e3", "NaN", "1,500", "1.5s", "9" * 16, ""])
def test_hostile_retry_after_ms_values_are_not_hints(raw: str) -> None:
    with pytest.raises(NotAHint, match="not a number"):
        parse("delta-millis", raw, 0.0)


def test_retry_after_ms_is_waited_when_the_policy_names_it(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    reg = registry_of(
        api='[endpoints.get]\nretry.on_status = [429]\nwait = { strategy = "fixed", '
        'seconds = "1s", server_hints = ["retry-after-ms", "Retry-After"] }\n'
    )
    with (
        answering((429, {"retry-after-ms": "2500", "Retry-After": "3"})) as (url, _),
        session() as s,
    ):
        response = reg.policy("api.get")(s.get)(url, timeout=5)
    assert response.status_code == 200
    assert clock.sleeps == [2.5]  # the milliseconds, named first, win over Retry-After


def test_retry_after_ms_is_not_read_unless_named(registry_of: RegistryOf, clock: FakeClock) -> None:
    reg = registry_of(
        api='[endpoints.get]\nretry.on_status = [429]\nwait = { strategy = "fixed", '
        'seconds = "1s", server_hints = ["Retry-After"] }\n'
    )
    with answering((429, {"retry-after-ms": "2500"})) as (url, _), session() as s:
        reg.policy("api.get")(s.get)(url, timeout=5)
    assert clock.sleeps == [1.0]


def test_should_retry_true_retries_a_status_no_rule_names(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fetch = registry(registry_of).policy("api.get")
    caplog.set_level(logging.INFO, logger="callpolicy")
    with answering((409, {"x-should-retry": "true"})) as (url, seen), session() as s:
        assert fetch(s.get)(url, timeout=5).status_code == 200
    assert seen == ["GET", "GET"]
    assert clock.sleeps == [1.0]
    assert "HTTP 409, x-should-retry: true" in caplog.text  # the log says why


def test_should_retry_false_ends_a_call_its_status_would_retry(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    fetch = registry(registry_of).policy("api.get")
    with answering((503, {"X-Should-Retry": "False"})) as (url, seen), session() as s:
        assert fetch(s.get)(url, timeout=5).status_code == 503
    assert seen == ["GET"]
    assert clock.sleeps == []


def test_should_retry_on_an_error_raised_by_the_client(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    """httpx raises HTTPStatusError carrying the response: its header is read the same."""
    reg = registry_of(
        api='[endpoints.get]\nretry.on_exceptions = ["httpx.HTTPStatusError"]\n'
        'retry.should_retry_header = "x-should-retry"\n'
        'wait = { strategy = "fixed", seconds = "1s" }\n'
    )

    def get(client: httpx.Client, url: str) -> int:
        return client.get(url).raise_for_status().status_code

    fetch = reg.policy("api.get")(get)
    with (
        answering((500, {"x-should-retry": "false"})) as (url, seen),
        httpx.Client(trust_env=False) as client,
    ):
        with pytest.raises(httpx.HTTPStatusError):
            fetch(client, url)
        assert seen == ["GET"]  # the server said no: not sent again
        seen.clear()
    with (
        answering((500, {"x-should-retry": "true"})) as (url, seen),
        httpx.Client(trust_env=False) as client,
    ):
        assert fetch(client, url) == 200
        assert seen == ["GET", "GET"]
    assert clock.sleeps == [1.0]


def test_should_retry_true_repeats_a_post_unless_refused_any_method_is_false(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    with answering((500, {"x-should-retry": "true"})) as (url, seen), session() as s:
        assert registry(registry_of).policy("api.get")(s.post)(url, timeout=5).status_code == 200
        assert seen == ["POST", "POST"]  # the server refused the work and said to retry
    strict = registry(registry_of, extra="\nretry.refused_any_method = false")
    with answering((500, {"x-should-retry": "true"})) as (url, seen), session() as s:
        assert strict.policy("api.get")(s.post)(url, timeout=5).status_code == 500
        assert seen == ["POST"]


def test_should_retry_is_not_read_unless_named_nor_on_success(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    plain = registry_of(api='[endpoints.get]\nretry.on_status = [503]\nwait.strategy = "none"\n')
    with answering((503, {"x-should-retry": "false"})) as (url, seen), session() as s:
        assert plain.policy("api.get")(s.get)(url, timeout=5).status_code == 200
        assert seen == ["GET", "GET"]
    with answering((200, {"x-should-retry": "true"})) as (url, seen), session() as s:
        assert registry(registry_of).policy("api.get")(s.get)(url, timeout=5).status_code == 200
        assert seen == ["GET"]  # a success is not retried, whatever it says


@pytest.mark.parametrize("value", ["yes", "1", "true, false", "truely", ""])
def test_an_unreadable_word_leaves_the_rules_to_decide_with_one_warning(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    fetch = registry(registry_of).policy("api.get")
    answers = [(503, {"x-should-retry": value}), (200, {}), (409, {"x-should-retry": value})]
    with answering(*answers) as (url, _), session() as s:
        assert fetch(s.get)(url, timeout=5).status_code == 200  # the 503 retried by its rule
        assert fetch(s.get)(url, timeout=5).status_code == 409  # the 409 by none
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # at most once a minute per policy and header
    assert "ignoring x-should-retry" in warnings[0].getMessage()


def test_should_retry_true_still_counts_attempts(registry_of: RegistryOf, clock: FakeClock) -> None:
    fetch = registry(registry_of).policy("api.get")
    answers = [(400, {"x-should-retry": "true"})] * 5
    with (
        answering(*answers) as (url, seen),
        session() as s,
        pytest.raises(RetryExhausted, match=r"stop\.attempts = 4"),
    ):
        fetch(s.get)(url, timeout=5)
    assert len(seen) == 4


def test_explain_and_config_errors(
    registry_of: RegistryOf, write_policies: Callable[..., object]
) -> None:
    text = explain(registry(registry_of).get("api.get"))
    assert "x-should-retry" in text
    with pytest.raises(PolicyError, match=r"retry\.should_retry_header: must be a header name"):
        registry_of(api='[endpoints.get]\nretry.should_retry_header = "x should retry"\n')
    with pytest.raises(PolicyError, match="is shared by every rule"):
        registry_of(
            api="[endpoints.get]\n[[endpoints.get.retry.rules]]\non_status = [429]\n"
            'should_retry_header = "x-should-retry"\n'
        )
