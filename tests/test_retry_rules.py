"""Retry rules per cause (`[[retry.rules]]`): the first rule that matches an outcome decides,
each counts its own attempts and waits its own wait, all within `stop.attempts` and
`stop.deadline`; sync and async alike, under a fake clock."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from typing import Any

import pytest

from callpolicy import (
    AccountLimit,
    FakeClock,
    PolicyError,
    Registry,
    Retry,
    RetryExhausted,
    RetryRule,
    SleepEvent,
    add_sleep_hook,
)

RegistryOf = Callable[..., Registry]


class Response:
    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status_code
        self.headers = headers or {}


class PostResponse(Response):
    """A response to a POST (its request says so): not safe to send again."""

    class request:  # noqa: N801 - shaped like requests' PreparedRequest
        method = "POST"
        headers: dict[str, str] = {}  # noqa: RUF012


def script(*outcomes: Any) -> Callable[[], Any]:
    """Returns (or raises) each of `outcomes` in turn, then "ok"."""
    replies = iter([*outcomes, "ok"])

    def call() -> Any:
        outcome = next(replies)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call


def run(registry: Registry, name: str, fn: Callable[[], Any], flavour: str) -> Any:
    """Call `fn` under policy `name`, as a plain function or as a coroutine function."""
    if flavour == "sync":
        return registry.policy(name)(fn)()

    async def coroutine() -> Any:
        return fn()

    return asyncio.run(registry.policy(name)(coroutine)())


FLAVOURS = pytest.mark.parametrize("flavour", ["sync", "async"])

SPOTIFY = """
[endpoints.tracks]
retry.on_status = ["5xx"]                 # the plain keys: the last rule
wait = { strategy = "fixed", seconds = "10s" }
stop = { deadline = "2m", attempts = 12 }

[[endpoints.tracks.retry.rules]]
name = "network"
on_exceptions = ["ConnectionError", "TimeoutError"]
wait = { strategy = "none" }
attempts = 3

[[endpoints.tracks.retry.rules]]
name = "throttled"
on_status = [429]
wait = { strategy = "fixed", seconds = "1s", server_hints = ["Retry-After"], jitter = "3s" }
attempts = 4
"""


@FLAVOURS
def test_each_rule_waits_its_own_wait(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(spotify=SPOTIFY)
    fn = script(ConnectionError("reset"), Response(503), TimeoutError("slow"))
    assert run(registry, "spotify.tracks", fn, flavour) == "ok"
    assert clock.sleeps == [0.0, 10.0, 0.0]  # network at once, 5xx the policy's wait


@FLAVOURS
def test_each_rule_counts_its_own_attempts(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(spotify=SPOTIFY)
    last = ConnectionError("third")
    throttled = Response(429, {"Retry-After": "1"})
    fn = script(ConnectionError("1"), throttled, ConnectionError("2"), throttled, throttled, last)
    with pytest.raises(ConnectionError) as raised:
        run(registry, "spotify.tracks", fn, flavour)
    assert raised.value is last  # the third network error: the rule's attempts = 3
    assert len(clock.sleeps) == 5  # 6 attempts in all, of stop.attempts = 12


@FLAVOURS
def test_a_rule_out_of_attempts_on_a_returned_value_says_which(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(spotify=SPOTIFY)
    answers = [Response(429, {"Retry-After": "2"}) for _ in range(4)]
    with pytest.raises(RetryExhausted) as raised:
        run(registry, "spotify.tracks", script(*answers), flavour)
    assert raised.value.last_result is answers[-1]
    assert raised.value.attempts == 4
    assert "retry rule 'throttled': attempts = 4 reached" in str(raised.value)
    assert len(clock.sleeps) == 3
    assert all(2.0 <= s <= 5.0 for s in clock.sleeps)  # the hint, plus jitter up to 3 s


@FLAVOURS
def test_the_plain_keys_out_of_attempts_say_stop_attempts(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(spotify=SPOTIFY.replace("attempts = 12", "attempts = 4"))
    answers = [Response(503) for _ in range(4)]
    with pytest.raises(RetryExhausted, match=r"stop\.attempts = 4 reached"):
        run(registry, "spotify.tracks", script(*answers), flavour)
    assert clock.sleeps == [10.0, 10.0, 10.0]


@FLAVOURS
def test_the_first_matching_rule_decides(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    rules = """
    [endpoints.{name}]
    stop.attempts = 5
    [[endpoints.{name}.retry.rules]]
    on_exceptions = ["{first}"]
    wait = {{ strategy = "fixed", seconds = "1s" }}
    [[endpoints.{name}.retry.rules]]
    on_exceptions = ["{second}"]
    wait = {{ strategy = "fixed", seconds = "2s" }}
    """
    registry = registry_of(
        api=rules.format(name="broad", first="OSError", second="ConnectionError")
        + rules.format(name="narrow", first="ConnectionError", second="OSError")
    )
    run(registry, "api.broad", script(ConnectionError(), OSError()), flavour)
    run(registry, "api.narrow", script(ConnectionError(), OSError()), flavour)
    assert clock.sleeps == [1.0, 1.0, 1.0, 2.0]


@FLAVOURS
def test_a_rule_that_matches_but_may_not_repeat_is_final(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    """A POST's 503 is matched by the first rule, which may not send it again: the later
    rule, or the plain keys, never see it (the first match decides)."""
    registry = registry_of(
        api="""
        [endpoints.post]
        retry.on_status = [503]
        retry.idempotent = false
        [[endpoints.post.retry.rules]]
        on_status = [503]
        [[endpoints.post.retry.rules]]
        result_predicate = "builtins.bool"
        """
    )
    answer = PostResponse(503)
    assert run(registry, "api.post", script(answer), flavour) is answer
    assert clock.sleeps == []


POLL_AND_STATUS = """
[endpoints.plain]                          # one table: on_status before until, as ever
stop.attempts = 3
wait.strategy = "none"
retry.on_status = [503]
retry.until = { field = "state", equals = "done" }

[endpoints.rules]                          # the poll rule written first
stop.attempts = 3
wait.strategy = "none"
[[endpoints.rules.retry.rules]]
name = "poll"
until = { field = "state", equals = "done" }
[[endpoints.rules.retry.rules]]
name = "unavailable"
on_status = [503]

[endpoints.rule_and_plain]                 # the status in the plain keys
stop.attempts = 3
wait.strategy = "none"
retry.on_status = [503]
[[endpoints.rule_and_plain.retry.rules]]
name = "poll"
until = { field = "state", equals = "done" }
"""


@FLAVOURS
@pytest.mark.parametrize("endpoint", ["plain", "rules", "rule_and_plain"])
def test_a_posts_status_is_never_polled_by_an_earlier_value_rule(
    registry_of: RegistryOf, clock: FakeClock, flavour: str, endpoint: str
) -> None:
    """A status some cause names is judged by the status causes alone: the POST's 503 is
    final (its rule may not send it again), not "not done yet" to the poll rule."""
    registry = registry_of(api=POLL_AND_STATUS)
    answer = PostResponse(503)
    calls: list[Any] = []
    fn = script(answer, {"state": "done"})

    def counted() -> Any:
        calls.append(1)
        return fn()

    assert run(registry, f"api.{endpoint}", counted, flavour) is answer
    assert (len(calls), clock.sleeps) == (1, [])


@FLAVOURS
def test_a_status_the_plain_keys_name_waits_their_wait_not_the_poll_rules(
    registry_of: RegistryOf, clock: FakeClock, flavour: str, events: list[SleepEvent]
) -> None:
    registry = registry_of(
        clari="""
        [defaults]
        retry.on_status = [429, "5xx"]
        wait = { strategy = "exponential", initial = "1s", server_hints = ["Retry-After"] }
        stop.attempts = 6

        [endpoints.export_status]
        [[endpoints.export_status.retry.rules]]
        name = "poll"
        until = { field = "status", in = ["COMPLETED", "FAILED"] }
        wait = { strategy = "fixed", seconds = "50ms" }
        """
    )
    done = {"status": "COMPLETED"}
    fn = script(Response(429, {"Retry-After": "30"}), Response(503), {"status": "RUNNING"}, done)
    assert run(registry, "clari.export_status", fn, flavour) is done
    assert clock.sleeps == [30.0, 2.0, 0.05]  # the hint, the backoff, then the poll's wait
    assert [(e.rule, e.trigger) for e in events] == [
        (None, "status"),
        (None, "status"),
        ("poll", "result"),
    ]


class PostJob(PostResponse):
    """A POST's response whose status no cause names, read by a value rule."""

    def __init__(self, status_code: int, state: str) -> None:
        super().__init__(status_code)
        self.state = state


@FLAVOURS
def test_a_value_rule_never_sends_a_post_again_unless_the_policy_says_it_may(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    poll = """
    [endpoints.{name}]
    wait.strategy = "none"
    {extra}
    [[endpoints.{name}.retry.rules]]
    name = "poll"
    while = {{ field = "state", equals = "running" }}
    """
    registry = registry_of(
        api=poll.format(name="post", extra="")
        + poll.format(name="idempotent", extra="retry.idempotent = true")
    )
    running = PostJob(202, "running")
    assert run(registry, "api.post", script(running), flavour) is running
    assert clock.sleeps == []
    assert run(registry, "api.idempotent", script(running), flavour) == "ok"
    assert run(registry, "api.post", script({"state": "running"}), flavour) == "ok"  # no HTTP
    assert clock.sleeps == [0.0, 0.0]


@FLAVOURS
def test_a_refused_post_is_retried_on_the_hint_its_rule_names(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(
        api="""
        [endpoints.post]
        [[endpoints.post.retry.rules]]
        on_status = [429]
        wait = { strategy = "fixed", seconds = "1s", server_hints = ["X-Wait"] }
        """
    )
    refused = PostResponse(429, {"X-Wait": "7"})
    assert run(registry, "api.post", script(refused), flavour) == "ok"
    assert clock.sleeps == [7.0]
    bare = PostResponse(429, {"Retry-After": "7"})  # not the header this rule reads
    assert run(registry, "api.post", script(bare), flavour) is bare


@FLAVOURS
def test_an_outcome_no_rule_matches_is_final(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(spotify=SPOTIFY)
    with pytest.raises(KeyError):
        run(registry, "spotify.tracks", script(KeyError("x")), flavour)
    missing = Response(404)
    assert run(registry, "spotify.tracks", script(missing), flavour) is missing
    assert clock.sleeps == []


@FLAVOURS
def test_give_up_is_shared_by_every_rule(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        retry.give_up = [{ status = 429 }]
        [[endpoints.get.retry.rules]]
        on_status = [429]
        """
    )
    with pytest.raises(AccountLimit):
        run(registry, "api.get", script(Response(429)), flavour)
    assert clock.sleeps == []


@FLAVOURS
def test_a_rules_exponential_wait_counts_the_rules_own_attempts(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        wait = { strategy = "exponential", initial = "1s", multiplier = 2 }
        stop.attempts = 10
        [[endpoints.get.retry.rules]]
        name = "network"
        on_exceptions = ["ConnectionError"]
        wait = { strategy = "none" }
        [[endpoints.get.retry.rules]]
        name = "unavailable"
        on_status = [503]                 # the policy's wait, on its own count
        """
    )
    fn = script(Response(503), ConnectionError(), Response(503), ConnectionError(), Response(503))
    assert run(registry, "api.get", fn, flavour) == "ok"
    assert clock.sleeps == [1.0, 0.0, 2.0, 0.0, 4.0]


@FLAVOURS
def test_stop_attempts_bounds_every_rule(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        stop.attempts = 4
        wait.strategy = "none"
        [[endpoints.get.retry.rules]]
        on_exceptions = ["ConnectionError"]
        attempts = 3
        [[endpoints.get.retry.rules]]
        on_exceptions = ["TimeoutError"]
        attempts = 3
        """
    )
    last = TimeoutError("4")
    fn = script(ConnectionError("1"), TimeoutError("2"), ConnectionError("3"), last)
    with pytest.raises(TimeoutError) as raised:
        run(registry, "api.get", fn, flavour)
    assert raised.value is last
    assert len(clock.sleeps) == 3


@FLAVOURS
def test_the_deadline_bounds_every_rule(
    registry_of: RegistryOf, clock: FakeClock, flavour: str
) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        stop = { attempts = 100, deadline = "10s" }
        [[endpoints.get.retry.rules]]
        on_exceptions = ["ConnectionError"]
        wait = { strategy = "fixed", seconds = "3s" }
        [[endpoints.get.retry.rules]]
        on_status = [503]
        wait = { strategy = "fixed", seconds = "4s" }
        """
    )
    fn = script(ConnectionError(), Response(503), Response(503), "never")
    with pytest.raises(
        RetryExhausted, match=r"the next wait \(4\.000s\) would pass stop\.deadline"
    ):
        run(registry, "api.get", fn, flavour)
    assert clock.sleeps == [3.0, 4.0]  # a third sleep would end at 11 s


def test_inherited_rules_are_replaced_as_a_whole(registry_of: RegistryOf) -> None:
    registry = registry_of(
        api="""
        [defaults]
        stop.attempts = 9
        [[defaults.retry.rules]]
        name = "network"
        on_exceptions = ["ConnectionError"]
        [[defaults.retry.rules]]
        name = "throttled"
        on_status = [429]

        [endpoints.inherits]
        retry.on_status = [503]            # merges beside the inherited rules

        [endpoints.replaces]
        [[endpoints.replaces.retry.rules]]
        name = "only"
        on_status = [502]

        [endpoints.drops]
        retry.rules = []

        [endpoints.extends]
        extends = "replaces"
        """
    )

    def names(policy: str) -> list[str]:
        return [rule.name for rule in registry.get(policy).retry.rules]

    assert names("api.inherits") == ["network", "throttled"]
    assert registry.get("api.inherits").retry.on_status == frozenset({503})
    assert names("api.replaces") == ["only"]
    assert names("api.drops") == []
    assert names("api.extends") == ["only"]


def test_unnamed_rules_are_named_by_their_place(registry_of: RegistryOf) -> None:
    registry = registry_of(
        api="""
        [endpoints.get]
        retry.rules = [{ on_status = [429] }, { name = "mine", on_status = [503] }, \
{ on_status = [502] }]
        """
    )
    assert [r.name for r in registry.get("api.get").retry.rules] == ["rule 1", "mine", "rule 3"]


BAD_RULES = """
[endpoints.get]
stop.attempts = 5
[[endpoints.get.retry.rules]]
name = "network"
on_exception = ["ConnectionError"]
idempotent = true
[[endpoints.get.retry.rules]]
name = "network"
on_status = [429]
[[endpoints.get.retry.rules]]
on_status = [503]
attempts = 0
wait = { strategy = "fixed", initial = "1s" }
[[endpoints.get.retry.rules]]
name = "tired"
wait = { strategy = "none" }
attempts = 6
"""


def test_bad_rules_are_reported_each_at_its_line(
    registry_of: RegistryOf,
) -> None:
    with pytest.raises(PolicyError) as raised:
        registry_of(api=BAD_RULES)
    found = [(p.line, p.key, p.message) for p in raised.value.problems]
    assert found == [
        (6, "api.get.retry.rules[0].on_exception", "unknown key; did you mean 'on_exceptions'?"),
        (
            7,
            "api.get.retry.rules[0].idempotent",
            "is shared by every rule: set retry.idempotent beside the rules",
        ),
        (
            9,
            "api.get.retry.rules[1].name",
            "'network' is the name of an earlier rule; rule names must differ",
        ),
        (13, "api.get.retry.rules[2].attempts", "must be >= 1 (got 0)"),
        (
            14,
            "api.get.retry.rules[2].wait.initial",
            "is not used by strategy 'fixed' (it uses seconds, jitter); "
            'set strategy = "exponential" to use initial',
        ),
        (
            15,
            "api.get.retry.rules[3]",
            "matches nothing: a rule needs one of on_exceptions, on_status, until, while, "
            "result_predicate, exception_predicate",
        ),
        (
            18,
            "api.get.retry.rules[3].attempts",
            "must be <= stop.attempts (5, set at "
            f"{raised.value.problems[0].path}:3): no call makes more attempts",
        ),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("attempts = 1_000_001", "must be at most 1,000,000 (got 1000001)"),
        ("attempts = true", "must be an integer (got True)"),
        ('attempts = "3"', "must be an integer (got '3')"),
        ('name = ""', "must be 1 to 40 letters, digits, spaces, '_', '.' or '-'"),
        ('name = "a\\"b"', "must be 1 to 40 letters, digits, spaces, '_', '.' or '-'"),
        ('wait = { strategy = "random" }', 'strategy "random" needs max'),
        ('wait = { strategy = "fixed", seconds = "1 s" }', 'must be a duration like "250ms"'),
        ("on_status = [99]", "must be"),
    ],
)
def test_a_rules_values_are_checked_like_the_policys(
    registry_of: RegistryOf, line: str, message: str
) -> None:
    text = (
        "[endpoints.get]\nstop.attempts = 1000000\n[[endpoints.get.retry.rules]]\n"
        f'on_exceptions = ["OSError"]\n{line}\n'
    )
    with pytest.raises(PolicyError) as raised:
        registry_of(api=text)
    [problem] = raised.value.problems
    assert problem.line in (3, 5)
    assert problem.key.startswith("api.get.retry.rules[0]")
    assert message in problem.message


def test_rules_must_be_a_list_of_tables(registry_of: RegistryOf) -> None:
    with pytest.raises(PolicyError) as raised:
        registry_of(api='[endpoints.get]\nretry.rules = ["429", { on_status = [429] }]\n')
    [problem] = raised.value.problems
    assert (problem.key, problem.line) == ("api.get.retry.rules[0]", 2)
    assert problem.message.startswith("must be a rule table like { on_status = [429] }")
    with pytest.raises(PolicyError, match=r"retry\.rules: must be a list of rule tables"):
        registry_of(api="[endpoints.get]\nretry.rules = { on_status = [429] }\n")


def test_an_inherited_rule_above_the_endpoints_stop_blames_the_stop(
    registry_of: RegistryOf,
) -> None:
    with pytest.raises(PolicyError) as raised:
        registry_of(
            api="""
            [defaults]
            stop.attempts = 10
            [[defaults.retry.rules]]
            name = "throttled"
            on_status = [429]
            attempts = 8

            [endpoints.get]
            stop.attempts = 4
            """
        )
    [problem] = raised.value.problems
    assert (problem.key, problem.line) == ("api.get.stop.attempts", 10)
    assert problem.message.startswith("must be >= 8, the attempts of retry rule 'throttled'")


def _problems(registry_of: RegistryOf, **files: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(PolicyError) as raised:
        registry_of(**files)
    return [(p.line, p.key, p.message) for p in raised.value.problems]


def test_a_conflict_inherited_through_two_layers_is_reported_once_where_set_last(
    registry_of: RegistryOf,
) -> None:
    """The rule is the defaults', the stop the parent's: the parent set its value last, so
    the parent's stop is blamed, once (for the parent and for the child extending it)."""
    found = _problems(
        registry_of,
        api="""
        [defaults]
        [[defaults.retry.rules]]
        name = "throttled"
        on_status = [429]
        attempts = 3
        [endpoints.parent]
        stop.attempts = 2
        [endpoints.child]
        extends = "parent"
        """,
    )
    assert [(line, key) for line, key, _ in found] == [(8, "api.parent.stop.attempts")]
    assert found[0][2].startswith("must be >= 3, the attempts of retry rule 'throttled' (set at")


def test_a_rule_set_after_the_stop_is_blamed_across_files(registry_of: RegistryOf) -> None:
    found = _problems(
        registry_of,
        base="""
        [endpoints.x]
        stop.attempts = 4
        """,
        app="""
        [endpoints.y]
        extends = "base.x"
        [[endpoints.y.retry.rules]]
        on_status = [429]
        attempts = 5
        """,
    )
    [(line, key, message)] = found
    assert (line, key) == (6, "app.y.retry.rules[0].attempts")
    assert message.startswith("must be <= stop.attempts (4, set at ")


def test_a_refused_stop_attempts_is_not_compared_with_the_rules(registry_of: RegistryOf) -> None:
    rule = "[[endpoints.get.retry.rules]]\non_status = [429]\nattempts = 5\n"
    for text in (
        f"[endpoints.get]\nstop.attempts = 0\n{rule}",
        f"[defaults]\nstop.attempts = 0\n[endpoints.get]\n{rule}",
    ):
        found = _problems(registry_of, api=text)
        assert [message for _, _, message in found] == ["must be >= 1 (got 0)"]


def test_a_rule_of_empty_lists_matches_nothing(registry_of: RegistryOf) -> None:
    found = _problems(
        registry_of,
        api="""
        [endpoints.get]
        [[endpoints.get.retry.rules]]
        on_status = []
        on_exceptions = []
        [[endpoints.get.retry.rules]]
        on_exceptions = []
        until = { field = "state", equals = "done" }
        [[endpoints.get.retry.rules]]
        on_exceptions = ["?not_installed.Error"]   # an optional class: not a mistake
        """,
    )
    assert found == [
        (
            3,
            "api.get.retry.rules[0]",
            "matches nothing (on_exceptions = [] and on_status = [] are empty): a rule needs "
            "one of on_exceptions, on_status, until, while, result_predicate, "
            "exception_predicate",
        )
    ]


def test_a_default_name_taken_by_an_explicit_one_is_said_so(registry_of: RegistryOf) -> None:
    found = _problems(
        registry_of,
        api="""
        [endpoints.get]
        [[endpoints.get.retry.rules]]
        name = "rule 2"
        on_status = [429]
        [[endpoints.get.retry.rules]]
        on_status = [503]
        """,
    )
    assert found == [
        (
            6,
            "api.get.retry.rules[1]",  # not .name: this rule has none
            "has no name, and its default name 'rule 2' (by its place) is the name "
            'retry.rules[0] was given; give this rule a name of its own: name = "..."',
        )
    ]


@pytest.mark.parametrize("name", ["a ", " a", "a\t", "-a"])
def test_a_rule_name_may_not_start_or_end_with_a_space(registry_of: RegistryOf, name: str) -> None:
    found = _problems(
        registry_of,
        api=f"""
        [endpoints.get]
        [[endpoints.get.retry.rules]]
        name = "{name}"
        on_status = [429]
        [[endpoints.get.retry.rules]]
        name = "a"
        on_status = [503]
        """,
    )
    [(line, key, message)] = found
    assert (line, key) == (4, "api.get.retry.rules[0].name")
    assert "nor ending with a space" in message


def test_hand_built_rules_need_distinct_names() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        Retry(rules=(RetryRule(name="rule 2"), RetryRule()))


# -- what the log and the hooks say ---------------------------------------------------------


@pytest.fixture
def events() -> Any:
    seen: list[SleepEvent] = []
    remove = add_sleep_hook(seen.append)
    yield seen
    remove()


def test_the_log_line_names_the_rule_and_shows_the_hint_and_its_jitter(
    registry_of: RegistryOf,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    events: list[SleepEvent],
) -> None:
    registry = registry_of(spotify=SPOTIFY)
    fn = script(Response(503), Response(429, {"Retry-After": "1"}))
    with caplog.at_level(logging.INFO, logger="callpolicy"):
        registry.policy("spotify.tracks")(fn)()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        "spotify.tracks: attempt 1 of 12 failed (HTTP 503); sleeping 10.000s (backoff)"
    )
    found = re.fullmatch(
        r'spotify\.tracks: attempt 2 of 12 failed \(HTTP 429\), rule "throttled" 1 of 4; '
        r"sleeping (\d+\.\d{3})s \(Retry-After: 1 \+ jitter (\d\.\d{3})s, "
        r"instead of the backoff 1\.000s\)",
        lines[1],
    )
    assert found, lines[1]
    total, jitter = float(found[1]), float(found[2])
    assert total == pytest.approx(1 + jitter, abs=0.0011)  # the real length, its real parts
    event = events[1]
    assert (event.rule, event.rule_attempt, event.rule_max_attempts) == ("throttled", 1, 4)
    assert (event.hint, event.hint_seconds, event.backoff) == ("Retry-After: 1", 1.0, 1.0)
    assert event.jitter is not None and event.seconds == pytest.approx(1.0 + event.jitter)
    assert clock.sleeps[1] == event.seconds
    record = caplog.records[1]
    assert (record.rule, record.rule_attempt, record.jitter) == ("throttled", 1, event.jitter)  # type: ignore[attr-defined]
    assert events[0].rule is None  # the plain keys decided


def test_retrying_at_once_is_logged_at_debug_with_its_rule(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(spotify=SPOTIFY)
    with caplog.at_level(logging.DEBUG, logger="callpolicy"):
        registry.policy("spotify.tracks")(script(ConnectionError("reset"), Response(503)))()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.DEBUG,
            "spotify.tracks: attempt 1 of 12 failed (ConnectionError: reset), "
            'rule "network" 1 of 3; sleeping 0.000s (backoff)',
        ),
        (
            logging.INFO,
            "spotify.tracks: attempt 2 of 12 failed (HTTP 503); sleeping 10.000s (backoff)",
        ),
    ]


def _backoff_event(seconds: float, backoff: float, jitter: float, hint: float | None) -> SleepEvent:
    return SleepEvent(
        "api.get",
        1,
        5,
        "backoff",
        seconds,
        "HTTP 500",
        "status",
        hint=None if hint is None else "Retry-After: 1",
        backoff=backoff,
        jitter=jitter,
        hint_seconds=hint,
    )


def test_the_parts_shown_add_up_to_the_total_shown() -> None:
    event = _backoff_event(0.0014 + 0.0014, 0.0014, 0.0014, None)
    assert event.message().endswith("sleeping 0.003s (backoff 0.001s + jitter 0.002s)")
    hinted = _backoff_event(1.0005, 1.0, 0.0005, 1.0)
    assert hinted.message().endswith(
        "sleeping 1.000s (Retry-After: 1 + jitter 0.000s, instead of the backoff 1.000s)"
    )
    rng = random.Random(7)
    for _ in range(2000):
        backoff, jitter = rng.uniform(0, 0.01), rng.uniform(0, 0.01)
        shown = re.search(
            r"sleeping (\d+\.\d{3})s \(backoff (\d+\.\d{3})s \+ jitter (\d+\.\d{3})s\)",
            _backoff_event(backoff + jitter, backoff, jitter, None).message(),
        )
        assert shown is not None
        total, part, added = (round(float(n) * 1000) for n in shown.groups())
        assert total == part + added
        assert abs(added / 1000 - jitter) <= 0.001  # within the rounding of what was added
