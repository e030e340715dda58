"""Policy files -> `Policy` models: files found and read (files), keys located (keymap,
context), values parsed (values, grammar, quotas), `extends` and defaults merged (inherit),
models built (build). Imports only the model, the errors and text helpers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from callpolicy._config.build import build_policy
from callpolicy._config.files import (
    PathLike,
    PolicyFile,
    QuotaTables,
    default_paths,
    policy_files,
    read_file,
)
from callpolicy._config.inherit import Inheritance
from callpolicy._config.quotas import build_named_quotas
from callpolicy._config.resilience import NamedLayers
from callpolicy._errors import PolicyError, Problem
from callpolicy._model import Policy

__all__ = ["PathLike", "default_paths", "load_policies"]


SHIPPED = Path(__file__).parent.parent / "policies"  # http.toml: bases for `extends`


def load_policies(paths: Sequence[PathLike]) -> dict[str, Policy]:
    """Read every policy file under `paths`. Raises `PolicyError` listing all problems.

    The files shipped with callpolicy (policies/http.toml) may be extended from any file;
    their endpoints are not policies of their own, and a file of the same name under
    `paths` replaces them."""
    problems: list[Problem] = []
    files: dict[str, PolicyFile] = {}
    quota_tables: QuotaTables = {}
    broken: set[str] = set()
    bases: set[str] = set()  # services read from the shipped files
    named = NamedLayers()  # [breakers.x], [budgets.x]
    for file_path in [*policy_files(paths, problems), *sorted(SHIPPED.glob("*.toml"))]:
        shipped = file_path.parent == SHIPPED
        if shipped and file_path.stem in files:
            continue  # replaced by the user's file of the same name
        parsed = read_file(file_path, problems, quota_tables, broken, named)
        if parsed is None:
            continue
        if parsed.service in files:
            also = files[parsed.service].path
            problems.append(
                Problem(
                    parsed.path, None, parsed.service, f"service defined twice (also in {also})"
                )
            )
            continue
        files[parsed.service] = parsed
        if shipped:
            bases.add(parsed.service)
    quotas = build_named_quotas(quota_tables, problems, broken)
    named.build()
    inheritance = Inheritance({s: (f.defaults, f.endpoints) for s, f in files.items()})
    broken_quotas = frozenset(broken)
    policies = {}
    for service, parsed in files.items():
        if service in bases:
            continue  # a base to extend, not a policy
        for endpoint in parsed.endpoints:
            name = f"{service}.{endpoint}"
            layers = inheritance.resolve((service, endpoint))
            source = f"{parsed.path}:{parsed.endpoint_lines[endpoint] or 1}"
            order = inheritance.order((service, endpoint))
            policies[name] = build_policy(
                name, layers, quotas, problems, source, broken_quotas, order, named
            )
    problems += inheritance.problems
    if problems:
        raise PolicyError(problems)
    return policies
