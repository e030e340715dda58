"""Line numbers of keys in a TOML text.

`tomllib` reports a line only for syntax errors, so semantic errors (unknown key, bad value)
take their line from this map: every table header and every `key = value` line, by key path.
A key inside an inline table or a multi-line array is found through its nearest mapped parent;
the n-th `[[array.of.tables]]` is the key "tables[n]" (n from 0).
"""

from __future__ import annotations

import re

KeyPath = tuple[str, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))")
_ESCAPED_CHARS = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each key path defined in a valid TOML `text` to its 1-based line number."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    depth = 0  # open [ and { carried over from previous lines
    open_string: str | None = None  # a multi-line string delimiter carried over
    arrays: dict[KeyPath, int] = {}  # [[x]] headers seen so far, by path
    # TOML ends lines at "\n" only: str.splitlines() would also split at U+2028 and friends.
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.removesuffix("\r")
        position = 0
        if open_string is not None:
            end = _closing(line, open_string, 0)
            if end < 0:
                continue
            position, open_string = end + 3, None
        elif depth == 0:
            stripped = line.lstrip()
            if stripped.startswith("["):
                header = _parse_header(stripped)
                if header is not None:
                    for end in range(1, len(header) + 1):  # [a.b] also defines a
                        lines.setdefault(header[:end], number)
                    table = header
                    if stripped.startswith("[["):
                        index = arrays[header] = arrays.get(header, -1) + 1
                        table = (*header[:-1], f"{header[-1]}[{index}]")
                        lines[table] = number
                    continue
            parsed = _parse_key(line, len(line) - len(stripped))
            if parsed is not None:
                keys, position = parsed
                for end in range(1, len(keys) + 1):  # a.b.c = 1 also defines a and a.b
                    lines.setdefault(table + keys[:end], number)
        depth, open_string = _scan_value(line, position, depth)
    return lines


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one ("steps[2]" of an inline
    array is found through "steps")."""
    for end in range(len(path), 0, -1):
        prefix = path[:end]
        found = lines.get(prefix)
        if found is None and "[" in prefix[-1]:
            found = lines.get((*prefix[:-1], prefix[-1].partition("[")[0]))
        if found is not None:
            return found
    return None


def _parse_header(text: str) -> KeyPath | None:
    inner = text[2:] if text.startswith("[[") else text[1:]
    parsed = _parse_keys(inner, 0)
    if parsed is None:
        return None
    keys, end = parsed
    rest = inner[end:].lstrip()
    return keys if rest.startswith("]") else None


def _parse_key(line: str, start: int) -> tuple[KeyPath, int] | None:
    parsed = _parse_keys(line, start)
    if parsed is None:
        return None
    keys, end = parsed
    while end < len(line) and line[end] in " \t":
        end += 1
    if end < len(line) and line[end] == "=":
        return keys, end + 1
    return None


def _parse_keys(text: str, start: int) -> tuple[KeyPath, int] | None:
    """Parse a dotted key at `start`; return its parts and the index after it."""
    parts: list[str] = []
    i = start
    while True:
        while i < len(text) and text[i] in " \t":
            i += 1
        if i >= len(text):
            return None
        quote = text[i]
        if quote in "\"'":
            end = text.find(quote, i + 1)
            while quote == '"' and end > 0 and _escaped(text, end):
                end = text.find(quote, end + 1)
            if end < 0:
                return None
            raw = text[i + 1 : end]
            parts.append(_unescape(raw) if quote == '"' else raw)
            i = end + 1
        else:
            match = _BARE.match(text, i)
            if match is None:
                return None
            parts.append(match.group())
            i = match.end()
        j = i
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == ".":
            i = j + 1
            continue
        return tuple(parts), i


def _unescape(text: str) -> str:
    """The value of a TOML basic-string key's escapes (\\n, \\", \\u00e9, ...)."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1) or match.group(2)
        if code:
            return chr(int(code, 16))
        return _ESCAPED_CHARS.get(match.group(3), match.group(0))

    return _ESCAPE.sub(one, text)


def _closing(line: str, delimiter: str, start: int) -> int:
    """Where a multi-line string opened with `delimiter` ends in `line`, or -1."""
    end = line.find(delimiter, start)
    while delimiter == '"""' and end >= 0 and _escaped(line, end):
        end = line.find(delimiter, end + 1)
    return end


def _escaped(text: str, index: int) -> bool:
    backslashes = 0
    while index - 1 - backslashes >= 0 and text[index - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _scan_value(line: str, i: int, depth: int) -> tuple[int, str | None]:
    """Follow brackets and strings through the rest of a line."""
    while i < len(line):
        char = line[i]
        if char == "#":
            break
        if line.startswith(('"""', "'''"), i):
            delimiter = line[i : i + 3]
            end = _closing(line, delimiter, i + 3)
            if end < 0:
                return depth, delimiter
            i = end + 3
            continue
        if char in "\"'":
            end = line.find(char, i + 1)
            while char == '"' and end > 0 and _escaped(line, end):
                end = line.find(char, end + 1)
            i = len(line) if end < 0 else end + 1
            continue
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, None
