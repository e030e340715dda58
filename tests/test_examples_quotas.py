"""The quota examples run end to end: one Redis quota shared by processes, and a batch of
asyncio calls under a concurrency limit and a token bucket (examples/shared_quota.py and
examples/batch_calls.py, each against its own mock API, from a foreign working directory)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from examples_helper import number, numbers, run_example, summary


def test_shared_quota_in_redis_keeps_the_servers_limit(tmp_path: Path) -> None:
    # The guard covers the delay between Redis admitting a call and the server counting it.
    # The example's 50 ms is ample on an idle machine; a test may share a busy one, where a
    # process can stall for 50 ms (seen at a load of 4 on 2 cores), so it takes 200 ms.
    output = run_example(
        "shared_quota.py", "--workers", "3", "--seconds", "2", "--guard", "200", cwd=tmp_path
    )
    values = summary(output)
    workers = [label for label in values if label.startswith("worker ")]
    assert workers == ["worker 1", "worker 2", "worker 3"]
    assert all(number(values[w]) >= 1 for w in workers), values  # each worker took its share
    assert values["HTTP 429"] == "0"
    assert number(values["busiest 1s window"]) <= 20  # "20 arrivals (limit 20)"
    successes = int(number(values["successes"]))
    assert values["successes"] == f"{successes} (0 failures)"
    assert successes == sum(number(values[w]) for w in workers)
    # Every success and every retried 503 reached the server, nothing else did.
    arrivals, unavailable = number(values["server arrivals"]), number(values["HTTP 503"])
    assert arrivals == successes + unavailable
    # 2 s under 20 per 1.2 s (1 s and the guard), shared: the two windows' 40 calls, then
    # only the call each worker started before the time was up (and its retries). Counted
    # apart, 3 workers would have sent 3 times as many.
    assert 40 <= arrivals <= 40 + 3 + unavailable
    assert "quota kept: no 429, no window over the limit" in output
    assert 'limit = "20/1s"' in output and 'guard = "200ms"' in output
    assert 'storage = "redis://127.0.0.1:' in output
    assert 'lease = "5s"' in output
    # The workers' quota counters: every attempt admitted reached the server; none refused,
    # none without Redis. (admitted, refused, waited, seconds, open, closed, local)
    for quota in ("shared.api", "shared.in_flight"):
        admitted, refused, _, _, *without_redis = numbers(values[quota])
        assert (admitted, refused, without_redis) == (arrivals, 0, [0, 0, 0]), values[quota]


def test_shared_quota_in_memory_does_not(tmp_path: Path) -> None:
    """The counter-example: each process counts on its own, and together they overrun."""
    output = run_example(
        "shared_quota.py", "--workers", "3", "--seconds", "1", "--memory", cwd=tmp_path, status=1
    )
    values = summary(output)
    assert number(values["HTTP 429"]) > 0
    assert number(values["busiest 1s window"]) > 20
    assert "QUOTA BROKEN" in output


def test_shared_quota_without_redis_server(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no redis-server there
    output = run_example("shared_quota.py", cwd=tmp_path, status=2, env=env)
    assert "error: redis-server is not installed or not on PATH" in output


def test_batch_calls(tmp_path: Path) -> None:
    output = run_example("batch_calls.py", cwd=tmp_path)
    values = summary(output)
    # Ids 7, 57, ... 257 are malformed (400) and 42, 142, 242 missing (404): 9 of 300.
    assert values["succeeded"] == "291"
    assert values["failed"] == "9: HTTP 400 x6, HTTP 404 x3"
    assert values["failure rate"] == "3.0% of calls (9 bad ids)"
    # Each 400 and 404 answered once: never retried.
    assert values["4xx retried"].startswith("0 ")
    sent = re.fullmatch(
        r"(\d+), \d+ failed \(.*\): HTTP 503 x(\d+), HTTP 429 x(\d+), 4xx x(\d+)",
        values["requests sent"],
    )
    assert sent, values["requests sent"]
    requests, unavailable, throttled, client_errors = map(int, sent.groups())
    assert throttled == 0 and client_errors == 9
    assert unavailable >= 10  # 10% of the requests
    # Only the 503s were retried, each once more, and every call ended in one last request.
    assert values["retries"] == f"{unavailable} (HTTPError: 503 x{unavailable})"
    assert requests == 300 + unavailable
    assert values["max in flight"] == "20 (limit 20)"
    assert number(values["server in flight"]) <= 20
    assert number(values["busiest 1s window"]) <= 200
    # Queued last with priority 10, the urgent calls went before every call waiting for a
    # slot: the first admissions after they asked were theirs. (Admission is what the policy
    # orders; the order calls end adds the server's time.) Each attempt sent one request.
    urgent = re.fullmatch(
        r"5, queued last with priority 10, after ([\d, ]+) admissions: admitted ([\d, ]+) of (\d+)",
        values["urgent calls"],
    )
    assert urgent, values["urgent calls"]
    asked, admitted = ([int(n) for n in group.split(", ")] for group in urgent.groups()[:2])
    assert len(asked) == len(admitted) == 5
    assert all(at > before for at, before in zip(admitted, asked, strict=True))
    assert max(admitted) <= max(asked) + 5, values["urgent calls"]
    assert int(urgent[3]) == requests
    # The token bucket paced them: no faster than its best (100 at once, then 95/s).
    elapsed, best = (float(values[k].split()[0]) for k in ("elapsed", "best"))
    assert values["best"].startswith(f"{best:.2f} s for {requests} requests")
    assert best * 0.99 <= elapsed < 15


def test_nginx_limiter_the_documented_recipe_is_never_refused_and_a_window_is(
    tmp_path: Path, nginx_limiter: object
) -> None:
    """examples/nginx_limiter.py against a real nginx (the fixture only checks it is there)."""
    output = run_example("nginx_limiter.py", "--burst", "5", "--threads", "2", cwd=tmp_path)
    values = summary(output)
    assert re.match(r"30 x 200\s+0 x 429", values["nginx.paced"])
    assert not re.match(r"30 x 200", values["nginx.window"])  # 10 at once: some refused
    assert "waited 0." in output  # every wait logged


def test_batch_comparison_through_an_outage(tmp_path: Path) -> None:
    """The batch seed's comparison, scaled down: the breaker keeps the batch off the server
    while it is down, and the calls it refused are made when it is back."""
    plot = tmp_path / "outage.png"
    output = run_example(
        "batch_calls.py",
        "--compare",
        "--calls",
        "200",
        "--outage",
        "2",
        "--plot",
        str(plot),
        cwd=tmp_path,
    )
    rows = {
        m[1].strip(): tuple(map(int, m.group(3, 4, 5)))
        for m in re.finditer(r"^  (\S.*?)\s+(\d+\.\d)s\s+(\d+)\s+(\d+)\s+(\d+)$", output, re.M)
    }
    serial, storm, ours = (
        rows["serial loop"],
        rows["unprotected, 30 threads"],
        rows["callpolicy, 30 threads"],
    )
    assert serial[0] > 50 and storm[0] > 50  # (failed, retries, requests in the outage)
    assert ours[0] < 10
    assert ours[2] < storm[2] / 3  # the breaker kept it off the server
    assert re.search(r"callpolicy: [1-9]\d* calls refused by the open breaker", output)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # matplotlib is in the test extra
