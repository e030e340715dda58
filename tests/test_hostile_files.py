"""Hostile policy files and directories: FIFOs, devices, directories and dangling links named
*.toml, huge files, huge numbers, extends chains thousands long, cycles, names of errors that
are never retried, broken quotas listed many times. Each is a `PolicyError` problem naming
its file (and key), reported once: never a hang, a crash or a cascade of follow-up problems."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import callpolicy
from callpolicy import FakeClock, PolicyError, Problem, Registry
from callpolicy import _model as model
from callpolicy.cli import main as cli

RegistryOf = Callable[..., Registry]
POSIX = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(os, "mkfifo"), reason="FIFOs, devices: POSIX only"
)
GOOD = '[endpoints.e]\nretry.on_exceptions = ["ConnectionError"]\n'


def outcome_within(load: Callable[[], Any], fifos: list[Path], seconds: float = 5.0) -> Any:
    """What `load()` returned or raised, run in a thread; fails the test if it is still
    running after `seconds` (then any reader blocked on one of `fifos` is let go)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(load())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:  # a writer lets a reader blocked in open() go, then EOF
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"loading did not return within {seconds:g}s")
    return outcome[0]


def the_problem(outcome: Any) -> Problem:
    assert isinstance(outcome, PolicyError), f"expected a PolicyError, got {outcome!r}"
    assert len(outcome.problems) == 1, str(outcome)
    return outcome.problems[0]


# -- 1. what is not a regular file is never read ---------------------------------------------


def fifo(at: Path, outside: Path) -> list[Path]:
    os.mkfifo(at)
    return [at]


def link_to_dev_zero(at: Path, outside: Path) -> list[Path]:
    os.symlink("/dev/zero", at)
    return []


def link_to_dev_null(at: Path, outside: Path) -> list[Path]:
    os.symlink("/dev/null", at)
    return []


def link_to_a_directory(at: Path, outside: Path) -> list[Path]:
    target = outside / "a_directory"
    target.mkdir()
    (target / "inner.toml").write_text(GOOD, encoding="utf-8")
    os.symlink(target, at)
    return []


def link_to_a_fifo(at: Path, outside: Path) -> list[Path]:
    target = outside / "pipe"
    os.mkfifo(target)
    os.symlink(target, at)
    return [target]


def unix_socket(at: Path, outside: Path) -> list[Path]:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(at))
    server.close()  # the socket file stays
    return []


def too_large(at: Path, outside: Path) -> list[Path]:
    at.write_text("#" * 1_000_000 + "\n" + GOOD, encoding="utf-8")
    return []


def link_to_a_large_file(at: Path, outside: Path) -> list[Path]:
    target = outside / "big.toml"
    target.write_text(GOOD + "#" * 1_000_001, encoding="utf-8")
    os.symlink(target, at)
    return []


def dangling_link(at: Path, outside: Path) -> list[Path]:
    os.symlink(outside / "gone.toml", at)
    return []


def link_loop(at: Path, outside: Path) -> list[Path]:
    os.symlink(outside / "loop_b.toml", at)
    os.symlink(at, outside / "loop_b.toml")
    return []


HOSTILE: dict[str, tuple[Callable[[Path, Path], list[Path]], str]] = {
    "a FIFO": (fifo, "not a regular file (a FIFO)"),
    "a link to /dev/zero": (link_to_dev_zero, "not a regular file (a character device)"),
    "a link to /dev/null": (link_to_dev_null, "not a regular file (a character device)"),
    "a link to a directory": (link_to_a_directory, "not a regular file (a directory)"),
    "a link to a FIFO": (link_to_a_fifo, "not a regular file (a FIFO)"),
    "a socket": (unix_socket, "not a regular file (a socket)"),
    "a file over 1,000,000 bytes": (too_large, "larger than 1,000,000 bytes"),
    "a link to a file over 1,000,000 bytes": (link_to_a_large_file, "larger than 1,000,000"),
    "a dangling link": (dangling_link, "cannot read"),
    "a link loop": (link_loop, "cannot read"),
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory, the working directory, holding `policies/` (with one good file)
    and `elsewhere/`, where links point."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "policies" / "good.toml").write_text(GOOD, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@POSIX
@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_entry_of_a_policy_directory_is_a_problem_at_once(
    project: Path, kind: str
) -> None:
    make, message = HOSTILE[kind]
    entry = project / "policies" / "x.toml"
    fifos = make(entry, project / "elsewhere")
    problem = the_problem(outcome_within(lambda: Registry(project / "policies"), fifos))
    assert Path(problem.path).name == "x.toml", problem  # the entry, not where it leads
    assert message in problem.message, problem


@POSIX
@pytest.mark.parametrize("kind", [kind for kind in HOSTILE if kind != "a link to a directory"])
def test_a_hostile_path_given_directly_is_a_problem_at_once(project: Path, kind: str) -> None:
    """(A link to a directory given directly is a directory to load, as any other.)"""
    make, message = HOSTILE[kind]
    entry = project / "elsewhere" / "y.toml"
    fifos = make(entry, project / "elsewhere")
    good = project / "policies" / "good.toml"
    problem = the_problem(outcome_within(lambda: Registry(good, entry), fifos))
    assert Path(problem.path).name == "y.toml", problem
    assert message in problem.message, problem


@POSIX
def test_load_and_check_return_at_once_on_a_fifo(
    project: Path, default_registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    fifos = fifo(project / "policies" / "x.toml", project)
    outcome = outcome_within(lambda: callpolicy.load(project / "policies"), fifos)
    assert "not a regular file (a FIFO)" in the_problem(outcome).message
    assert outcome_within(lambda: cli(["check", str(project / "policies")]), fifos) == 1
    assert "x.toml: not a regular file (a FIFO)" in capsys.readouterr().err


def test_a_file_of_exactly_1_000_000_bytes_is_read(tmp_path: Path) -> None:
    text = GOOD + "#" * (1_000_000 - len(GOOD) - 1) + "\n"
    assert len(text.encode()) == 1_000_000
    (tmp_path / "svc.toml").write_text(text, encoding="utf-8")
    assert Registry(tmp_path).names() == ["svc.e"]
    (tmp_path / "svc.toml").write_text(text + "\n", encoding="utf-8")
    assert "larger than" in the_problem(outcome_within(lambda: Registry(tmp_path), [])).message


# -- 2. numbers too large to mean anything ---------------------------------------------------

REDIS = "redis://localhost:6379/0"
# name: (policy file, the key reported)
TOO_LARGE: dict[str, tuple[str, str]] = {
    "attempts past 64 bits": (
        "[endpoints.e]\nstop.attempts = 99999999999999999999",
        "svc.e.stop.attempts",
    ),
    "attempts 1,000,001": ("[endpoints.e]\nstop.attempts = 1000001", "svc.e.stop.attempts"),
    "attempts one over the cap": (
        f"[endpoints.e]\nstop.attempts = {model.MAX_ATTEMPTS + 1}",
        "svc.e.stop.attempts",
    ),
    "a quota's slots over the cap": (
        f"[quotas.q]\nconcurrency = {model.MAX_SLOTS + 1}\n[endpoints.e]\nquotas = ['q']",
        "svc.q.concurrency",
    ),
    "inline slots past 64 bits": (
        "[endpoints.e]\nquotas = [{ concurrency = 99999999999999999999 }]",
        "svc.e.quotas[0].concurrency",
    ),
    "a multiplier over the cap": (
        f"[endpoints.e]\nwait.multiplier = {model.MAX_MULTIPLIER * 1.5}",
        "svc.e.wait.multiplier",
    ),
    "a multiplier of 1e300": ("[endpoints.e]\nwait.multiplier = 1e300", "svc.e.wait.multiplier"),
    "an integer multiplier past 64 bits": (
        "[endpoints.e]\nwait.multiplier = 99999999999999999999",
        "svc.e.wait.multiplier",
    ),
    "wait.initial of 169h": ('[endpoints.e]\nwait.initial = "169h"', "svc.e.wait.initial"),
    "wait.max of 10081m": ('[endpoints.e]\nwait.max = "10081m"', "svc.e.wait.max"),
    "a random wait.max of 604801s": (
        '[endpoints.e]\nwait = { strategy = "random", max = "604801s" }',
        "svc.e.wait.max",
    ),
    "a random wait.min of 169h": (
        '[endpoints.e]\nwait = { strategy = "random", min = "169h", max = "1s" }',
        "svc.e.wait.min",
    ),
    "a fixed wait of 604800001ms": (
        '[endpoints.e]\nwait = { strategy = "fixed", seconds = "604800001ms" }',
        "svc.e.wait.seconds",
    ),
    "a jitter of 168.001h": ('[endpoints.e]\nwait.jitter = "168.001h"', "svc.e.wait.jitter"),
    "a chain step of 169h": (
        '[endpoints.e]\nwait = { strategy = "chain", steps = [{ strategy = "fixed", '
        'seconds = "169h" }] }',
        "svc.e.wait.steps[0].seconds",
    ),
    "a hint cap of 169h": ('[endpoints.e]\nwait.hint_cap = "169h"', "svc.e.wait.hint_cap"),
    "a pause of 169h": ('[endpoints.e]\npause = { max = "169h" }', "svc.e.pause.max"),
    "a deadline of 169h": ('[endpoints.e]\nstop.deadline = "169h"', "svc.e.stop.deadline"),
    "a quota's max_wait of 169h": (
        '[quotas.q]\nlimit = "5/1s"\nmax_wait = "169h"\n[endpoints.e]\nquotas = ["q"]',
        "svc.q.max_wait",
    ),
    "an inline quota's guard of 169h": (
        '[endpoints.e]\nquotas = [{ limit = "5/1s", guard = "169h" }]',
        "svc.e.quotas[0].guard",
    ),
    "a storage timeout of 169h": (
        f'[quotas.q]\nlimit = "5/1s"\nstorage = "{REDIS}?timeout=169h"\n'
        '[endpoints.e]\nquotas = ["q"]',
        "svc.q.storage",
    ),
    "a rate per 169h": (
        '[quotas.q]\nlimit = "1/169h"\n[endpoints.e]\nquotas = ["q"]',
        "svc.q.limit",
    ),
    "a rate per 604801s, inline": (
        '[endpoints.e]\nquotas = ["1/604801s"]',
        "svc.e.quotas[0].limit",
    ),
    "a local limit per 169h": (
        f'[quotas.q]\nlimit = "5/1s"\nstorage = "{REDIS}"\non_unavailable = "local"\n'
        'local_limit = "1/169h"\n[endpoints.e]\nquotas = ["q"]',
        "svc.q.local_limit",
    ),
}


@pytest.mark.parametrize("case", TOO_LARGE)
def test_a_number_past_its_upper_bound_is_one_problem_naming_its_key(
    registry_of: RegistryOf, case: str
) -> None:
    text, key = TOO_LARGE[case]
    with pytest.raises(PolicyError) as raised:
        registry_of(svc=text)
    assert [p.key for p in raised.value.problems] == [key], str(raised.value)
    [problem] = raised.value.problems
    assert "at most" in problem.message, problem
    assert problem.line is not None


def test_the_caps_themselves_are_accepted(registry_of: RegistryOf) -> None:
    registry = registry_of(
        svc=f"""
        [quotas.slots]
        concurrency = {model.MAX_SLOTS}
        [quotas.week]
        limit = "1/168h"
        max_wait = "604800s"
        [endpoints.e]
        quotas = ["slots", "week", {{ limit = "5/1s", guard = "168h" }}]
        wait.strategy = "exponential"
        wait.initial = "168h"
        wait.multiplier = {model.MAX_MULTIPLIER}
        wait.max = "10080m"
        wait.jitter = "604800000ms"
        stop = {{ attempts = {model.MAX_ATTEMPTS}, deadline = "168h" }}
        """
    )
    policy = registry.get("svc.e")
    week = 7 * 24 * 3600.0
    assert policy.stop.attempts == model.MAX_ATTEMPTS
    assert policy.stop.deadline == week
    assert (policy.wait.initial, policy.wait.max, policy.wait.jitter) == (week, week, week)
    assert policy.wait.multiplier == model.MAX_MULTIPLIER
    slots, rate, inline = policy.quotas
    assert slots.concurrency == model.MAX_SLOTS
    assert rate.rate is not None and rate.rate.period == week
    assert rate.max_wait == week
    assert inline.guard == week


def test_the_attempts_cap_of_the_model_is_the_one_enforced(registry_of: RegistryOf) -> None:
    """The cap read from the model is the one enforced: cap accepted, cap + 1 refused."""
    cap = model.MAX_ATTEMPTS
    assert (
        registry_of(svc=f"[endpoints.e]\nstop.attempts = {cap}").get("svc.e").stop.attempts == cap
    )
    with pytest.raises(PolicyError, match=f"at most {cap:,}"):
        registry_of(svc=f"[endpoints.e]\nstop.attempts = {cap + 1}")


# -- 3. extends chains of any length, cycles reported once -----------------------------------


def chain_file(length: int) -> str:
    """e0 extends e1 extends ... e<length-1>; the root sets the retry rule, a deadline and a
    description; every 7th endpoint sets its own stop.attempts."""
    tables = []
    for n in range(length):
        lines = [f"[endpoints.e{n}]"]
        if n < length - 1:
            lines.append(f'extends = "e{n + 1}"')
        else:
            lines += [
                'description = "root"',
                'retry.on_exceptions = ["ConnectionError"]',
                'stop = { attempts = 2, deadline = "1h" }',
            ]
        if n % 7 == 0:
            lines.append(f"stop.attempts = {n + 3}")
        if n == 3:
            lines.append('description = "three"')
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def expected_attempts(n: int, length: int) -> int:
    """The nearest endpoint at or above n in the chain that sets stop.attempts wins."""
    for k in range(n, length):
        if k % 7 == 0:
            return k + 3
    return 2  # the root's


@pytest.mark.parametrize("length", [1_500, 5_000])
def test_a_long_extends_chain_loads_and_merges_key_by_key(tmp_path: Path, length: int) -> None:
    (tmp_path / "svc.toml").write_text(chain_file(length), encoding="utf-8")
    registry = outcome_within(lambda: Registry(tmp_path), [], seconds=60)
    assert isinstance(registry, Registry), registry
    assert len(registry.names()) == length
    for n in range(length):
        policy = registry.get(f"svc.e{n}")
        assert policy.stop.attempts == expected_attempts(n, length), n
        assert policy.stop.deadline == 3600.0, n  # kept under every stop.attempts override
        assert policy.retry.on_exceptions == (ConnectionError,), n
        assert policy.description == ("three" if n <= 3 else "root"), n


def cycle_names(message: str) -> list[str]:
    assert message.startswith("extends cycle: "), message
    return message.removeprefix("extends cycle: ").split(" -> ")


@pytest.mark.parametrize("length", [1_500, 5_000])
def test_a_long_extends_cycle_is_reported_once(tmp_path: Path, length: int) -> None:
    text = "\n".join(f'[endpoints.e{n}]\nextends = "e{(n + 1) % length}"' for n in range(length))
    (tmp_path / "svc.toml").write_text(text, encoding="utf-8")
    problem = the_problem(outcome_within(lambda: Registry(tmp_path), [], seconds=60))
    names = cycle_names(problem.message)
    assert len(names) == length + 1
    assert names[0] == names[-1]
    start = int(names[0].removeprefix("svc.e"))
    assert names == [f"svc.e{(start + k) % length}" for k in range(length + 1)]
    assert problem.key.endswith(".extends")
    assert problem.line is not None


def test_a_chain_leading_into_a_cycle_reports_the_cycle_once(tmp_path: Path) -> None:
    tail = [f'[endpoints.t{n}]\nextends = "t{n + 1}"' for n in range(1_000)]
    tail.append('[endpoints.t1000]\nextends = "c0"')
    cycle = [f'[endpoints.c{n}]\nextends = "c{(n + 1) % 500}"' for n in range(500)]
    (tmp_path / "svc.toml").write_text("\n".join(tail + cycle), encoding="utf-8")
    problem = the_problem(outcome_within(lambda: Registry(tmp_path), [], seconds=60))
    names = cycle_names(problem.message)
    assert len(names) == 501
    assert set(names) == {f"svc.c{n}" for n in range(500)}


# -- 4. cancellations are never retried ------------------------------------------------------


class MyCancelled(concurrent.futures.CancelledError):
    pass


@pytest.mark.parametrize(
    "name",
    [
        "concurrent.futures.CancelledError",
        "concurrent.futures._base.CancelledError",
        "?concurrent.futures.CancelledError",
        f"{__name__}.MyCancelled",
        "asyncio.CancelledError",
        "asyncio.exceptions.CancelledError",
        "KeyboardInterrupt",
        "SystemExit",
        "GeneratorExit",
    ],
)
def test_naming_an_error_that_is_never_retried_is_a_problem(
    registry_of: RegistryOf, name: str
) -> None:
    with pytest.raises(PolicyError) as raised:
        registry_of(svc=f'[endpoints.e]\nretry.on_exceptions = ["ConnectionError", "{name}"]')
    [problem] = raised.value.problems
    assert problem.key == "svc.e.retry.on_exceptions[1]"
    assert "never retried" in problem.message


CATCH_ALL = """
[endpoints.e]
retry.on_exceptions = ["Exception"]
retry.exception_predicate = "builtins.bool"
wait = { strategy = "fixed", seconds = "1s" }
stop.attempts = 5
"""
CANCELLATIONS = [concurrent.futures.CancelledError, MyCancelled]


class Calls:
    """Raises the next of `errors` at each call, counting the calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        raise self.errors[self.count - 1]


@pytest.mark.parametrize("before", [0, 1], ids=["first attempt", "after a retry"])
@pytest.mark.parametrize("cancelled", CANCELLATIONS)
def test_a_cancelled_future_is_never_retried_even_by_a_catch_all(
    registry_of: RegistryOf, clock: FakeClock, cancelled: type[BaseException], before: int
) -> None:
    error = cancelled()
    calls = Calls(*[ConnectionError("refused")] * before, error, ConnectionError("never"))
    fn = registry_of(svc=CATCH_ALL).policy("svc.e")(calls)
    with pytest.raises(cancelled) as raised:
        fn()
    assert raised.value is error
    assert calls.count == before + 1
    assert clock.sleeps == [1.0] * before


@pytest.mark.parametrize("before", [0, 1], ids=["first attempt", "after a retry"])
@pytest.mark.parametrize("cancelled", [*CANCELLATIONS, asyncio.CancelledError])
async def test_an_async_cancellation_is_never_retried_even_by_a_catch_all(
    registry_of: RegistryOf, clock: FakeClock, cancelled: type[BaseException], before: int
) -> None:
    error = cancelled()
    calls = Calls(*[ConnectionError("refused")] * before, error, ConnectionError("never"))

    @registry_of(svc=CATCH_ALL).policy("svc.e")
    async def fn() -> None:
        calls()

    with pytest.raises(cancelled) as raised:
        await fn()
    assert raised.value is error
    assert calls.count == before + 1
    assert clock.sleeps == [1.0] * before


# -- 5. a broken quota is reported once, where it is written ---------------------------------

BROKEN_QUOTAS = {
    "a bad limit": ('[quotas.app]\nlimit = "abc"', "svc.app.limit"),
    "two kinds": ('[quotas.app]\nlimit = "5/1s"\nconcurrency = 2', "svc.app"),
    "zero slots": ("[quotas.app]\nconcurrency = 0", "svc.app.concurrency"),
    "an unknown key": ('[quotas.app]\nlimit = "5/1s"\nmax_wiat = "1s"', "svc.app.max_wiat"),
    "not a table": ('[quotas]\napp = "5/1s"', "svc.app"),
}
LISTED_BY = {
    "two endpoints": '[endpoints.a]\nquotas = ["app"]\n[endpoints.b]\nquotas = ["app", "5/1s"]',
    "the defaults of two endpoints": '[defaults]\nquotas = ["app"]\n[endpoints.a]\n[endpoints.b]',
}


@pytest.mark.parametrize("listed_by", LISTED_BY)
@pytest.mark.parametrize("broken", BROKEN_QUOTAS)
def test_a_broken_quota_listed_in_its_file_is_reported_once(
    registry_of: RegistryOf, broken: str, listed_by: str
) -> None:
    table, key = BROKEN_QUOTAS[broken]
    with pytest.raises(PolicyError) as raised:
        registry_of(svc=f"{table}\n{LISTED_BY[listed_by]}\n")
    assert [p.key for p in raised.value.problems] == [key], str(raised.value)
    assert "no quota named" not in str(raised.value)


@pytest.mark.parametrize("broken", BROKEN_QUOTAS)
def test_a_broken_quota_listed_from_another_file_is_reported_once(
    registry_of: RegistryOf, broken: str
) -> None:
    table, key = BROKEN_QUOTAS[broken]
    with pytest.raises(PolicyError) as raised:
        registry_of(
            svc=table,
            other='[endpoints.x]\nquotas = ["svc.app"]\n[endpoints.y]\nquotas = ["svc.app"]',
        )
    assert [p.key for p in raised.value.problems] == [key], str(raised.value)
    assert "no quota named" not in str(raised.value)


@pytest.mark.parametrize("broken", BROKEN_QUOTAS)
def test_a_broken_pool_member_is_reported_once(registry_of: RegistryOf, broken: str) -> None:
    table, key = BROKEN_QUOTAS[broken]
    with pytest.raises(PolicyError) as raised:
        registry_of(
            svc=f"""{table}
[quotas.good]
limit = "5/1s"
[quotas.keys]
pool = ["app", "good"]
[quotas.only_broken]
pool = ["app"]
[endpoints.a]
quotas = ["keys"]
[endpoints.b]
quotas = ["only_broken"]
"""
        )
    assert [p.key for p in raised.value.problems] == [key], str(raised.value)
    assert "no quota named" not in str(raised.value)


def test_a_name_that_does_not_exist_is_still_reported_with_a_did_you_mean(
    registry_of: RegistryOf,
) -> None:
    with pytest.raises(PolicyError) as raised:
        registry_of(
            svc="""
            [quotas.app]
            limit = "abc"
            [quotas.search]
            limit = "5/1s"
            [endpoints.a]
            quotas = ["app", "serch"]
            [endpoints.b]
            quotas = ["app"]
            """,
            other='[endpoints.x]\nquotas = ["svc.app", "svc.serch"]',
        )
    shown = {(p.key, p.message) for p in raised.value.problems}
    assert shown == {
        ("svc.app.limit", 'must be a rate "N/period" like "180/30s" or "20/s" (got \'abc\')'),
        ("svc.a.quotas[1]", "no quota named 'svc.serch'; did you mean 'svc.search'?"),
        ("other.x.quotas[1]", "no quota named 'svc.serch'; did you mean 'svc.search'?"),
    }, str(raised.value)


def test_a_typo_of_a_broken_quota_suggests_the_broken_quota(registry_of: RegistryOf) -> None:
    """The name exists (its table has a mistake of its own): did-you-mean still offers it."""
    with pytest.raises(PolicyError) as raised:
        registry_of(
            svc="""
            [quotas.app]
            limit = "abc"
            [quotas.search]
            limit = "5/1s"
            [endpoints.a]
            quotas = ["apq"]
            """
        )
    messages = {p.key: p.message for p in raised.value.problems}
    assert messages.keys() == {"svc.app.limit", "svc.a.quotas[0]"}, str(raised.value)
    assert messages["svc.a.quotas[0]"] == "no quota named 'svc.apq'; did you mean 'svc.app'?"


# -- 6. an unknown extends target ------------------------------------------------------------


@pytest.mark.parametrize("table", ["endpoints.e", "defaults"])
def test_an_unknown_extends_target_with_nothing_close_lists_what_exists(
    registry_of: RegistryOf, table: str
) -> None:
    extra = "[endpoints.e]\n" if table == "defaults" else ""
    with pytest.raises(PolicyError) as raised:
        registry_of(
            svc=f'[{table}]\nextends = "zzqqxxww"\n{extra}[endpoints.tracks]\n',
            spotify="[endpoints.albums]\n",
        )
    [problem] = raised.value.problems
    assert problem.key == f"svc.{table.removeprefix('endpoints.')}.extends"
    assert problem.message.startswith("no policy named 'zzqqxxww' to extend (known: ")
    for name in ("svc.tracks", "spotify.albums", "http.idempotent"):
        assert name in problem.message
    assert "did you mean" not in problem.message


@pytest.mark.parametrize(
    ("target", "meant"),
    [
        ("trakcs", "svc.tracks"),
        ("svc.trakcs", "svc.tracks"),
        ("spotfy.albums", "spotify.albums"),
        ("http.idempotnt", "http.idempotent"),
    ],
)
def test_an_unknown_extends_target_close_to_a_name_says_did_you_mean(
    registry_of: RegistryOf, target: str, meant: str
) -> None:
    with pytest.raises(PolicyError) as raised:
        registry_of(
            svc=f'[endpoints.e]\nextends = "{target}"\n[endpoints.tracks]\n',
            spotify="[endpoints.albums]\n",
        )
    [problem] = raised.value.problems
    assert problem.message == f"no policy named {target!r} to extend; did you mean {meant!r}?"


# -- 7. the shipped http.* bases -------------------------------------------------------------

SHIPPED_USERS = """
[endpoints.get]
extends = "http.idempotent"
[endpoints.post]
extends = "http.network_only"
[endpoints.poll]
extends = "http.polling"
stop.attempts = 7
"""


def test_the_shipped_http_bases_are_extended_from_a_directory_without_http_toml(
    registry_of: RegistryOf,
) -> None:
    registry = registry_of(svc=SHIPPED_USERS)
    assert registry.names() == ["svc.get", "svc.poll", "svc.post"]
    get, post, poll = (registry.get(f"svc.{n}") for n in ("get", "post", "poll"))
    assert (get.stop.attempts, get.stop.deadline) == (5, 120.0)
    assert get.retry.on_status == {429, 502, 503, 504}
    assert ConnectionError in get.retry.on_exceptions
    assert get.wait.hints == (("Retry-After", "retry-after"),)
    assert post.retry.on_status == frozenset()
    assert post.retry.on_exceptions == get.retry.on_exceptions
    assert (poll.stop.attempts, poll.stop.deadline) == (7, 1800.0)
    assert (poll.wait.initial, poll.wait.multiplier) == (5.0, 1.5)


def test_the_shipped_http_bases_are_not_policies(
    registry_of: RegistryOf, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    registry = registry_of(svc=SHIPPED_USERS)
    with pytest.raises(PolicyError, match=r"no policy named 'http\.idempotent'"):
        registry.get("http.idempotent")
    with pytest.raises(PolicyError):
        registry.policy("http.idempotent")(lambda: None)()
    assert cli(["explain", "--path", str(tmp_path)]) == 0
    explained = [
        line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:1] != " "
    ]
    assert explained == ["svc.get", "svc.poll", "svc.post"]
    assert cli(["check", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("ok: 3 policies")


def test_a_defaults_table_extends_a_shipped_base(registry_of: RegistryOf) -> None:
    registry = registry_of(svc='[defaults]\nextends = "http.idempotent"\n[endpoints.a]\n')
    assert registry.names() == ["svc.a"]
    assert registry.get("svc.a").stop.attempts == 5


def test_a_users_own_http_toml_replaces_the_shipped_one(registry_of: RegistryOf) -> None:
    registry = registry_of(
        http="""
        [endpoints.idempotent]
        retry.on_status = [503]
        stop.attempts = 9
        [endpoints.mine]
        stop.attempts = 4
        """,
        svc='[endpoints.get]\nextends = "http.idempotent"\n',
    )
    assert registry.names() == ["http.idempotent", "http.mine", "svc.get"]
    get = registry.get("svc.get")
    assert get.stop.attempts == 9
    assert get.stop.deadline is None  # nothing of the shipped idempotent is left
    assert get.retry.on_status == {503}
    assert registry.get("http.mine").stop.attempts == 4


def test_with_a_users_http_toml_the_shipped_bases_it_lacks_are_gone(
    registry_of: RegistryOf,
) -> None:
    with pytest.raises(PolicyError) as raised:
        registry_of(
            http="[endpoints.idempotent]\nstop.attempts = 9\n",
            svc='[endpoints.poll]\nextends = "http.polling"\n',
        )
    [problem] = raised.value.problems
    assert problem.key == "svc.poll.extends"
    assert "no policy named 'http.polling'" in problem.message
