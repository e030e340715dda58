"""The examples run end to end against their mock APIs, from a foreign working directory."""

from __future__ import annotations

import re
from pathlib import Path

from examples_helper import number, run_example, summary


def check_spotify(output: str, tracks: int) -> None:
    values = summary(output)
    assert values["tracks fetched"] == f"{tracks} of {tracks}"
    requests, retries = int(number(values["requests sent"])), int(number(values["retries"]))
    throttled, unavailable = int(number(values["HTTP 429"])), int(number(values["HTTP 503"]))
    # Every failed attempt was retried, and every track took one successful request.
    assert retries == throttled + unavailable
    assert requests == tracks + retries
    assert unavailable >= 1  # the mock's seeded 5% hit at least once (tracks 40 and 41)
    assert number(values["quota waits"]) >= 1  # more tracks than the quota's 50 per window
    assert 0.5 < number(values["elapsed"]) < 15
    assert number(values["theoretical best"]) == tracks / 50
    assert number(values["throughput"]) > 0


def test_spotify_demo_sequential(tmp_path: Path) -> None:
    output = run_example("spotify_demo.py", "--tracks", "60", cwd=tmp_path)
    check_spotify(output, 60)
    assert "fetched 50/60 tracks" in output
    assert "spotify.tracks: attempt 1 of 5 failed (HTTPError: 503" in output  # logged sleeps
    assert "(quota)" in output


def test_spotify_demo_async_quiet(tmp_path: Path) -> None:
    output = run_example(
        "spotify_demo.py", "--tracks", "60", "--async-tasks", "3", "--quiet", cwd=tmp_path
    )
    check_spotify(output, 60)
    assert output.lstrip().startswith("summary (3 asyncio tasks")  # --quiet: nothing else


def test_clari_export(tmp_path: Path) -> None:
    output = run_example("clari_export.py", cwd=tmp_path)
    finished = re.findall(r"^2025-Q\d: COMPLETED after (\d+) polls", output, re.MULTILINE)
    assert len(finished) == 4
    assert "clari.export_status: attempt 1 of 30 is not done yet (returned {" in output
    values = summary(output)
    assert values["periods exported"] == "4 of 4 COMPLETED"
    requests = int(number(values["requests sent"]))
    starts, polls = map(int, re.findall(r"(\d+) (?:starts|polls)", values["requests sent"]))
    assert starts == 4
    assert polls == sum(map(int, finished))
    retries, poll_waits = int(number(values["retries"])), int(number(values["poll waits"]))
    assert retries == int(number(values["HTTP 429"])) + int(number(values["HTTP 503"]))
    # 8 calls (4 starts, 4 polls to the end), each ending in one good request; every other
    # request was followed by a wait: for the job, or after an error.
    assert requests == 8 + poll_waits + retries
    assert poll_waits >= 4 * 2  # each job is PENDING, then RUNNING at least once
    assert number(values["elapsed"]) < 15


def test_retry_rules(tmp_path: Path) -> None:
    """Each cause is retried by its own rule: network errors at once (logged at DEBUG, so not
    shown), 429 on the server's Retry-After plus jitter, 503 by the plain keys' backoff."""
    output = run_example("retry_rules.py", cwd=tmp_path)
    values = summary(output)
    assert values["tracks fetched"] == "30 of 30"
    dropped, throttled = int(number(values["dropped"])), int(number(values["HTTP 429"]))
    unavailable = int(number(values["HTTP 503"]))
    assert dropped >= 1 and throttled >= 1 and unavailable >= 1  # seeded: every cause happens
    assert int(number(values["retries, network"])) == dropped
    assert int(number(values["retries, throttled"])) == throttled
    assert int(number(values["retries, 5xx"])) == unavailable
    hinted = re.findall(
        r"^\s*\d+ms  spotify\.tracks: attempt \d of 5 failed \(HTTPError: 429 .*\), "
        r'rule "throttled" (\d) of 3; sleeping ([\d.]+)s '
        r"\(Retry-After: (\d+) \+ jitter ([\d.]+)s, instead of the backoff 0\.100s\)$",
        output,
        re.MULTILINE,
    )
    assert len(hinted) == throttled, output
    for _, slept, said, jitter in hinted:
        assert abs(float(slept) - int(said) - float(jitter)) < 0.0015  # its real parts
        assert float(jitter) <= 0.05
    assert 'rule "network"' not in output  # retried at once: DEBUG
    backoffs = re.findall(r"\(HTTPError: 503 .*\); sleeping [\d.]+s \(backoff ", output)
    assert len(backoffs) == unavailable


def test_metrics(tmp_path: Path) -> None:
    output = run_example("metrics.py", "--tracks", "20", cwd=tmp_path)
    values = summary(output)
    assert values["tracks fetched"] == "20 of 20"
    assert values["calls"] == values["successes"] == "20"
    retries = int(values["retries"])
    assert retries >= 1  # the server's quota is tighter than the policy's, and 503s
    # the Prometheus scrape says what the snapshot says
    assert 'callpolicy_calls_total{outcome="success",policy="spotify.tracks"} 20.0' in output
    assert f'callpolicy_retries_total{{policy="spotify.tracks"}} {retries}.0' in output
    assert "opentelemetry span 'callpolicy spotify.tracks'" in output
    assert "  attempt end: attempt=1, outcome=HTTPError: " in output


def test_circuit_breaker(tmp_path: Path) -> None:
    """The breaker opens during the outage, refuses at once, probes every 10 s (a trial call
    failing opens it again) and closes once the service is back."""
    output = run_example("circuit_breaker.py", cwd=tmp_path)
    values = summary(output)
    assert values["breaker changes"] == (
        "open, half-open, open, half-open, open, half-open, closed"
    )
    refused = int(number(values["refused at once"]))
    assert refused >= 25
    served, failed = int(number(values["served"])), int(number(values["failed"]))
    assert served + failed + refused == 60
    assert served == 20 + 4  # before the outage, and from the first trial calls after it
    # Of the 30 s down, the requests that reached it: the calls before it opened (with
    # their retries, until the budget stopped them) and one trial call per probe.
    assert int(number(values["during the outage"])) == 7
    assert "CircuitOpen: inventory.stock: circuit breaker inventory.backend is open" in output
    assert "circuit breaker inventory.backend half-open: open_for 10s passed" in output
    assert "circuit breaker inventory.backend closed: 2 trial calls succeeded" in output
    assert "retry budget inventory.backend exhausted" in output
    quiet = run_example("circuit_breaker.py", "--quiet", cwd=tmp_path)
    assert quiet.lstrip().startswith("summary (60 calls")
