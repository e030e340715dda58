"""Storage URLs in policy files: "memory://", or a Redis URL (one server, a Sentinel group or
a Cluster: see _model/redis_url.py) with its query options, read at load. Messages never
show a password."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from callpolicy._config.values import UnitError, parse_duration
from callpolicy._model import MEMORY, REDIS_SCHEMES, Storage, redis_address
from callpolicy._text import redacted, shown_value, suggestion

_PREFIX = re.compile(r"[!-z|~]{1,100}", re.ASCII)  # printable, no space, { or }: a hash tag
STORAGE_OPTIONS = ("prefix", "timeout")


def parse_storage(value: object) -> Storage:
    """ "memory://", or a Redis URL ("redis://[:password@]host:port/db", "rediss://" for TLS;
    "redis+sentinel://", "redis+cluster://", see _model/redis_url.py) with query options
    ?prefix= and ?timeout=. Messages never show a password."""
    expected = (
        'must be "memory://", "redis://host:port/db", "redis+sentinel://host:port/service" '
        'or "redis+cluster://host:port"'
    )
    if not isinstance(value, str):
        raise UnitError(f"{expected} (got {shown_value(value)})")
    if value.startswith(MEMORY):
        return Storage()
    shown = shown_value(redacted(value))
    if not value.startswith(tuple(f"{scheme}://" for scheme in REDIS_SCHEMES)):
        raise UnitError(f"{expected} (got {shown})")
    if "#" in value or "@" in value.partition("://")[2].partition("@")[2]:
        raise UnitError(
            f"{expected} (got {shown}: a password with @, #, ? or / in it must be "
            "percent-encoded, e.g. %40 for @)"
        )
    try:
        parts = urlsplit(value)
        if "," not in parts.netloc:  # several hosts ("a:1,b:2") have no single port
            parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise UnitError(f"{expected} (got {shown}: not a valid URL)") from None
    if not parts.hostname:
        raise UnitError(f"{expected} (got {shown}: no host)")
    try:
        redis_address(parts._replace(query="", fragment="").geturl())
    except ValueError as exc:
        raise UnitError(f"{expected} (got {shown}: {exc})") from None
    options: dict[str, str] = {}
    for key, option in parse_qsl(parts.query):  # a blank option is left at its default
        if key not in STORAGE_OPTIONS:
            hint = suggestion(key, STORAGE_OPTIONS, "known options")
            raise UnitError(f"has an unknown option {key!r}{hint} (in {shown})")
        if key in options:
            raise UnitError(f"sets option {key!r} twice (in {shown})")
        options[key] = option
    prefix = options.get("prefix", "callpolicy")
    if not _PREFIX.fullmatch(prefix):
        raise UnitError(
            "option prefix must be 1-100 printable characters, no space, { or } "
            f"(got {shown_value(prefix)})"
        )
    timeout = 0.25
    if "timeout" in options:
        try:
            timeout = parse_duration(options["timeout"], allow_zero=False)
        except UnitError as exc:
            raise UnitError(f"option timeout {exc}") from None
    return Storage(parts._replace(query="", fragment="").geturl(), prefix, timeout)
