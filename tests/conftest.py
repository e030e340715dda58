from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import callpolicy
from callpolicy import FakeClock, Registry, fake_time

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A real redis-server on 127.0.0.1, started and stopped by the tests."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
