"""Reading a table of a policy file: each value parsed and kept with where it was written
(`Located`), and every problem reported with its file, line and key path (`Context`).

A `Located` value keeps its origin through `[defaults]` and `extends` merges, so later
errors (cross-key checks, unknown names) still point at the line that set it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from callpolicy._config.keymap import KeyPath, line_of
from callpolicy._config.values import UnitError
from callpolicy._errors import Problem
from callpolicy._text import shown_value, suggestion

Table = dict[str, Any]


@attrs.frozen
class Located:
    """A parsed value and where it was written."""

    value: Any
    path: str
    line: int | None
    key: str


@attrs.frozen
class QuotaRef:
    """A `quotas` entry: a quota's name, or an inline quota table/rate (`spec`)."""

    name: str | None
    spec: Table | None
    service: str  # the file the entry was written in: names resolve there


@attrs.define
class Context:
    """Where a table is: file, key lines, its TOML path and the key path users see."""

    path: str
    lines: dict[KeyPath, int]
    toml_path: KeyPath
    display: str
    service: str
    problems: list[Problem]

    def child(self, key: str) -> Context:
        # "steps[0]" is a line of its own in [[...steps]], else found through "steps".
        return attrs.evolve(self, toml_path=(*self.toml_path, key), display=f"{self.display}.{key}")

    def line(self, key: str | None = None) -> int | None:
        path = self.toml_path if key is None else (*self.toml_path, key)
        return line_of(self.lines, path)

    def report(self, key: str | None, message: str) -> None:
        shown = self.display if key is None else f"{self.display}.{key}"
        self.problems.append(Problem(self.path, self.line(key), shown, message))

    def located(self, key: str, value: Any) -> Located:
        return Located(value, self.path, self.line(key), f"{self.display}.{key}")


Parser = Callable[[Any, Context, str], Any]


def atom(parse: Callable[[Any], Any]) -> Parser:
    """A parser of one value, which needs no context."""
    return lambda value, ctx, key: parse(value)


def choice(options: tuple[str, ...]) -> Parser:
    def parse(value: Any, ctx: Context, key: str) -> str:
        if value not in options or not isinstance(value, str):
            raise UnitError(
                f"must be one of {', '.join(map(repr, options))} (got {shown_value(value)})"
            )
        return value

    return parse


def list_of(item: Parser) -> Parser:
    def parse(value: Any, ctx: Context, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise UnitError(f"must be a list (got {shown_value(value)})")
        parsed = []
        for index, entry in enumerate(value):
            try:
                parsed.append(item(entry, ctx, key))
            except (UnitError, LookupError) as exc:
                ctx.report(f"{key}[{index}]", message_of(exc))
        return parsed

    return parse


def read_section(
    table: Mapping[str, Any], ctx: Context, keys: Mapping[str, Parser]
) -> dict[str, Located]:
    """Parse each known key of `table`; report unknown keys and bad values."""
    report_unknown(table, tuple(keys), ctx)
    section: dict[str, Located] = {}
    for key, value in table.items():
        parser = keys.get(key)
        if parser is None:
            continue
        try:
            parsed = parser(value, ctx, key)
        except (UnitError, LookupError) as exc:
            ctx.report(key, message_of(exc))
            continue
        if parsed is not None:
            section[key] = ctx.located(key, parsed)
    return section


def report_unknown(table: Mapping[str, Any], known: tuple[str, ...], ctx: Context) -> None:
    for key in table:
        if key not in known:
            ctx.report(key, f"unknown key{suggestion(key, known, 'known keys')}")


def message_of(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else str(exc)
