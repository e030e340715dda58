"""The ready integrations: a real prometheus-client registry scraped over HTTP, and
OpenTelemetry spans and metrics read from the SDK's in-memory exporter and reader."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import callpolicy
from callpolicy import FakeClock, Registry, add_hook

RegistryOf = Callable[..., Registry]

POLICY = """
[endpoints.get]
quotas = ["2/1s"]
retry.on_exceptions = ["ConnectionError"]
wait = { strategy = "fixed", seconds = "300ms" }
stop.attempts = 2
"""


class Script:
    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)

    def __call__(self) -> Any:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def run_calls(registry: Registry) -> None:
    """One call retried once then returning, one giving up after two attempts."""
    registry.policy("api.get")(Script(ConnectionError("x"), "ok"))()
    with pytest.raises(ConnectionError):
        registry.policy("api.get")(Script(ConnectionError("y"), ConnectionError("z")))()


def scrape(registry: Registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The collector registered in a real prometheus-client registry, read over HTTP."""
    prom = CollectorRegistry()
    prom.register(callpolicy.prometheus_collector(registry))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=prom)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_prometheus_scrape_shows_calls_retries_sleeps_and_quotas(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(api=POLICY)
    run_calls(registry)
    got = scrape(registry)
    policy = (("policy", "api.get"),)
    assert got["callpolicy_calls_total", (("outcome", "success"), *policy)] == 1
    assert got["callpolicy_calls_total", (("outcome", "failure"), *policy)] == 1
    assert got["callpolicy_attempts_total", policy] == 4
    assert got["callpolicy_retries_total", policy] == 2
    assert got["callpolicy_give_ups_total", policy] == 1
    assert got["callpolicy_in_flight", policy] == 0
    # two backoff sleeps of 300 ms: in the 0.5 bucket and above, not in 0.25
    assert got["callpolicy_sleep_seconds_bucket", (("le", "0.25"), *policy)] == 0
    assert got["callpolicy_sleep_seconds_bucket", (("le", "0.5"), *policy)] == 2
    assert got["callpolicy_sleep_seconds_bucket", (("le", "+Inf"), *policy)] == 2
    assert got["callpolicy_sleep_seconds_count", policy] == 2
    assert got["callpolicy_sleep_seconds_sum", policy] == pytest.approx(0.6)
    (quota,) = registry.quota_counters()
    assert got["callpolicy_quota_admitted_total", (("quota", quota),)] == 4
    assert got["callpolicy_quota_waits_total", (("quota", quota),)] >= 1


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    remove = add_hook(callpolicy.opentelemetry_hook(tracing, MeterProvider([reader])))
    yield spans, reader
    remove()


def test_opentelemetry_span_per_call_with_attempt_and_sleep_events(
    registry_of: RegistryOf, clock: FakeClock, otel: tuple[InMemorySpanExporter, Any]
) -> None:
    spans, reader = otel
    run_calls(registry_of(api=POLICY))
    ok, failed = spans.get_finished_spans()
    assert ok.name == failed.name == "callpolicy api.get"
    assert [e.name for e in ok.events] == ["attempt end", "sleep", "attempt", "attempt end"]
    assert ok.attributes is not None and ok.attributes["callpolicy.attempts"] == 2
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ConnectionError: z"
    assert [e.name for e in failed.events][-1] == "give up"
    sleep = ok.events[1].attributes
    assert sleep is not None and sleep["seconds"] == pytest.approx(0.3)
    data = reader.get_metrics_data()
    points = {
        (metric.name, tuple(sorted(point.attributes.items()))): point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    }
    calls = "callpolicy.calls"
    assert points[calls, (("outcome", "success"), ("policy", "api.get"))].value == 1
    assert points[calls, (("outcome", "failure"), ("policy", "api.get"))].value == 1
    assert points["callpolicy.retries", (("policy", "api.get"),)].value == 2


def test_opentelemetry_span_is_current_inside_the_call(
    registry_of: RegistryOf, clock: FakeClock, otel: tuple[InMemorySpanExporter, Any]
) -> None:
    from opentelemetry import trace  # noqa: PLC0415

    spans, _ = otel
    registry = registry_of(api=POLICY)
    seen: list[int] = []

    @registry.policy("api.get")
    def fn() -> str:
        seen.append(trace.get_current_span().get_span_context().span_id)
        return "ok"

    assert fn() == "ok"
    assert trace.get_current_span().get_span_context().span_id == 0  # detached after
    (span,) = spans.get_finished_spans()
    assert span.context is not None and seen == [span.context.span_id]


def test_prometheus_before_a_lazy_registry_loads_says_nothing_and_loads_nothing(
    tmp_path: Any,
) -> None:
    from prometheus_client import generate_latest  # noqa: PLC0415

    lazy = Registry(tmp_path / "not there yet", lazy=True)
    prom = CollectorRegistry()
    prom.register(callpolicy.prometheus_collector(lazy))
    assert b"callpolicy_calls_total{" not in generate_latest(prom)  # no error, no load
    assert not lazy.loaded()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        prom.register(callpolicy.prometheus_collector(lazy))
    prom.register(callpolicy.prometheus_collector(lazy, prefix="other"))


def test_opentelemetry_span_ends_when_the_hook_is_removed_during_the_call(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    from opentelemetry import trace  # noqa: PLC0415

    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    hook = callpolicy.opentelemetry_hook(tracing)
    remove = add_hook(hook)

    @registry_of(api=POLICY).policy("api.get")
    def fn() -> str:
        remove()
        return "ok"

    assert fn() == "ok"
    (span,) = spans.get_finished_spans()
    assert span.name == "callpolicy api.get"
    assert trace.get_current_span().get_span_context().span_id == 0  # detached
    assert hook._open == {}


def test_prometheus_shows_a_learned_limit_and_cuts(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    registry = registry_of(
        api='[endpoints.get]\nquotas = [{ limit = "20/1s", learn = { from = "x-ratelimit", '
        'floor = "5/1s", ceiling = "50/1s" } }]\n'
    )

    class Answer:
        def __init__(self) -> None:
            self.status_code = 200
            self.headers = {"X-RateLimit-Limit": "10"}

    registry.policy("api.get")(Answer)()
    got = scrape(registry)
    (quota,) = registry.quota_counters()
    assert got["callpolicy_quota_learned_per_second", (("quota", quota),)] == 10.0
    assert got["callpolicy_quota_cuts_total", (("quota", quota),)] == 0
