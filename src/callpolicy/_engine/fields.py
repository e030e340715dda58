"""Structured field lists (RFC 8941), as the IETF RateLimit fields are written:

    RateLimit-Policy: "burst";q=100;w=60, "daily";q=1000;w=86400

A strict reader of the subset those fields use: each member an item (integer, decimal, string,
token, byte sequence or boolean) with parameters; no inner lists. Anything else is not a list
(`NotAList`); the caller ignores the field, as RFC 8941 says a parsing failure must.
"""

from __future__ import annotations

import re

Bare = int | float | str | bytes | bool
MAX_LENGTH = 4096  # a field's text: more is no announcement worth reading

_INTEGER = r"-?\d{1,15}(?![\d.])"
_DECIMAL = r"-?\d{1,12}\.\d{1,3}(?![\d.])"
_STRING = r'"(?:[ !#-\[\]-~]|\\["\\])*"'
_TOKEN = r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*"
_BYTES = r":[A-Za-z0-9+/=]*:"
_BOOLEAN = r"\?[01]"
_ITEM = re.compile(
    f"(?P<i>{_INTEGER})|(?P<d>{_DECIMAL})|(?P<s>{_STRING})|(?P<t>{_TOKEN})|(?P<b>{_BYTES})"
    f"|(?P<o>{_BOOLEAN})",
    re.ASCII,
)
_KEY = re.compile(r";[ ]*([a-z*][a-z0-9_\-.*]*)", re.ASCII)
_SEPARATOR = re.compile(r"[ \t]*,[ \t]*", re.ASCII)


class NotAList(ValueError):
    """The text is not a structured field list; the message says where."""


class Member:
    """One member of a list: its item and its parameters (in order, a repeated key's last
    value kept, as RFC 8941 says)."""

    __slots__ = ("item", "params")

    def __init__(self, item: Bare, params: dict[str, Bare]) -> None:
        self.item = item
        self.params = params


def parse_list(text: str) -> list[Member]:
    """The members of the structured field list `text`; NotAList if it is not one."""
    if not text.isascii():
        raise NotAList("not ASCII")
    if len(text) > MAX_LENGTH:
        raise NotAList(f"longer than {MAX_LENGTH} characters")
    text = text.strip(" \t")
    members: list[Member] = []
    at = 0
    while True:
        item, at = _bare(text, at)
        params: dict[str, Bare] = {}
        while (key := _KEY.match(text, at)) is not None:
            at = key.end()
            value: Bare = True
            if text.startswith("=", at):
                value, at = _bare(text, at + 1)
            params[key[1]] = value
        members.append(Member(item, params))
        if at == len(text):
            return members
        separator = _SEPARATOR.match(text, at)
        if separator is None or separator.end() == len(text):
            raise NotAList(f"unexpected {text[at : at + 10]!r} at {at}")
        at = separator.end()


def _bare(text: str, at: int) -> tuple[Bare, int]:
    match = _ITEM.match(text, at)
    if match is None:
        raise NotAList(f"no item at {at} ({text[at : at + 10]!r})")
    kind, raw = match.lastgroup, match.group()
    value: Bare
    if kind == "i":
        value = int(raw)
    elif kind == "d":
        value = float(raw)
    elif kind == "s":
        value = re.sub(r"\\(.)", r"\1", raw[1:-1])
    elif kind == "o":
        value = raw == "?1"
    elif kind == "b":
        value = raw[1:-1].encode("ascii")  # kept as written: never decoded here
    else:
        value = raw
    return value, match.end()
