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
SHARED_RETRY_KEYS = (
    "idempotent",
    "refused_any_method",
    "should_retry_header",
    "give_up",
    "rules",
)
# Not starting with a space, '.' or '-', nor ending with a space: "a " and "a" are one name
# to a reader, so only one of them may be written.
_RULE_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9 _.-]{0,38}[A-Za-z0-9_.-])?", re.ASCII)


def parse_rule_name(value: object) -> str:
    if not isinstance(value, str) or not _RULE_NAME.fullmatch(value):
        raise UnitError(
            "must be 1 to 40 letters, digits, spaces, '_', '.' or '-', not starting with a space,"
            f" '.' or '-', nor ending with a space (got {shown_value(value)})"
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
    names: dict[str, tuple[int, bool]] = {}  # the names so far: index, and whether written
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
        if set(own) <= set(keys):  # a misspelt key may be the matcher: reported already
            _check_matches_something(entry, sub, matching)
        named = "name" in rule
        if not named:  # unnamed (or misnamed, reported): named by its place
            rule["name"] = sub.located("name", DEFAULT_RULE_NAME.format(index + 1))
        name = rule["name"].value
        if name in names:  # a name written but refused is reported already
            if named or "name" not in entry:
                _report_same_name(
                    sub, name, named, f"retry.{key}[{names[name][0]}]", names[name][1]
                )
            continue
        names[name] = (index, named)
        rules.append(rule)
    return rules


def _check_matches_something(
    entry: Mapping[str, Any], ctx: Context, matching: tuple[str, ...]
) -> None:
    """A rule needs a matching key that can match something: an empty list (`on_status =
    []`) matches nothing, like no key at all."""
    written = [k for k in matching if k in entry]
    if any(entry[k] != [] for k in written):
        return
    needs = f"a rule needs one of {', '.join(matching)}"
    if not written:
        ctx.report(None, f"matches nothing: {needs}")
        return
    empty = " and ".join(f"{k} = []" for k in written)
    ctx.report(
        None, f"matches nothing ({empty} {'is' if len(written) == 1 else 'are'} empty): {needs}"
    )


def _report_same_name(
    ctx: Context, name: str, named: bool, earlier: str, earlier_named: bool
) -> None:
    """Two rules of one name: blamed on the later rule, saying which name is a default."""
    if not named:  # the user wrote no name here: say where this one comes from
        ctx.report(
            None,
            f"has no name, and its default name {name!r} (by its place) is the name {earlier}"
            ' was given; give this rule a name of its own: name = "..."',
        )
    elif earlier_named:
        ctx.report("name", f"{name!r} is the name of an earlier rule; rule names must differ")
    else:
        ctx.report(
            "name",
            f"{name!r} is the default name of {earlier}, which has no name of its own;"
            " rule names must differ",
        )
