"""Adaptive polling: a poll's wait follows the estimate the job gives (an ETA field, the time
left by its progress, Retry-After on a 202) when there is one, else the declared backoff."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests
from local_http import serving

from callpolicy import FakeClock, PolicyError, Registry
from callpolicy._explain import explain

RegistryOf = Callable[..., Registry]

POLL = """
[endpoints.job]
retry.until = {{ field = "status", in = ["done"] }}
wait = {{ strategy = "fixed", seconds = "5s", server_hints = [{source}], hint_cap = "2m" }}
stop.attempts = 10
"""


def poller(registry_of: RegistryOf, source: str, answers: list[Any]) -> Callable[[], Any]:
    replies = iter(answers)
    return registry_of(api=POLL.format(source=source)).policy("api.job")(lambda: next(replies))


def test_an_eta_field_sets_each_polls_wait(registry_of: RegistryOf, clock: FakeClock) -> None:
    answers = [
        {"status": "running", "eta_seconds": 42},
        {"status": "running", "eta_seconds": 7.5},
        {"status": "running"},  # no estimate: the declared backoff
        {"status": "done"},
    ]
    assert poller(registry_of, '{ field = "eta_seconds" }', answers)() == {"status": "done"}
    assert clock.sleeps == [42.0, 7.5, 5.0]


def test_a_nested_field_in_another_format(registry_of: RegistryOf, clock: FakeClock) -> None:
    answers = [{"status": "queued", "job": {"eta": "1m30s"}}, {"status": "done"}]
    poller(registry_of, '{ field = "job.eta", format = "duration" }', answers)()
    assert clock.sleeps == [90.0]


def test_the_time_left_by_progress_follows_its_pace(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """10% per 5 s poll: 0.3 done after two polls means 35 s left at that pace."""
    answers = [
        {"status": "running", "progress": 0.1},  # the first poll: no pace yet, the backoff
        {"status": "running", "progress": 0.2},  # 0.1 in 5 s: 0.8 left is 40 s
        {"status": "running", "progress": 0.9},  # 0.7 in 40 s: 0.1 left is ~5.7 s
        {"status": "running", "progress": 0.9},  # no advance: the backoff
        {"status": "done", "progress": 1.0},
    ]
    caplog.set_level(logging.INFO, logger="callpolicy")
    poller(registry_of, '{ field = "progress", format = "progress" }', answers)()
    assert clock.sleeps == pytest.approx([5.0, 40.0, 40 / 7, 5.0])
    assert "progress: 0.2" in caplog.text and "(read as 40s left at 2%/s so far)" in caplog.text


def test_percent_progress(registry_of: RegistryOf, clock: FakeClock) -> None:
    answers = [
        {"status": "running", "pct": 20},
        {"status": "running", "pct": 60},  # 40 points in 5 s: 40 left is 5 s
        {"status": "done"},
    ]
    poller(registry_of, '{ field = "pct", format = "percent" }', answers)()
    assert clock.sleeps == pytest.approx([5.0, 5.0])


def test_a_long_estimate_is_capped(registry_of: RegistryOf, clock: FakeClock) -> None:
    answers = [{"status": "running", "eta_seconds": 3600}, {"status": "done"}]
    poller(registry_of, '{ field = "eta_seconds" }', answers)()
    assert clock.sleeps == [120.0]  # hint_cap


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ('{ field = "eta_seconds" }', -5),
        ('{ field = "eta_seconds" }', "soon"),
        ('{ field = "eta_seconds" }', True),
        ('{ field = "eta_seconds" }', float("nan")),
        ('{ field = "eta_seconds" }', [1, 2]),
        ('{ field = "p", format = "progress" }', 1.5),
        ('{ field = "p", format = "progress" }', "0.5"),
        ('{ field = "p", format = "percent" }', -1),
        pytest.param('{ field = "p", format = "progress" }', 10**400, id="too-large-a-float"),
        pytest.param('{ field = "eta_seconds" }', 10**5000, id="too-long-to-print"),
    ],
)
def test_hostile_estimates_fall_back_to_the_backoff_with_one_warning(
    registry_of: RegistryOf,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    source: str,
    value: object,
) -> None:
    field = "eta_seconds" if "eta" in source else "p"
    answers = [{"status": "running", field: value}] * 3 + [{"status": "done"}]
    poller(registry_of, source, answers)()
    assert clock.sleeps == [5.0, 5.0, 5.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"ignoring field {field}" in warnings[0].getMessage()


def test_a_field_holding_an_object_attribute(registry_of: RegistryOf, clock: FakeClock) -> None:
    class Job:
        def __init__(self, status: str, eta: float | None) -> None:
            self.status, self.eta = status, eta

    answers = [Job("running", 12), Job("done", None)]
    replies = iter(answers)
    reg = registry_of(
        api='[endpoints.job]\nretry.until = { field = "status", in = ["done"] }\n'
        'wait = { strategy = "fixed", seconds = "5s", server_hints = [{ field = "eta" }] }\n'
    )
    reg.policy("api.job")(lambda: next(replies))()
    assert clock.sleeps == [12.0]


@contextmanager
def job_server(answers: list[tuple[int, dict[str, str], bytes]]) -> Iterator[str]:
    queue = list(answers)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                status, headers, body = queue.pop(0)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url


def test_a_202s_retry_after_and_a_json_bodys_eta_through_requests(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    """The returned value is a requests Response: headers are read from it, fields from its
    JSON body; the first usable source in the policy's order wins."""
    reg = registry_of(
        api='[endpoints.job]\nretry.until = { field = "status_code", in = [200] }\n'
        'wait = { strategy = "fixed", seconds = "5s", '
        'server_hints = ["Retry-After", { field = "eta" }] }\nstop.attempts = 5\n'
    )
    answers = [
        (202, {"Retry-After": "3"}, b'{"eta": 30}'),  # the header first
        (202, {"Content-Type": "application/json"}, b'{"eta": 11}'),  # then the body's field
        (202, {}, b"not json"),  # neither: the backoff
        (200, {}, b'{"result": 1}'),
    ]
    with job_server(answers) as url, requests.Session() as session:
        session.trust_env = False
        response = reg.policy("api.job")(session.get)(url, timeout=5)
    assert response.json() == {"result": 1}
    assert clock.sleeps == [3.0, 11.0, 5.0]


def test_explain_and_config_errors(registry_of: RegistryOf) -> None:
    reg = registry_of(api=POLL.format(source='{ field = "progress", format = "progress" }'))
    assert "the time left by the progress in field progress" in explain(reg.get("api.job"))
    with pytest.raises(PolicyError, match=r"server_hints\[0\]\.field: must be a field name"):
        registry_of(api=POLL.format(source='{ field = "two words" }'))
    with pytest.raises(PolicyError, match=r"server_hints\[0\]\.format: must be one of"):
        registry_of(api=POLL.format(source='{ field = "eta", format = "retry-after" }'))
    with pytest.raises(PolicyError, match="for a header"):
        registry_of(api=POLL.format(source='{ header = "X-Progress", format = "progress" }'))


class Hostile(dict):  # type: ignore[type-arg]
    """A returned mapping whose lookup of the estimate raises."""

    def get(self, key: object, default: object = None) -> object:
        if key == "eta_seconds":
            raise RuntimeError("no lookups here")
        return super().get(key, default)


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (Hostile(status="running"), "ignoring field eta_seconds None (unreadable: RuntimeError)"),
        ({"status": "running", "eta_seconds": BadRepr()}, "ignoring field eta_seconds <BadRepr"),
    ],
)
def test_a_returned_value_that_raises_is_no_estimate(
    registry_of: RegistryOf,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    answer: object,
    said: str,
) -> None:
    replies = iter([answer, {"status": "done"}])
    reg = registry_of(
        api='[endpoints.job]\nretry.until = { field = "status", in = ["done"] }\n'
        'wait = { strategy = "fixed", seconds = "5s", '
        'server_hints = [{ field = "eta_seconds" }] }\n'
    )
    assert reg.policy("api.job")(lambda: next(replies))() == {"status": "done"}
    assert clock.sleeps == [5.0]
    assert said in caplog.text


def test_an_estimate_from_progress_is_capped_even_where_a_hint_above_the_cap_fails(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    """Our extrapolation is not the server's word: hint_above_cap = "fail" does not end
    the poll for it (0 -> 1% in 5 s reads as 495 s left)."""
    reg = registry_of(
        api='[endpoints.job]\nretry.until = { field = "status", in = ["done"] }\n'
        'wait = { strategy = "fixed", seconds = "5s", hint_cap = "1m", hint_above_cap = "fail", '
        'server_hints = [{ field = "pct", format = "percent" }] }\n'
    )
    answers = iter([{"status": "r", "pct": 0}, {"status": "r", "pct": 1}, {"status": "done"}])
    reg.policy("api.job")(lambda: next(answers))()
    assert clock.sleeps == [5.0, 60.0]
