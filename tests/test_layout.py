"""The package's layout: which modules may import which, no import cycles, small modules, and
a public surface of `callpolicy`, `callpolicy.cli` and `callpolicy.testing` only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import callpolicy

PACKAGE = Path(callpolicy.__file__).resolve().parent
PUBLIC = ("__init__", "cli", "testing")
MAX_LINES = 300


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], *, load_time_only: bool) -> Iterator[ast.stmt]:
    """The statements of `body`, nested ones too. With `load_time_only`, only those run when
    the module is imported: not in functions, nor under `if TYPE_CHECKING:`."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not load_time_only:
                yield from _statements(node.body, load_time_only=False)
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            if not load_time_only:
                yield from _statements(node.body, load_time_only=False)
            yield from _statements(node.orelse, load_time_only=load_time_only)
            continue
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                stmts = [c for c in children if isinstance(c, ast.stmt)]
                stmts += [s for c in children if not isinstance(c, ast.stmt) for s in c.body]
                yield from _statements(stmts, load_time_only=load_time_only)


def _imports(module: str, *, load_time_only: bool) -> set[str]:
    """The callpolicy modules `module` imports by name (`from callpolicy import _model` is
    the module `callpolicy._model`; `from callpolicy._model import Policy` is `_model`)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _statements(tree.body, load_time_only=load_time_only):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


def _layer(module: str) -> str:
    """callpolicy._config.files -> "_config"; callpolicy -> "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_module_list_is_complete() -> None:
    assert {"callpolicy", "callpolicy._config", "callpolicy._model", "callpolicy.cli"} <= set(
        MODULES
    )
    assert len(MODULES) >= 30


def test_reading_policy_files_loads_neither_tenacity_nor_the_engine_nor_quotas() -> None:
    """`callpolicy._config` (and what it imports) in a fresh interpreter. The package's
    `__init__` imports everything the public API needs, so it is left out: the test stands
    an empty `callpolicy` package in for it and imports `callpolicy._config` alone."""
    code = f"""
import json, sys, types
package = types.ModuleType("callpolicy")
package.__path__ = [{str(PACKAGE)!r}]
sys.modules["callpolicy"] = package
import callpolicy._config
print(json.dumps(sorted(sys.modules)))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "callpolicy._config.build" in loaded  # the import did happen
    unwanted = [
        name
        for name in loaded
        if name.split(".")[0] == "tenacity"
        or name.startswith(("callpolicy._engine", "callpolicy._quotas"))
    ]
    assert unwanted == []
    ours = {name for name in loaded if name.startswith("callpolicy.")}
    assert {_layer(name) for name in ours} <= {"_config", "_model", "_errors", "_text", "_forks"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as a list of modules (first == last), or None."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                done.add(path.pop())
            elif child in path:
                return [*path[path.index(child) :], child]
            elif child not in done:
                path.append(child)
                stack.append(iter(sorted(graph.get(child, ()))))
    return None


def test_no_import_cycles_among_callpolicy_modules() -> None:
    graph = {module: _imports(module, load_time_only=True) for module in MODULES}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


LAYERS = {
    # layer: the other layers it may import (itself is always allowed)
    "_config": {"_model", "_errors", "_text", "_forks"},
    "_model": {"_text", "_forks"},
}
NEVER = {
    "_engine": {"_config", "_registry", "_decorate", "cli"},
    "_quotas": {"_config", "_registry", "_decorate", "cli"},
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_layer_imports_only_what_it_builds_on(module: str) -> None:
    """Every import counts here, inside functions and for type checking too."""
    layer = _layer(module)
    imported = {_layer(name) for name in _imports(module, load_time_only=False)} - {layer}
    if layer in LAYERS:
        assert imported <= LAYERS[layer], f"{module} imports {sorted(imported - LAYERS[layer])}"
    if layer in NEVER:
        assert not imported & NEVER[layer], f"{module} imports {sorted(imported & NEVER[layer])}"


def test_every_module_is_at_most_300_lines() -> None:
    lengths = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in MODULES.values()
    }
    too_long = {path: lines for path, lines in lengths.items() if lines > MAX_LINES}
    assert too_long == {}, f"modules over {MAX_LINES} lines: {too_long}"


def test_the_public_names_exist_and_nothing_else_is_public() -> None:
    missing = [name for name in callpolicy.__all__ if not hasattr(callpolicy, name)]
    assert missing == []
    assert len(set(callpolicy.__all__)) == len(callpolicy.__all__)
    assert all(not name.startswith("_") for name in callpolicy.__all__)
    # Every module and package of callpolicy but these three is private.
    entries = {
        p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert set(PUBLIC) <= entries
    public = sorted(name for name in entries - set(PUBLIC) if not name.startswith("_"))
    assert public == []
