"""Metrics of what a policy did: the statistics snapshot, a Prometheus scrape, and an
OpenTelemetry span per call. The batch-calls seed asks for them: concurrency, retries and
the failure rate, with an alert above 10%.

The calls are the Spotify client's (`spotify.tracks` of examples/policies/spotify.toml)
against the mock API, which allows fewer calls than the policy's quota (so it answers 429
with Retry-After) and answers 503 to 10% of requests. Four threads fetch the tracks.

    python examples/metrics.py               # 40 tracks
    python examples/metrics.py --tracks 10

It registers callpolicy's Prometheus collector in a registry of its own, serves it on
127.0.0.1 (a free port) as Prometheus would scrape it, reads /metrics over HTTP and prints
callpolicy's lines; and, with opentelemetry-sdk installed, prints the span of one retried
call with its events. `pip install 'callpolicy[prometheus,opentelemetry]' opentelemetry-sdk`.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from mock_api import MockAPI, Request, log_sleeps

import callpolicy
from callpolicy import policy

POLICIES = Path(__file__).resolve().parent / "policies"
SERVER_QUOTA = (10, 1.0)  # tighter than the policy's: the server answers 429
ERROR_RATE = 0.10
ALERT_RATE = 0.10  # the seed's alert: more than 10% of the calls failed


class Client:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    @policy("spotify.tracks")
    def track(self, track_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.base_url}/tracks/{track_id}", timeout=5)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


def serve_track(request: Request) -> dict[str, Any]:
    return {"id": request.params["id"], "name": f"Track {request.params['id']}"}


def scrape_prometheus() -> list[str]:
    """callpolicy's collector in a registry of its own, served and scraped over HTTP."""
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

    registry = CollectorRegistry()
    registry.register(callpolicy.prometheus_collector())
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text: str = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    wanted = (
        "callpolicy_calls_total",
        "callpolicy_retries_total",
        "callpolicy_give_ups",
        "callpolicy_in_flight",
        "callpolicy_sleep_seconds_count",
        "callpolicy_quota_",
    )
    return [line for line in text.splitlines() if line.startswith(wanted)]


def tracing() -> Any:
    """An in-memory OpenTelemetry exporter receiving callpolicy's spans (None without the SDK)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
            InMemorySpanExporter,
        )
    except ImportError:
        return None
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    callpolicy.add_hook(callpolicy.opentelemetry_hook(tracer_provider=provider))
    return spans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=40, help="how many tracks (40)")
    args = parser.parse_args(argv)
    log_sleeps(quiet=True)
    callpolicy.load(POLICIES / "spotify.toml")
    spans = tracing()
    api = MockAPI(
        quota=SERVER_QUOTA, error_rate=ERROR_RATE, seed=3, routes={"GET /tracks/<id>": serve_track}
    )
    with api:
        client = Client(api.url)

        def fetch(n: int) -> bool:
            try:
                client.track(f"{n:06d}")
            except requests.RequestException:
                return False
            return True

        with ThreadPoolExecutor(4) as pool:
            fetched = sum(pool.map(fetch, range(args.tracks)))
        lines = scrape_prometheus()

    stats = callpolicy.policy_stats()["spotify.tracks"]
    print("prometheus /metrics (callpolicy's lines):")
    for line in lines:
        print(f"  {line}")
    if spans is not None:
        retried = [s for s in spans.get_finished_spans() if len(s.events) > 1]
        if retried:
            span = retried[0]
            print(f"\nopentelemetry span {span.name!r}, {len(span.events)} events:")
            for event in span.events:
                shown = ", ".join(f"{k}={v}" for k, v in (event.attributes or {}).items())
                print(f"  {event.name}: {shown}")
    alert = f"  ALERT: above {ALERT_RATE:.0%}" if stats.failure_rate > ALERT_RATE else ""
    print(
        f"\nsummary (server allows {SERVER_QUOTA[0]}/{SERVER_QUOTA[1]:g}s, 503 to {ERROR_RATE:.0%})"
    )
    print(f"  tracks fetched      {fetched} of {args.tracks}")
    print(f"  calls               {stats.calls}")
    print(f"  successes           {stats.successes}")
    print(f"  failures            {stats.failures}")
    print(f"  failure rate        {stats.failure_rate:.1%}{alert}")
    print(f"  retries             {stats.retries}")
    print(f"  give-ups            {stats.give_ups}")
    print(f"  backoff sleeps      {stats.sleeps} ({stats.sleep_seconds:.2f} s in all)")
    print(f"  HTTP 429, 503       {api.stats.throttled}, {api.stats.unavailable}")
    return 0 if fetched == args.tracks == stats.successes else 1


if __name__ == "__main__":
    sys.exit(main())
