"""Real rate-limiting servers on 127.0.0.1: nginx's `limit_req` and HAProxy's stick tables.

For the tests (fixtures `nginx_limiter` and `haproxy_limiter` in tests/conftest.py) and the
benchmark (benchmarks/real_limiters.py):

    with NginxLimiter(rate=10, burst=5, nodelay=True) as server:   # or .start() ... .close()
        requests.get(server.url)                                   # 200, or 429 when limited
        server.counts(at_least=1)                                  # Counts(ok=1, refused=0, ...)

    with HAProxyLimiter(limit=10, period=1.0) as server: ...       # deny if rate gt 10 per 1 s

Each server runs in the foreground as a child process, on a free port of 127.0.0.1, with its
configuration, pid file, logs and temporary files in one directory (`workdir`, or a temporary
directory of its own, removed on close): nothing under /var or /etc is written, and it works
as root or not. It is stopped by its PID (SIGTERM, then SIGKILL after 5 s). Both log every
request they answer, with the server's wall-clock stamp and the status; `entries()` and
`counts()` read that log (also after `close()`).

* nginx (`NginxLimiter`): `limit_req_zone $binary_remote_addr zone=z:1m rate=<R>r/s` (or r/m),
  `limit_req zone=z [burst=<B>] [nodelay]`, `limit_req_status 429`, on a location serving a
  static file: `return 200` would answer in the rewrite phase, before `limit_req` runs. nginx
  refuses `burst=0`, so a burst of 0 leaves `burst=` out (its default is 0). One process
  (`master_process off`), so no worker ever switches user. The access log has `$msec $status`:
  the time nginx logged the request (ms resolution, the cached time of the event loop
  iteration that answered it).
* HAProxy (`HAProxyLimiter`): a frontend with `stick-table type ip size 1m expire 10s store
  http_req_rate(<period>)`, `http-request track-sc0 src`, `http-request deny deny_status 429 if
  { sc_http_req_rate(0) gt <N> }` and `http-request return status 200 ... string ok`; one
  thread, `-db` (foreground). In that mode HAProxy writes no pid file (the `pidfile` line
  only says where one would go); it is stopped by the child's PID. It logs to stdout (a file
  in `workdir`) `%Ts.%ms %Th %Ti %ST`; an entry's time is the start of the request (the
  accept date plus handshake and idle time: on a kept-alive connection the accept date is
  the end of the previous request).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar

START_TIMEOUT = 10.0  # seconds for a server to take connections
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
_PORT_TRIES = 3  # a free port can be taken by someone else before the server binds it

Server = TypeVar("Server", bound="LimitingServer")


class ServerMissing(RuntimeError):
    """The server's binary is not installed."""


class ServerFailed(RuntimeError):
    """The server did not start; the message holds what it said."""


@dataclass(frozen=True)
class Entry:
    """One request the server answered, from its log."""

    at: float  # the server's wall clock, seconds since the epoch (ms resolution)
    status: int


@dataclass(frozen=True)
class Counts:
    ok: int  # 200s
    refused: int  # 429s
    other: int  # any other status

    @property
    def total(self) -> int:
        return self.ok + self.refused + self.other


def count(entries: Sequence[Entry]) -> Counts:
    ok = sum(1 for e in entries if e.status == 200)
    refused = sum(1 for e in entries if e.status == 429)
    return Counts(ok, refused, len(entries) - ok - refused)


class LimitingServer:
    """What nginx and HAProxy share: the child process, its directory, port and log."""

    name = ""  # the binary's name: "nginx" or "haproxy"

    def __init__(self, workdir: Path | None, binary: str | None) -> None:
        self.binary = binary or locate(self.name)
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"{self.name}-limiter-")) if workdir is None else workdir
        )
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._final: list[Entry] | None = None  # the log as it was at close()

    # -- what each server defines ------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def path(self) -> str:
        """The limited path, e.g. "/ok.txt"."""
        raise NotImplementedError

    def _write_config(self) -> list[str]:
        """Write the configuration for self.port; return the command line."""
        raise NotImplementedError

    def _parse(self, line: str) -> Entry | None:
        raise NotImplementedError

    def _diagnostics(self) -> str:
        """What the server said on failure."""
        return _tail(self.workdir / "stderr.log")

    # -- running -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start the server and wait (10 s at most) until it takes connections."""
        if self.process is not None or self._final is not None:
            raise RuntimeError(f"{self.name} was already started: use a new one")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(_PORT_TRIES):
            self.port = _free_port()
            self.log_path.unlink(missing_ok=True)
            command = self._write_config()
            with (
                open(self.workdir / "stdout.log", "wb") as out,
                open(self.workdir / "stderr.log", "wb") as err,
            ):
                self.process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.workdir
                )
            try:
                self._wait_until_up()
                return
            except ServerFailed as exc:
                self._stop_process()
                taken = re.search(r"Address already in use|cannot bind", str(exc), re.IGNORECASE)
                if taken and attempt + 1 < _PORT_TRIES:
                    continue
                self._discard()
                raise
            except BaseException:
                self._stop_process()
                self._discard()
                raise

    def close(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 5 s); keep its log for entries(). A
        temporary directory of its own is removed. Idempotent."""
        if self.process is not None:
            self._stop_process()
            self._final = self._read_log()
        self._discard()

    def _discard(self) -> None:
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self: Server) -> Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- what it answered --------------------------------------------------------------------
    def entries(self, at_least: int = 0, timeout: float = 2.0) -> list[Entry]:
        """Every request logged so far, in the log's order. A server logs a request after
        answering it: with `at_least`, wait (at most `timeout` s) until that many are there."""
        if self._final is not None:
            return list(self._final)
        deadline = time.monotonic() + timeout
        while True:
            found = self._read_log()
            if len(found) >= at_least or time.monotonic() >= deadline:
                return found
            time.sleep(0.005)

    def counts(self, at_least: int = 0, timeout: float = 2.0) -> Counts:
        """The 200s, 429s and others logged so far (see entries())."""
        return count(self.entries(at_least, timeout))

    def _read_log(self) -> list[Entry]:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        lines = text.split("\n")[:-1]  # a last line without its newline is still being written
        return [entry for line in lines if (entry := self._parse(line)) is not None]

    # -- process -----------------------------------------------------------------------------
    def _wait_until_up(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited at once (status {self.process.returncode}); "
                    f"it said:\n{self._diagnostics()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                time.sleep(0.01)
        raise ServerFailed(
            f"{self.name} did not take connections on 127.0.0.1:{self.port} within "
            f"{START_TIMEOUT:g} s; it said:\n{self._diagnostics()}"
        )

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class NginxLimiter(LimitingServer):
    """nginx with `limit_req`: `rate` requests per second (`per="s"`) or minute (`per="m"`),
    `burst` and `nodelay` as in `limit_req zone=z burst=<burst> [nodelay]`."""

    name = "nginx"

    def __init__(
        self,
        rate: int = 10,
        per: str = "s",
        burst: int = 0,
        nodelay: bool = False,
        *,
        workdir: Path | None = None,
        binary: str | None = None,
    ) -> None:
        if rate < 1 or per not in ("s", "m") or burst < 0:
            raise ValueError(
                f"need rate >= 1, per 's' or 'm', burst >= 0 (got {rate}, {per!r}, {burst})"
            )
        self.rate = rate
        self.per = per
        self.burst = burst
        self.nodelay = nodelay
        super().__init__(workdir, binary)

    @property
    def per_second(self) -> float:
        return self.rate if self.per == "s" else self.rate / 60

    @property
    def log_path(self) -> Path:
        return self.workdir / "access.log"

    @property
    def path(self) -> str:
        return "/ok.txt"

    def _write_config(self) -> list[str]:
        root = self.workdir
        (root / "html").mkdir(exist_ok=True)
        (root / "html" / "ok.txt").write_text("ok\n", encoding="ascii")
        burst = f" burst={self.burst}" if self.burst else ""  # nginx refuses burst=0
        nodelay = " nodelay" if self.nodelay else ""
        config = f"""\
daemon off;
master_process off;
pid {root}/nginx.pid;
lock_file {root}/nginx.lock;
error_log {root}/error.log notice;
events {{
    worker_connections 1024;
}}
http {{
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    log_format stamped '$msec $status';
    access_log {root}/access.log stamped;
    default_type text/plain;
    server_tokens off;
    keepalive_timeout 30s;
    limit_req_zone $binary_remote_addr zone=z:1m rate={self.rate}r/{self.per};
    server {{
        listen 127.0.0.1:{self.port};
        root {root}/html;
        location / {{
            limit_req zone=z{burst}{nodelay};
            limit_req_status 429;
            try_files /ok.txt =404;  # every path: after limit_req (precontent phase)
        }}
    }}
}}
"""
        conf = root / "nginx.conf"
        conf.write_text(config, encoding="utf-8")
        (root / "error.log").unlink(missing_ok=True)
        return [self.binary, "-p", f"{root}/", "-c", str(conf), "-e", str(root / "error.log")]

    def _parse(self, line: str) -> Entry | None:
        parts = line.split()
        try:
            stamp, status = parts
            return Entry(float(stamp), int(status))
        except ValueError:  # not an access log line of ours
            return None

    def _diagnostics(self) -> str:
        return "\n".join(
            text for path in ("stderr.log", "error.log") if (text := _tail(self.workdir / path))
        )


class HAProxyLimiter(LimitingServer):
    """HAProxy refusing (429) a request when `sc_http_req_rate(0) gt limit`, the table
    storing `http_req_rate(period)` (`period` in seconds, ms resolution)."""

    name = "haproxy"

    def __init__(
        self,
        limit: int = 10,
        period: float = 1.0,
        *,
        workdir: Path | None = None,
        binary: str | None = None,
    ) -> None:
        if limit < 0 or round(period * 1000) < 1:
            raise ValueError(f"need limit >= 0 and period >= 1 ms (got {limit}, {period})")
        self.limit = limit
        self.period = round(period * 1000) / 1000
        super().__init__(workdir, binary)

    @property
    def period_text(self) -> str:
        """The period as HAProxy reads it: "1s", "500ms"."""
        ms = round(self.period * 1000)
        return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"

    @property
    def log_path(self) -> Path:
        return self.workdir / "stdout.log"

    @property
    def path(self) -> str:
        return "/"

    def _write_config(self) -> list[str]:
        root = self.workdir
        config = f"""\
global
    pidfile {root}/haproxy.pid
    nbthread 1
    maxconn 1000
    log stdout format raw local0

defaults
    mode http
    log global
    option dontlognull  # not the connection that checks the port is open
    log-format "%Ts.%ms %Th %Ti %ST"
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend limited
    bind 127.0.0.1:{self.port}
    stick-table type ip size 1m expire 10s store http_req_rate({self.period_text})
    http-request track-sc0 src
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {self.limit} }}
    http-request return status 200 content-type text/plain string ok
"""
        conf = root / "haproxy.cfg"
        conf.write_text(config, encoding="utf-8")
        return [self.binary, "-db", "-f", str(conf)]

    def _parse(self, line: str) -> Entry | None:
        try:
            accepted, handshake, idle, status = line.split()
            waited = max(int(handshake), 0) + max(int(idle), 0)  # -1 when not measured
            return Entry(float(accepted) + waited / 1000, int(status))
        except ValueError:  # not a log line of ours (a warning HAProxy printed)
            return None


def locate(name: str) -> str:
    """The path of the `nginx` or `haproxy` binary: on PATH, else in /usr/sbin (where Debian
    puts them, not always on a user's PATH). ServerMissing if neither."""
    found = shutil.which(name)
    if found is not None:
        return found
    sbin = Path("/usr/sbin") / name
    if sbin.is_file() and os.access(sbin, os.X_OK):
        return str(sbin)
    raise ServerMissing(
        f"{name} is not installed (not on PATH, nor in /usr/sbin). Install it, e.g. "
        f"`apt-get install {name}` (Debian, Ubuntu) or `brew install {name}` (macOS)."
    )


class StartNginx(Protocol):
    """The `nginx_limiter` fixture: a started NginxLimiter, stopped when the test ends."""

    def __call__(
        self, rate: int = 10, per: str = "s", burst: int = 0, nodelay: bool = False
    ) -> NginxLimiter: ...


class StartHAProxy(Protocol):
    """The `haproxy_limiter` fixture: a started HAProxyLimiter, stopped when the test ends."""

    def __call__(self, limit: int = 10, period: float = 1.0) -> HAProxyLimiter: ...


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_version(name: str) -> str:
    """The installed version of `nginx` or `haproxy` ("1.22.1"), or "missing"."""
    try:
        binary = locate(name)
    except ServerMissing:
        return "missing"
    done = subprocess.run(
        [binary, "-v"], capture_output=True, text=True, timeout=10, check=False
    )  # nginx says it on stderr, HAProxy on stdout
    found = re.search(r"(?:nginx/|HAProxy version )(\S+)", done.stdout + done.stderr)
    return found.group(1) if found else "?"
