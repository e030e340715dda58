"""Golden policy files: each folder of policy_cases/ holds *.toml and the exact expected.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from callpolicy import PolicyError, Registry

CASES = sorted(p for p in (Path(__file__).parent / "policy_cases").iterdir() if p.is_dir())


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
