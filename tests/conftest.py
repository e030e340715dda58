from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import callpolicy
from callpolicy import FakeClock, Registry, fake_time
from callpolicy._text import Throttled

# The one redis-server starter, shared with the Redis example and the quota benchmark.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from local_redis import RedisServer

WritePolicies = Callable[..., Path]


@pytest.fixture
def write_policies(tmp_path: Path) -> WritePolicies:
    """write_policies(spotify="...toml...", http="...") -> the directory holding them."""

    def write(**files: str) -> Path:
        for service, text in files.items():
            (tmp_path / f"{service}.toml").write_text(textwrap.dedent(text), encoding="utf-8")
        return tmp_path

    return write


@pytest.fixture
def registry_of(write_policies: WritePolicies) -> Callable[..., Registry]:
    """registry_of(svc="...toml...") -> a Registry loaded from those files."""

    def make(**files: str) -> Registry:
        return Registry(write_policies(**files))

    return make


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    with fake_time() as fake:
        yield fake


@pytest.fixture
def default_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """The process-wide registry, put back as it was after the test."""
    registry = callpolicy.default_registry
    saved = dict(vars(registry))
    monkeypatch.delenv("CALLPOLICY_PATH", raising=False)
    yield registry
    generation = registry.generation
    vars(registry).update(saved)
    registry.generation = generation + 1


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_throttles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every module-level throttle of callpolicy starts empty: what an earlier test said
    within the minute must not silence this test's warnings."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] != "callpolicy" or module is None:
            continue
        for attribute, value in list(vars(module).items()):
            if isinstance(value, Throttled):
                monkeypatch.setattr(module, attribute, Throttled(value.every))
