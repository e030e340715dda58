"""Property tests: any policy text gives policies or a PolicyError; quotas keep their bound."""

from __future__ import annotations

import bisect
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callpolicy import FakeClock, PolicyError, Registry, fake_time

FRAGMENTS = [
    "[defaults]",
    "[endpoints.a]",
    "[endpoints.b]",
    "[quotas.q]",
    'extends = "b"',
    'extends = "a"',
    'extends = "x.y"',
    'quotas = ["q", "5/1s"]',
    "quotas = [7]",
    'limit = "3/1s"',
    'limit = "0/1s"',
    'max_wait = "1s"',
    'retry.on_exceptions = ["ConnectionError", "json.nope", "?x.y"]',
    'retry.on_status = [429, "5xx", "9xx"]',
    'retry.until = { field = "s", in = ["A"] }',
    "retry.until = { field = 3 }",
    'wait.strategy = "fixed"',
    'wait.strategy = "chain"',
    'wait.steps = [{ strategy = "none" }, 3]',
    'wait.seconds = "1s"',
    "wait.seconds = 1",
    'wait.initial = "2s"',
    'wait.max = "1s"',
    "wait.multiplier = 0.5",
    "stop.attempts = 0",
    "stop.attempts = 3",
    'stop.deadline = "inf"',
    "stop = 3",
    "retry = []",
    "x = 1",
    "[[endpoints]]",
    '"quoted.key" = 1',
    "= broken",
    'description = """',
    '"""',
]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12))
def test_any_policy_text_loads_or_raises_policy_error(tmp_path: Path, lines: list[str]) -> None:
    (tmp_path / "svc.toml").write_text("\n".join(lines), encoding="utf-8")
    try:
        registry = Registry(tmp_path)
    except PolicyError as exc:
        assert exc.problems
        assert all(p.path.endswith("svc.toml") and p.message for p in exc.problems)
        return
    for name in registry.names():
        registry.get(name)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    calls=st.integers(1, 5),
    gaps=st.lists(st.sampled_from([0.0, 0.001, 0.1, 0.333, 0.5, 0.999, 1.0, 1.5]), max_size=40),
)
def test_fixed_window_quota_never_admits_more_than_2n_in_any_period(
    tmp_path: Path, calls: int, gaps: list[float]
) -> None:
    (tmp_path / "svc.toml").write_text(
        f'[endpoints.a]\nquotas = [{{ limit = "{calls}/1s", algorithm = "fixed-window",'
        ' max_wait = "1h" }]\n'
    )
    registry = Registry(tmp_path)
    [quota] = registry.get("svc.a").quotas
    assert quota.algorithm == "fixed-window"
    with fake_time(FakeClock(start=1000.0)) as clock:
        asked: list[float] = []
        admitted: list[float] = []

        def call() -> None:
            admitted.append(clock.now())

        fn = registry.policy("svc.a")(call)
        for gap in gaps:
            clock.advance(gap)
            asked.append(clock.now())
            fn()
    # At most 2N in any period: N at the end of one window, N at the start of the next.
    for index, start in enumerate(admitted):
        within = bisect.bisect_left(admitted, start + 1.0) - index
        assert within <= 2 * calls
    # Exactly N in each of its own windows: a window opens at the first call after the
    # previous one closed; a call waits only when its window is full, and then until it closes
    # (a window lasts its period and the guard).
    opened, held, lasts = -1e9, 0, 1.0 + quota.guard
    for at, when in zip(asked, admitted, strict=True):
        if when > at:
            assert held == calls
            assert when == pytest.approx(opened + lasts)
        if when >= opened + lasts - 1e-9:
            opened, held = when, 0
        held += 1
        assert held <= calls
