"""A throwaway `redis-server` on 127.0.0.1: for the example, the benchmark and the tests.

    with RedisServer(Path(tmp)) as server:      # or server.start() ... server.stop()
        policy storage = server.url

No persistence; killed on stop. The port stays the same across stop() and start(), so a
test can take the server away and bring it back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self


class RedisMissing(RuntimeError):
    """No redis-server binary on PATH."""


class Started:
    """Servers started for a `with` block and stopped after it (by their PIDs)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(Started):
    """`redis-server` on 127.0.0.1 and a free port, its files (none) kept in `workdir`."""

    def __init__(self, workdir: Path, extra: Sequence[str] = ()) -> None:
        """`extra`: more arguments, e.g. ("--requirepass", "secret") or ("--cluster-enabled",
        "yes"); see local_redis_cluster.py for a Cluster and a Sentinel group."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisMissing(
                "redis-server is not installed or not on PATH. Install it "
                "(e.g. `apt-get install redis-server` or `brew install redis`)."
            )
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.extra = tuple(extra)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait (10 s at most) until it takes connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            *self.extra,
        ]

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def _wait_until_up(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at once:\n{error}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port} within 10 s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
