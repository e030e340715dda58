"""No password or token of a storage URL ever shows: not in load errors, reprs, `explain`, the
command line, QuotaUnavailable or the warning logged when the server is unreachable; not even
a part of a password the URL could not be read around (an unencoded '#', '?', '/' or '@')."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from callpolicy import PolicyError, QuotaUnavailable, Registry
from callpolicy._explain import explain
from callpolicy.cli import main as cli

RegistryOf = Callable[..., Registry]
# Every secret below is s3cr3t, or holds "cr3t" (encoded, or with a user name before it).
LEAKS = ("s3cr3t", "cr3t", "s3%23", "s3#")


def assert_hidden(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} shown in: {text}"


def policy_file(url: str, mode: str = "fail-closed") -> str:
    local = 'local_limit = "5/1s"' if mode == "local" else ""
    return f"""
[quotas.q]
limit = "5/1s"
storage = "{url}"
on_unavailable = "{mode}"
{local}
[endpoints.e]
quotas = ["q", {{ limit = "9/1s", storage = "{url}" }}]
"""


LOADING = {
    "a user and a password": "redis://user:s3cr3t@cache.internal:6379/0",
    "TLS, a password and a prefix": "rediss://:s3cr3t@cache.internal/0?prefix=a",
    "an IPv6 host": "redis://:s3cr3t@[::1]:6379/0",
    "a percent-encoded password": "redis://:s3%23cr3t@cache.internal/0",
    "a token as the user name": "redis://s3cr3t@cache.internal:6379/0",
    "a password and a timeout": "redis://:s3cr3t@cache.internal:6379/0?timeout=100ms&prefix=b",
    "a user name holding the password": "redis://us3cr3t:s3cr3t@cache.internal/2",
}


@pytest.fixture
def policies(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    def write(text: str) -> Path:
        (tmp_path / "svc.toml").write_text(text, encoding="utf-8")
        return tmp_path

    yield write


@pytest.mark.parametrize("url", LOADING.values(), ids=LOADING.keys())
def test_a_loaded_storage_url_never_shows_its_secret(
    policies: Callable[[str], Path], capsys: pytest.CaptureFixture[str], url: str
) -> None:
    folder = policies(policy_file(url))
    registry = Registry(folder)
    policy = registry.get("svc.e")
    named, inline = policy.quotas
    assert named.storage.url.startswith(url.split("?", maxsplit=1)[0])  # kept, to connect with
    for quota in (named, inline):
        assert_hidden(repr(quota))
        assert_hidden(str(quota.storage))
        assert_hidden(repr(quota.storage))
        assert "@" in str(quota.storage)  # where the secret was, *** stands
    assert_hidden(repr(policy))
    assert_hidden(repr(registry.quotas()))
    assert_hidden(explain(policy))
    assert "cache.internal" in explain(policy) or "[::1]" in explain(policy)
    assert cli(["explain", "--path", str(folder)]) == 0
    assert cli(["explain", "svc.e", "--path", str(folder)]) == 0
    assert cli(["check", str(folder)]) == 0
    shown = capsys.readouterr()
    assert "svc.e" in shown.out
    assert_hidden(shown.out + shown.err)


REFUSED = {
    "a port that is not a number": "redis://:s3cr3t@host:notaport/0",
    "a port out of range": "redis://user:s3cr3t@host:99999/0",
    "a misspelt option": "redis://:s3cr3t@host/0?prefx=a",
    "a timeout that is not a duration": "redis://:s3cr3t@host/0?timeout=soon",
    "a zero timeout": "redis://:s3cr3t@host/0?timeout=0s",
    "an option set twice": "redis://:s3cr3t@host/0?prefix=a&prefix=b",
    "no host": "redis://:s3cr3t@/0",
    "another scheme": "http://user:s3cr3t@host/0",
    "a password as an option": "redis://host/0?password=s3cr3t",
    "a token as an unknown option": "redis://host/0?token=s3cr3t&prefix=a",
    "an unclosed IPv6 bracket": "redis://:s3cr3t@[::1/0",
    "a percent-encoded password and a bad port": "redis://:s3%23cr3t@host:x/0",
}


@pytest.mark.parametrize("url", REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_storage_url_never_shows_its_secret(
    policies: Callable[[str], Path], capsys: pytest.CaptureFixture[str], url: str
) -> None:
    folder = policies(policy_file(url))
    with pytest.raises(PolicyError) as raised:
        Registry(folder)
    assert any(p.key.endswith("storage") for p in raised.value.problems), str(raised.value)
    assert_hidden(str(raised.value))
    assert_hidden(repr(raised.value.problems))
    assert cli(["check", str(folder)]) == 1
    assert cli(["explain", "--path", str(folder)]) == 1
    shown = capsys.readouterr()
    assert "storage" in shown.err
    assert_hidden(shown.out + shown.err)


def after_schemes(text: str) -> list[str]:
    """What follows each "://" in `text`, up to a space or a quote."""
    return re.findall(r"://([^\s'\"]*)", text)


UNENCODED = {
    "#": "redis://:pa#ss@h/0",
    "?": "redis://:pa?ss@h/0",
    "/": "redis://:pa/ss@h/0",
    "@": "redis://:pa@ss@h/0",
    "# with a user": "redis://user:pa#ss@h:6379/0",
    "# in a token user name": "redis://pa#ss@h/0",
}


@pytest.mark.parametrize("url", UNENCODED.values(), ids=UNENCODED.keys())
def test_a_password_with_an_unencoded_delimiter_never_shows_a_part(
    policies: Callable[[str], Path], capsys: pytest.CaptureFixture[str], url: str
) -> None:
    folder = policies(policy_file(url))
    try:
        registry = Registry(folder)
    except PolicyError as refused:
        texts = [str(refused), repr(refused.problems)]
    else:  # read as some URL after all: what is shown of it hides the password
        policy = registry.get("svc.e")
        texts = [repr(policy), explain(policy), *(str(q.storage) for q in policy.quotas)]
    cli(["check", str(folder)])
    cli(["explain", "--path", str(folder)])
    shown = capsys.readouterr()
    texts += [shown.out, shown.err]
    assert "://" in texts[0]  # the URL is shown, without its secret
    for text in texts:
        for rest in after_schemes(text):
            assert "pa" not in rest and "ss" not in rest, text


# -- at run time: the server is not there ----------------------------------------------------

DOWN = {
    "a user and a password": "redis://user:s3cr3t@127.0.0.1:1/0?timeout=100ms",
    "a password": "redis://:s3cr3t@127.0.0.1:1/0?timeout=100ms&prefix=p",
    "a token as the user name": "redis://s3cr3t@127.0.0.1:1/0?timeout=100ms",
    "a percent-encoded password": "redis://:s3%23cr3t@127.0.0.1:1/0?timeout=100ms",
    "TLS": "rediss://:s3cr3t@127.0.0.1:1/0?timeout=100ms",
}


def ran() -> str:
    return "ran"


def assert_records_hidden(caplog: pytest.LogCaptureFixture) -> None:
    records = [r for r in caplog.records if r.name == "callpolicy"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in records]
    assert "unreachable" in warnings[0].getMessage()
    assert "127.0.0.1:1" in warnings[0].getMessage()
    for record in records:
        assert_hidden(record.getMessage())
        assert_hidden(repr(vars(record)))  # the structured fields too


def assert_error_hidden(error: QuotaUnavailable) -> None:
    assert error.policy == "svc.e"
    assert "127.0.0.1:1" in str(error)
    for text in (str(error), repr(error), str(error.storage), str(error.detail)):
        assert_hidden(text)
    assert_hidden("".join(traceback.format_exception(error)))  # its causes too


@pytest.mark.parametrize("url", DOWN.values(), ids=DOWN.keys())
def test_an_unreachable_server_is_reported_without_the_secret(
    registry_of: RegistryOf, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    fn = registry_of(svc=policy_file(url)).policy("svc.e")(ran)
    for _ in range(3):
        with pytest.raises(QuotaUnavailable) as raised:
            fn()
        assert_error_hidden(raised.value)
    assert_records_hidden(caplog)


@pytest.mark.parametrize("url", DOWN.values(), ids=DOWN.keys())
async def test_an_unreachable_server_is_reported_without_the_secret_async(
    registry_of: RegistryOf, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")

    @registry_of(svc=policy_file(url)).policy("svc.e")
    async def fn() -> str:
        return "ran"

    for _ in range(3):
        with pytest.raises(QuotaUnavailable) as raised:
            await fn()
        assert_error_hidden(raised.value)
    assert_records_hidden(caplog)


@pytest.mark.parametrize("mode", ["fail-open", "local"])
@pytest.mark.parametrize("url", DOWN.values(), ids=DOWN.keys())
def test_the_warning_of_a_quota_that_lets_calls_through_hides_the_secret(
    registry_of: RegistryOf, caplog: pytest.LogCaptureFixture, url: str, mode: str
) -> None:
    caplog.set_level(logging.INFO, logger="callpolicy")
    # The inline quota of policy_file fails closed: list only the named one here.
    text = policy_file(url, mode).replace(', { limit = "9/1s", storage = "' + url + '" }', "")
    fn = registry_of(svc=text).policy("svc.e")(ran)
    assert [fn() for _ in range(3)] == ["ran"] * 3
    assert_records_hidden(caplog)
