"""Golden policy files: each folder of policy_cases/ holds *.toml and the exact expected.txt;
a folder whose policies load also holds explain.txt, the exact `callpolicy explain` of them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from callpolicy import Pause, PolicyError, Registry
from callpolicy._explain import explain
from callpolicy._model import GiveUp
from callpolicy.cli import main as cli

CASES_DIR = Path(__file__).parent / "policy_cases"
CASES = sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
LOADING = [
    p for p in CASES if (p / "expected.txt").read_text(encoding="utf-8").startswith("loads: ")
]


def _outcome(folder: Path) -> str:
    try:
        registry = Registry(".")
    except PolicyError as exc:
        return str(exc)
    return "loads: " + ", ".join(registry.names())


@pytest.mark.parametrize("folder", CASES, ids=[p.name for p in CASES])
def test_policy_case_gives_exactly_the_expected_outcome(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder)
    expected = (folder / "expected.txt").read_text(encoding="utf-8").rstrip("\n")
    assert _outcome(folder) == expected


def _explained(registry: Registry) -> str:
    return "\n".join(explain(registry.get(name)) for name in registry.names())


def test_cases_of_both_kinds_are_there() -> None:
    assert len(LOADING) >= 6
    assert len(CASES) - len(LOADING) >= 30


@pytest.mark.parametrize("folder", LOADING, ids=[p.name for p in LOADING])
def test_policy_case_explains_exactly_the_expected_text(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(folder)
    expected = (folder / "explain.txt").read_text(encoding="utf-8")
    assert _explained(Registry(".")) + "\n" == expected
    # The command line prints the very same text.
    assert cli(["explain", "--path", "."]) == 0
    assert capsys.readouterr().out == expected


@pytest.mark.parametrize(
    "folder",
    [p for p in CASES if p not in LOADING],
    ids=[p.name for p in CASES if p not in LOADING],
)
def test_a_case_that_does_not_load_has_nothing_to_explain(folder: Path) -> None:
    assert not (folder / "explain.txt").exists()


def test_a_storage_url_is_read_at_load_and_its_password_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(CASES_DIR / "quotas_of_every_kind")
    registry = Registry(".")
    [window, remote] = registry.get("svc.remote").quotas
    assert window.storage.is_memory
    storage = remote.storage
    assert not storage.is_memory
    assert (storage.prefix, storage.timeout) == ("x", 0.1)
    assert storage.url == "redis://app:hunter2@cache.internal:6380/2"  # the query is read
    assert (remote.on_unavailable, str(remote.local_limit), remote.guard) == ("local", "5/1s", 0.01)
    for text in (str(storage), repr(storage), repr(remote), _explained(registry)):
        assert "hunter2" not in text
        assert "cache.internal:6380/2" in text


def test_storage_url_errors_never_show_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = CASES_DIR / "storage_urls_checked"
    assert "s3cret" in (folder / "svc.toml").read_text(encoding="utf-8")
    monkeypatch.chdir(folder)
    with pytest.raises(PolicyError) as raised:
        Registry(".")
    assert "s3cret" not in str(raised.value)
    assert "s3cret" not in repr(raised.value.problems)


def test_pause_give_up_and_idempotency_are_built_as_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `explain` does not show of the pause_give_up_and_server_hints case."""
    monkeypatch.chdir(CASES_DIR / "pause_give_up_and_server_hints")
    registry = Registry(".")
    give_up = (
        GiveUp(frozenset({429}), (("error.type", "insufficient_quota"),)),
        GiveUp(frozenset(), (("code", "account_suspended"),)),
    )
    anthropic = "anthropic-ratelimit-requests-reset"
    expected = {
        # name: (pause, idempotent, refused_any_method)
        "svc.messages": (
            Pause("anthropic-ratelimit-requests-remaining", anthropic, "rfc3339", 30.0),
            True,
            True,
        ),
        "svc.default_pause": (
            Pause("X-RateLimit-Remaining", "X-RateLimit-Reset", "delta-seconds", 60.0),
            None,
            True,
        ),
        "svc.epoch_pause": (  # the pause merged key by key with the one it extends
            Pause("anthropic-ratelimit-requests-remaining", "X-Reset-At", "epoch-millis", 30.0),
            True,
            False,
        ),
        "svc.no_hints": (None, None, True),
        "svc.hinted": (None, None, True),
    }
    assert registry.names() == sorted(expected)
    for name, (pause, idempotent, refused_any_method) in expected.items():
        policy = registry.get(name)
        assert policy.pause == pause, name
        assert policy.retry.give_up == give_up, name
        assert (policy.retry.idempotent, policy.retry.refused_any_method) == (
            idempotent,
            refused_any_method,
        ), name
    hints = (
        ("Retry-After", "retry-after"),
        ("X-RateLimit-Reset", "epoch-seconds"),
        (anthropic, "rfc3339"),
    )
    assert registry.get("svc.messages").wait.hints == hints
    assert registry.get("svc.no_hints").wait.hints == ()
    assert registry.get("svc.hinted").wait.hints == (("x-ratelimit-reset-requests", "duration"),)


def test_every_problem_carries_path_line_key_and_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(Path(__file__).parent / "policy_cases" / "stop_attempts_zero")
    with pytest.raises(PolicyError) as raised:
        Registry(".")
    [problem] = raised.value.problems
    assert (problem.path, problem.line, problem.key, problem.message) == (
        "spotify.toml",
        3,
        "spotify.tracks.stop.attempts",
        "must be >= 1 (got 0)",
    )
    assert isinstance(raised.value, ValueError)


def test_shipped_policies_load() -> None:
    registry = Registry(Path(__file__).parent.parent / "policies")
    assert "spotify.tracks" in registry.names()
    assert registry.get("clari.export_status").stop.attempts == 60
