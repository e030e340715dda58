"""Finding policy files and reading each into located tables, every problem reported.

A file's stem is its service: endpoint `tracks` of `spotify.toml` is the policy
`spotify.tracks`.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from callpolicy._config.context import Context, Located
from callpolicy._config.grammar import read_policy
from callpolicy._config.keymap import key_lines
from callpolicy._config.quotas import read_quota
from callpolicy._config.resilience import NamedLayers
from callpolicy._errors import Problem
from callpolicy._text import shown_value, suggestion

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised by the Python 3.10 CI run
    import tomli as tomllib

PathLike = str | os.PathLike[str]
_NAME = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
TOP_KEYS = ("defaults", "endpoints", "quotas", "breakers", "budgets")
MAX_FILE_BYTES = 1_000_000  # a policy file is a few kB; past this it is not one
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


@attrs.define
class PolicyFile:
    service: str
    path: str
    defaults: dict[str, Any] = attrs.Factory(dict)
    endpoints: dict[str, dict[str, Any]] = attrs.Factory(dict)
    endpoint_lines: dict[str, int | None] = attrs.Factory(dict)


def default_paths() -> list[Path]:
    """The directories of `CALLPOLICY_PATH` (os.pathsep-separated), else `./policies`."""
    env = os.environ.get("CALLPOLICY_PATH", "")
    return [Path(p) for p in env.split(os.pathsep) if p] or [Path("policies")]


def policy_files(paths: Sequence[PathLike], problems: list[Problem]) -> Iterable[Path]:
    """The files to read: each file named, and the `*.toml` of each directory named."""
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            yield from sorted(path.glob("*.toml"))
        elif path.exists() or path.is_symlink():
            yield path  # read_file says if it is not a regular file
        else:
            problems.append(Problem(_shown(path), None, "", "no such file or directory"))


class Unreadable(Exception):
    """A policy file that is not read: not a regular file, or too large."""


def _read_bytes(path: Path) -> bytes:
    """A regular file's bytes, at most MAX_FILE_BYTES. A FIFO, a device or a socket is never
    opened for reading (it could block forever, or never end)."""
    _check_regular(os.stat(path))  # follows links: a link to /dev/zero is a device
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        _check_regular(os.fstat(fd))  # the file opened, not the one looked at before
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise Unreadable(f"larger than {MAX_FILE_BYTES:,} bytes: not read")
    finally:
        os.close(fd)


def _check_regular(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise Unreadable(f"not a regular file ({kind}): not read")
    if info.st_size > MAX_FILE_BYTES:
        raise Unreadable(f"larger than {MAX_FILE_BYTES:,} bytes: not read")


QuotaTables = dict[str, tuple[dict[str, Located], str]]


def read_file(
    path: Path,
    problems: list[Problem],
    quotas: QuotaTables,
    broken: set[str],
    named: NamedLayers | None = None,
) -> PolicyFile | None:
    """The tables of one policy file; its quota tables go to `quotas` (or, with a problem,
    their names to `broken`), its breaker and budget tables to `named`."""
    shown = _shown(path)
    service = path.stem
    parsed_toml = _parse_toml(path, shown, problems)
    if parsed_toml is None:
        return None
    text, raw = parsed_toml
    if not _NAME.fullmatch(service):
        message = "a service name (the file name) may hold only letters, digits, - and _"
        problems.append(Problem(shown, None, service, message))
        return None
    root = Context(shown, key_lines(text), (), service, service, problems)
    for key, value in raw.items():
        if key not in TOP_KEYS:
            root.report(key, f"unknown table{suggestion(key, TOP_KEYS, 'known')}")
        elif not isinstance(value, dict):
            root.report(key, f"must be a table (got {shown_value(value)})")
    parsed = PolicyFile(service, shown)
    defaults = raw.get("defaults")
    if isinstance(defaults, dict):
        ctx = attrs.evolve(root, toml_path=("defaults",), display=f"{service}.defaults")
        parsed.defaults = read_policy(defaults, ctx)
    for kind in ("endpoints", "quotas", "breakers", "budgets"):
        table = raw.get(kind)
        for name, body in table.items() if isinstance(table, dict) else ():
            ctx = attrs.evolve(root, toml_path=(kind, name), display=f"{service}.{name}")
            if not _NAME.fullmatch(name):
                ctx.report(None, f"a name may hold only letters, digits, - and _ (got {name!r})")
            elif kind == "endpoints" and name == "defaults":
                ctx.report(None, "'defaults' is reserved for the [defaults] table; rename it")
            elif kind in ("breakers", "budgets"):
                if named is not None:
                    named.read(kind, f"{service}.{name}", body, ctx)
            elif kind == "quotas":
                keys = read_quota(body, ctx)
                if keys is not None:
                    quotas[f"{service}.{name}"] = (keys, service)
                else:
                    broken.add(f"{service}.{name}")
            elif not isinstance(body, dict):
                ctx.report(None, f"must be a table (got {shown_value(body)})")
            else:
                parsed.endpoints[name] = read_policy(body, ctx)
                parsed.endpoint_lines[name] = ctx.line()
    return parsed


def _parse_toml(
    path: Path, shown: str, problems: list[Problem]
) -> tuple[str, dict[str, Any]] | None:
    """The text and the TOML tables of a file, or None after reporting why not."""
    data = b""
    try:
        data = _read_bytes(path)
        text = data.decode("utf-8-sig")  # a byte-order mark is harmless: drop it
        return text, tomllib.loads(text)
    except Unreadable as exc:
        problems.append(Problem(shown, None, "", str(exc)))
    except OSError as exc:
        problems.append(Problem(shown, None, "", f"cannot read: {exc.strerror or exc}"))
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        problems.append(Problem(shown, bad_line, "", f"not UTF-8 text ({exc.reason})"))
    except RecursionError:
        problems.append(Problem(shown, None, "", "values nested too deeply to read"))
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _POSITION.search(message)
        line, column = (int(position[1]), int(position[2])) if position else (None, None)
        message = _POSITION.sub("", message).strip()
        problems.append(Problem(shown, line, "", f"TOML syntax error: {message}", column))
    return None


def _shown(path: Path) -> str:
    """`path` as users see it: relative to the working directory when inside it. Links are
    not followed: a problem names the entry, not what it points to."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)
