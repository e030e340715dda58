from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from callpolicy.cli import main

WritePolicies = Callable[..., Path]


def test_check_counts_policies_of_good_files(
    write_policies: WritePolicies, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_policies(
        api='[quotas.q]\nlimit = "1/s"\n[endpoints.a]\nquotas = ["q"]\n[endpoints.b]\n'
    )
    assert main(["check", str(folder)]) == 0
    assert capsys.readouterr().out == "ok: 2 policies, 1 quotas\n"


def test_check_lists_every_problem_and_fails(
    write_policies: WritePolicies, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_policies(api="[endpoints.a]\nstop.attempts = 0\nwait.strategy = 'slow'\n")
    assert main(["check", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "api.toml:2: api.a.stop.attempts: must be >= 1 (got 0)" in err
    assert "api.toml:3: api.a.wait.strategy: must be one of 'none', 'fixed'" in err


def test_explain_says_what_a_policy_does(
    write_policies: WritePolicies, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_policies(
        api="""
        [endpoints.get]
        description = "GET /things"
        retry.on_exceptions = ["ConnectionError"]
        retry.on_status = [429, "5xx", 404]
        wait = { strategy = "fixed", seconds = "2s" }
        stop = { attempts = 4, deadline = "1m" }
        quotas = ["10/1s"]
        """
    )
    assert main(["explain", "api.get", "--path", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "  GET /things",
        "  retry on: builtins.ConnectionError, HTTP 404, 429, 5xx",
        "  wait:     2s",
        "  stop:     after 4 attempts, or before a wait that would end past 1m",
        "  quotas:   api.get[10/1s] (10/1s, sliding-window, guard 20ms, max_wait 1m)",
    ]
