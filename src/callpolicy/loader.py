"""Policy files -> policies: find the files, read them, resolve `extends`, report all problems.

A file's stem is its service. Endpoint `tracks` of `spotify.toml` is the policy
`spotify.tracks`: its `[defaults]` first, then what `extends` names, then its own keys.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from callpolicy.build import build_policy, merge
from callpolicy.errors import PolicyError, Problem
from callpolicy.keymap import key_lines
from callpolicy.model import Policy, Quota
from callpolicy.quotas.spec import build_named_quotas, read_quota
from callpolicy.schema import Context, Located, read_policy
from callpolicy.units import shown_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised by the Python 3.10 CI run
    import tomli as tomllib

PathLike = str | os.PathLike[str]
_NAME = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
TOP_KEYS = ("defaults", "endpoints", "quotas")


@attrs.define
class _File:
    service: str
    path: str
    defaults: dict[str, Any] = attrs.Factory(dict)
    endpoints: dict[str, dict[str, Any]] = attrs.Factory(dict)
    endpoint_lines: dict[str, int | None] = attrs.Factory(dict)


def default_paths() -> list[Path]:
    """The directories of `CALLPOLICY_PATH` (os.pathsep-separated), else `./policies`."""
    env = os.environ.get("CALLPOLICY_PATH", "")
    return [Path(p) for p in env.split(os.pathsep) if p] or [Path("policies")]


def load_policies(paths: Sequence[PathLike]) -> dict[str, Policy]:
    """Read every policy file under `paths`. Raises `PolicyError` listing all problems."""
    problems: list[Problem] = []
    files: dict[str, _File] = {}
    quota_tables: QuotaTables = {}
    for file_path in _policy_files(paths, problems):
        parsed = _read_file(file_path, problems, quota_tables)
        if parsed is None:
            continue
        if parsed.service in files:
            problems.append(
                Problem(
                    parsed.path,
                    None,
                    parsed.service,
                    f"service defined twice (also in {files[parsed.service].path})",
                )
            )
            continue
        files[parsed.service] = parsed
    quotas = build_named_quotas(quota_tables, problems)
    policies = _Resolver(files, quotas, problems).build_all()
    if problems:
        raise PolicyError(problems)
    return policies


def _policy_files(paths: Sequence[PathLike], problems: list[Problem]) -> Iterable[Path]:
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            yield from sorted(path.glob("*.toml"))
        elif path.is_file():
            yield path
        else:
            problems.append(Problem(_shown(path), None, "", "no such file or directory"))


QuotaTables = dict[str, tuple[dict[str, Located], str]]


def _read_file(path: Path, problems: list[Problem], quotas: QuotaTables) -> _File | None:
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
            close = difflib.get_close_matches(key, TOP_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(TOP_KEYS)}"
            root.report(key, f"unknown table{hint}")
        elif not isinstance(value, dict):
            root.report(key, f"must be a table (got {shown_value(value)})")
    parsed = _File(service, shown)
    defaults = raw.get("defaults")
    if isinstance(defaults, dict):
        ctx = attrs.evolve(root, toml_path=("defaults",), display=f"{service}.defaults")
        parsed.defaults = read_policy(defaults, ctx)
    for kind in ("endpoints", "quotas"):
        table = raw.get(kind)
        for name, body in table.items() if isinstance(table, dict) else ():
            ctx = attrs.evolve(root, toml_path=(kind, name), display=f"{service}.{name}")
            if not _NAME.fullmatch(name):
                ctx.report(None, f"a name may hold only letters, digits, - and _ (got {name!r})")
            elif kind == "endpoints" and name == "defaults":
                ctx.report(None, "'defaults' is reserved for the [defaults] table; rename it")
            elif kind == "quotas":
                keys = read_quota(body, ctx)
                if keys is not None:
                    quotas[f"{service}.{name}"] = (keys, service)
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
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")  # a byte-order mark is harmless: drop it
        return text, tomllib.loads(text)
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


Node = tuple[str, str | None]  # (service, endpoint); None is the file's [defaults]


class _Resolver:
    """Resolves `extends` chains with memoisation and cycle detection, then builds policies."""

    def __init__(self, files: dict[str, _File], quotas: dict[str, Quota], problems: list[Problem]):
        self.files = files
        self.quotas = quotas
        self.problems = problems
        self.done: dict[Node, dict[str, Any]] = {}
        self.chain: list[Node] = []

    def build_all(self) -> dict[str, Policy]:
        policies = {}
        for service, parsed in self.files.items():
            for endpoint in parsed.endpoints:
                name = f"{service}.{endpoint}"
                layers = self.resolve((service, endpoint))
                source = f"{parsed.path}:{parsed.endpoint_lines[endpoint] or 1}"
                policies[name] = build_policy(name, layers, self.quotas, self.problems, source)
        return policies

    def resolve(self, node: Node) -> dict[str, Any]:
        """Merged layers of `node`: its file's defaults, what it extends, its own keys."""
        if node in self.done:
            return self.done[node]
        if node in self.chain:
            self._cycle(self.chain[self.chain.index(node) :])
            return {}
        self.chain.append(node)
        service, endpoint = node
        own = self._own(node)
        layers: dict[str, Any] = {}
        if endpoint is not None:
            layers = self.resolve((service, None))
        extends = own.get("extends")
        if extends is not None:
            target = self._target(extends.value, service)
            if target is None:
                self._unknown_target(extends)
            else:
                layers = merge(layers, self.resolve(target))
        layers = merge(layers, own)
        self.chain.pop()
        self.done[node] = layers
        return layers

    def _cycle(self, cycle: list[Node]) -> None:
        """Report a cycle once, at the last `extends` of the chain (a defaults link has none)."""
        names = [_name(node) for node in [*cycle, cycle[0]]]
        leaf: Located = next(
            self._own(node)["extends"] for node in reversed(cycle) if "extends" in self._own(node)
        )
        self.problems.append(
            Problem(leaf.path, leaf.line, leaf.key, f"extends cycle: {' -> '.join(names)}")
        )

    def _own(self, node: Node) -> dict[str, Any]:
        service, endpoint = node
        parsed = self.files[service]
        return parsed.defaults if endpoint is None else parsed.endpoints[endpoint]

    def _target(self, name: str, service: str) -> Node | None:
        target_service, dot, endpoint = name.partition(".")
        if not dot:
            target_service, endpoint = service, name
        parsed = self.files.get(target_service)
        if parsed is None or endpoint not in parsed.endpoints:
            return None
        return target_service, endpoint

    def _unknown_target(self, leaf: Located) -> None:
        names = [f"{s}.{e}" for s, f in self.files.items() for e in f.endpoints]
        close = difflib.get_close_matches(leaf.value, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.problems.append(
            Problem(
                leaf.path, leaf.line, leaf.key, f"no policy named {leaf.value!r} to extend{hint}"
            )
        )


def _name(node: Node) -> str:
    service, endpoint = node
    return f"{service}.{endpoint or 'defaults'}"


def _shown(path: Path) -> str:
    """`path` as users see it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
