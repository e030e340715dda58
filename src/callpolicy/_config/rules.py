"""`[[retry.rules]]`: several causes of retries in one policy, each with its own matching
keys, wait and attempts. The keys a rule may hold are given by `grammar.py`; this module
reads the list: every rule a table, named at most once, matching something."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from callpolicy._config.context import Context, Located, Parser, read_section
from callpolicy._config.values import UnitError
from callpolicy._model import DEFAULT_RULE_NAME
from callpolicy._text import shown_value

# Keys of the retry table that every rule shares: written in a rule, they are a mistake.
SHARED_RETRY_KEYS = ("idempotent", "refused_any_method", "give_up", "rules")
_RULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9 _.-]{0,39}", re.ASCII)


def parse_rule_name(value: object) -> str:
    if not isinstance(value, str) or not _RULE_NAME.fullmatch(value):
        raise UnitError(
            "must be 1 to 40 letters, digits, spaces, '_', '.' or '-', not starting with a space,"
            f" '.' or '-' (got {shown_value(value)})"
        )
    return value


def table_of(value: Any, example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UnitError(f"must be a table like {example} (got {shown_value(value)})")
    return value


def read_rules(
    value: Any, ctx: Context, key: str, keys: Mapping[str, Parser], matching: tuple[str, ...]
) -> list[dict[str, Located]]:
    """The rules of `retry.rules`, in order, each read with `keys`; `matching` are the keys
    of which a rule needs one."""
    if not isinstance(value, list):
        raise UnitError(
            f"must be a list of rule tables, [[...retry.rules]] (got {shown_value(value)})"
        )
    rules: list[dict[str, Located]] = []
    names: set[str] = set()
    for index, entry in enumerate(value):
        sub = ctx.child(f"{key}[{index}]")
        if not isinstance(entry, dict):
            sub.report(
                None,
                f"must be a rule table like {{ on_status = [429] }} (got {shown_value(entry)})",
            )
            continue
        for shared in SHARED_RETRY_KEYS:
            if shared in entry:
                sub.report(shared, f"is shared by every rule: set retry.{shared} beside the rules")
        own = {k: v for k, v in entry.items() if k not in SHARED_RETRY_KEYS}
        rule = read_section(own, sub, keys)
        if not any(k in entry for k in matching) and set(own) <= set(keys):
            sub.report(None, f"matches nothing: a rule needs one of {', '.join(matching)}")
        if "name" not in rule:  # unnamed (or misnamed, reported): named by its place
            rule["name"] = sub.located("name", DEFAULT_RULE_NAME.format(index + 1))
        name = rule["name"].value
        if name in names:
            sub.report("name", f"{name!r} is the name of an earlier rule; rule names must differ")
            continue
        names.add(name)
        rules.append(rule)
    return rules
