from __future__ import annotations

import sys

from callpolicy._config.keymap import key_lines, line_of

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

TEXT = '''\
# comment = 1
[defaults]
"quoted.key" = 1
plain . dotted = 2
description = """
fake = "not a key"
"""
list = [
  { inner = 1 },
]
'lit' = 'x' # trailing [comment]

[endpoints."my-ep"]
wait = { strategy = "fixed", seconds = "1s" }
stop.attempts = 3
'''


def test_the_text_is_valid_toml() -> None:
    assert tomllib.loads(TEXT)["defaults"]["quoted.key"] == 1


def test_keys_map_to_the_line_that_defines_them() -> None:
    lines = key_lines(TEXT)
    assert lines[("defaults",)] == 2
    assert lines[("defaults", "quoted.key")] == 3
    assert lines[("defaults", "plain", "dotted")] == 4
    assert lines[("defaults", "plain")] == 4
    assert lines[("defaults", "description")] == 5
    assert lines[("defaults", "list")] == 8
    assert lines[("defaults", "lit")] == 11
    assert lines[("endpoints", "my-ep")] == 13
    assert lines[("endpoints",)] == 13
    assert lines[("endpoints", "my-ep", "stop", "attempts")] == 15


def test_text_inside_multiline_strings_and_arrays_is_not_a_key() -> None:
    lines = key_lines(TEXT)
    assert ("defaults", "fake") not in lines
    assert ("inner",) not in lines and ("defaults", "inner") not in lines


def test_keys_inside_inline_tables_take_the_line_of_their_parent() -> None:
    lines = key_lines(TEXT)
    assert line_of(lines, ("endpoints", "my-ep", "wait", "seconds")) == 14
    assert line_of(lines, ("defaults", "list", "inner")) == 8
    assert line_of(lines, ("nowhere",)) is None
