"""Export a Clari forecast for several periods: start a job, poll it until it ends, next period.

The Clari seed hand-wrote `poll_with_backoff` (5 s growing x1.5 to 60 s, 60 attempts) and
slept 10 s between exports. Here the polling is `retry.until` in a policy and the pause
between exports is a quota; both live in examples/policies/clari.toml, with the waits cut to
milliseconds so the demo takes seconds. A running job reports its progress, and each poll
waits the time its pace so far says is left (else the declared backoff), so a job is
polled a few times, not every half second. The mock Clari API (examples/mock_api.py)
allows 10 requests per second and answers 503 to 10% of the status polls.

    python examples/clari_export.py [--quiet]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from mock_api import MockAPI, Reply, Request, log_sleeps

import callpolicy
from callpolicy import SleepEvent, policy

POLICIES = Path(__file__).resolve().parent / "policies"
PERIODS = ["2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4"]
TERMINAL = ("COMPLETED", "FAILED")


# -- the mock Clari API ------------------------------------------------------------------------
@dataclass
class Job:
    id: str
    forecast: str
    period: str
    seconds: float  # how long it runs
    rows: int
    started: float
    polls: int = 0


class MockClari:
    """Export jobs that are PENDING on the first poll, then RUNNING (with their progress, a
    fraction), then COMPLETED once their time has run."""

    def __init__(self, seed: int) -> None:
        self.jobs: dict[str, Job] = {}
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def start_export(self, request: Request) -> Reply:
        period = request.body.get("timePeriod") if isinstance(request.body, dict) else None
        if not isinstance(period, str):
            return Reply(400, {"error": 'the body needs {"timePeriod": "..."}'})
        with self._lock:
            job_id = f"job-{len(self.jobs) + 1:03d}"
            seconds, rows = self._random.uniform(0.6, 1.5), self._random.randint(1000, 9999)
            job = self.jobs[job_id] = Job(
                job_id, request.params["name"], period, seconds, rows, time.monotonic()
            )
        return Reply(202, {"jobId": job.id, "status": "PENDING"})

    def job_status(self, request: Request) -> Reply | dict[str, Any]:
        with self._lock:
            job = self.jobs.get(request.params["id"])
            if job is None:
                return Reply(404, {"error": f"no job {request.params['id']}"})
            job.polls += 1
            polls = job.polls
        done = (time.monotonic() - job.started) / job.seconds
        if done < 1:
            status = "PENDING" if polls == 1 else "RUNNING"
            return {"jobId": job.id, "status": status, "progress": round(done, 3)}
        return {
            "jobId": job.id,
            "status": "COMPLETED",
            "rowCount": job.rows,
            "downloadUrl": f"/export/files/{job.forecast}-{job.period}.csv",
        }


# -- the client --------------------------------------------------------------------------------
class ClariClient:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["apikey"] = api_key
        self.polls: Counter[str] = Counter()  # the body runs once per attempt

    @policy("clari.export_forecast")
    def export_forecast(self, forecast: str, period: str) -> dict[str, Any]:
        url = f"{self.base_url}/export/forecast/{forecast}"
        response = self.session.post(url, json={"timePeriod": period}, timeout=5)
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        return job

    @policy("clari.export_status")
    def export_status(self, job_id: str) -> dict[str, Any]:
        """The job's status; the policy calls again until it is COMPLETED or FAILED."""
        self.polls[job_id] += 1
        response = self.session.get(f"{self.base_url}/export/jobs/{job_id}", timeout=5)
        response.raise_for_status()  # a 503 raises; the policy's on_status retries it
        status: dict[str, Any] = response.json()
        return status


def export_all_periods(
    client: ClariClient, forecast: str, periods: list[str]
) -> list[dict[str, Any]]:
    """One export at a time, as the seed's scheduler: start, poll to the end, next."""
    results = []
    for period in periods:
        started = time.monotonic()
        job = client.export_forecast(forecast, period)
        job_id = job["jobId"]
        print(f"{period}: export started as {job_id}")
        try:
            result = client.export_status(job_id)
        except callpolicy.RetryExhausted as exc:  # still running when attempts ran out
            print(f"{period}: gave up on {job_id}: {exc}")
            results.append(exc.last_result)
            continue
        took = time.monotonic() - started
        polls = client.polls[job_id]
        detail = (
            f", {result['rowCount']} rows at {result['downloadUrl']}"
            if "rowCount" in result
            else ""
        )
        print(f"{period}: {result['status']} after {polls} polls in {took:.2f} s{detail}")
        results.append(result)
    return results


class SleepCounter:
    """Sorts callpolicy's sleeps: waits for a job, retries of errors, waits for quota."""

    def __init__(self) -> None:
        self.poll_waits = self.retries = self.quota_waits = 0
        self.quota_seconds = 0.0

    def __call__(self, event: SleepEvent) -> None:
        if event.source == "quota":
            self.quota_waits += 1
            self.quota_seconds += event.seconds
        elif event.trigger == "result":  # a returned value not matching retry.until yet
            self.poll_waits += 1
        else:  # an exception or an HTTP status
            self.retries += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    log_sleeps(quiet=args.quiet)

    callpolicy.load(POLICIES)  # the directory next to this file: runs from any cwd
    counter = SleepCounter()
    remove_hook = callpolicy.add_sleep_hook(counter)
    clari = MockClari(seed=7)
    api = MockAPI(
        quota=(10, 1.0),  # as [quotas.api_key] in policies/clari.toml
        error_rate=0.10,
        error_methods=["GET"],  # a POST answered 503 may or may not have started a job
        seed=7,
        routes={
            "POST /export/forecast/<name>": clari.start_export,
            "GET /export/jobs/<id>": clari.job_status,
        },
    )
    with api:
        client = ClariClient(api.url, api_key="demo-key")
        started = time.monotonic()
        try:
            results = export_all_periods(client, "company_forecast", PERIODS)
        finally:
            client.session.close()
        elapsed = time.monotonic() - started
    remove_hook()
    stats = api.stats

    completed = sum(1 for r in results if r.get("status") == "COMPLETED")
    polls = sum(client.polls.values())
    print("\nsummary")
    print(f"  periods exported  {completed} of {len(PERIODS)} COMPLETED")
    print(f"  requests sent     {stats.requests} ({len(clari.jobs)} starts, {polls} polls)")
    print(f"  HTTP 429          {stats.throttled}")
    print(f"  HTTP 503          {stats.unavailable}")
    print(f"  poll waits        {counter.poll_waits} (job not finished yet)")
    print(f"  retries           {counter.retries} (429, 503 or network error)")
    print(f"  quota waits       {counter.quota_waits} ({counter.quota_seconds:.2f} s slept)")
    print(f"  elapsed           {elapsed:.2f} s")
    return 0 if completed == len(PERIODS) else 1


if __name__ == "__main__":
    sys.exit(main())
