"""What a decorated function raises reaches its caller unchanged: the same object, of the same
type (a StopIteration is not turned into RuntimeError), with the same `__context__`, on every
path a call can take (no quota, a rate, a slot, a key pool, a weighted quota, after retries),
sync and async. Errors callpolicy raises itself keep what caused them, and name the policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from callpolicy import AccountLimit, FakeClock, QuotaUnavailable, Registry

RegistryOf = Callable[..., Registry]
F = TypeVar("F", bound=Callable[..., Any])

# Named quotas every policy of this module may list; [endpoints.e] picks its path below.
NAMED = """
[quotas.key_a]
limit = "100/1s"
[quotas.key_b]
limit = "100/1s"
[quotas.keys]
pool = ["key_a", "key_b"]
[quotas.tokens]
limit = "100000/1s"
weighted = true
"""
# The quota line of policy svc.e, by the way a call is admitted.
PATHS = {
    "no quota": "",
    "rate": 'quotas = ["100/1s"]',
    "slot": "quotas = [{ concurrency = 2 }]",
    "pool": 'quotas = ["keys"]',
    "weighted": 'quotas = ["tokens"]',
}
RETRY_CONNECTION = """
retry.on_exceptions = ["ConnectionError"]
wait = { strategy = "fixed", seconds = "1s" }
stop.attempts = 3
"""


def toml(path: str, retry: str = "") -> str:
    return f"{NAMED}\n[endpoints.e]\n{PATHS[path]}\n{retry}\n"


def under(registry: Registry, path: str) -> Callable[[F], F]:
    """The decorator of svc.e; the weighted path takes a cost and corrects it."""
    if path == "weighted":
        return registry.policy("svc.e", cost=5, actual_cost=lambda result: 3)
    return registry.policy("svc.e")


class Script:
    """Raises (or returns) the next of `outcomes` at each call, counting the calls."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        outcome = self.outcomes[self.calls]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def sync_of(script: Script) -> Callable[[], Any]:
    def call() -> Any:
        return script()

    return call


def async_of(script: Script) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return script()

    return call


# -- 1. StopIteration stays StopIteration (StopAsyncIteration in coroutines) -----------------

# (retry rules of the policy, outcomes before the final error): the final error is raised by
# the first attempt, or by the second after a retried ConnectionError.
WHEN = {
    "first attempt, no retry rules": ("", 0),
    "first attempt, retry rules": (RETRY_CONNECTION, 0),
    "after one retry": (RETRY_CONNECTION, 1),
}


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("path", PATHS)
def test_stop_iteration_reaches_the_caller_as_itself(
    registry_of: RegistryOf, clock: FakeClock, path: str, when: str
) -> None:
    retry, failures = WHEN[when]
    registry = registry_of(svc=toml(path, retry))
    stop = StopIteration("the end")
    script = Script(*[ConnectionError("refused")] * failures, stop)
    with pytest.raises(StopIteration) as raised:
        under(registry, path)(sync_of(script))()
    assert raised.value is stop
    assert type(raised.value) is StopIteration
    assert script.calls == failures + 1
    assert clock.sleeps == [1.0] * failures


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("path", PATHS)
async def test_stop_async_iteration_reaches_the_caller_as_itself(
    registry_of: RegistryOf, clock: FakeClock, path: str, when: str
) -> None:
    retry, failures = WHEN[when]
    registry = registry_of(svc=toml(path, retry))
    stop = StopAsyncIteration("the end")
    script = Script(*[ConnectionError("refused")] * failures, stop)
    with pytest.raises(StopAsyncIteration) as raised:
        await under(registry, path)(async_of(script))()
    assert raised.value is stop
    assert type(raised.value) is StopAsyncIteration
    assert script.calls == failures + 1
    assert clock.sleeps == [1.0] * failures


RETRY_STOP = """
retry.on_exceptions = ["StopIteration", "StopAsyncIteration"]
wait = { strategy = "fixed", seconds = "1s" }
stop.attempts = 2
"""


@pytest.mark.parametrize("path", PATHS)
def test_a_retried_stop_iteration_running_out_of_attempts_raises_the_last_one(
    registry_of: RegistryOf, clock: FakeClock, path: str
) -> None:
    registry = registry_of(svc=toml(path, RETRY_STOP))
    stops = [StopIteration("1"), StopIteration("2")]
    script = Script(*stops)
    with pytest.raises(StopIteration) as raised:
        under(registry, path)(sync_of(script))()
    assert raised.value is stops[-1]
    assert script.calls == 2
    assert clock.sleeps == [1.0]


@pytest.mark.parametrize("path", PATHS)
async def test_a_retried_stop_async_iteration_running_out_of_attempts_raises_the_last_one(
    registry_of: RegistryOf, clock: FakeClock, path: str
) -> None:
    registry = registry_of(svc=toml(path, RETRY_STOP))
    stops = [StopAsyncIteration("1"), StopAsyncIteration("2")]
    script = Script(*stops)
    with pytest.raises(StopAsyncIteration) as raised:
        await under(registry, path)(async_of(script))()
    assert raised.value is stops[-1]
    assert script.calls == 2
    assert clock.sleeps == [1.0]


@pytest.mark.parametrize("retry", ["", RETRY_CONNECTION], ids=["no retry rules", "retry rules"])
@pytest.mark.parametrize("path", PATHS)
def test_an_iterator_whose_next_is_decorated_ends_list_normally(
    registry_of: RegistryOf, clock: FakeClock, path: str, retry: str
) -> None:
    registry = registry_of(svc=toml(path, retry))

    class Countdown:
        def __init__(self, n: int) -> None:
            self.n = n

        def __iter__(self) -> Countdown:
            return self

        @under(registry, path)
        def __next__(self) -> int:
            if self.n == 0:
                raise StopIteration
            self.n -= 1
            return self.n + 1

    assert list(Countdown(3)) == [3, 2, 1]
    assert list(Countdown(0)) == []


@pytest.mark.parametrize("path", PATHS)
def test_an_iterator_whose_next_fails_once_per_item_is_retried_and_ends_list_normally(
    registry_of: RegistryOf, clock: FakeClock, path: str
) -> None:
    """A paginator: every __next__ (the last, which raises StopIteration, too) first fails
    with a retried ConnectionError."""
    registry = registry_of(svc=toml(path, RETRY_CONNECTION))

    class FlakyPages:
        def __init__(self, n: int) -> None:
            self.n = n
            self.failed = False

        def __iter__(self) -> FlakyPages:
            return self

        @under(registry, path)
        def __next__(self) -> int:
            self.failed = not self.failed
            if self.failed:
                raise ConnectionError("refused")
            if self.n == 0:
                raise StopIteration
            self.n -= 1
            return self.n + 1

    assert list(FlakyPages(2)) == [2, 1]
    assert clock.sleeps == [1.0] * 3


@pytest.mark.parametrize("retry", ["", RETRY_CONNECTION], ids=["no retry rules", "retry rules"])
@pytest.mark.parametrize("path", PATHS)
async def test_an_async_iterator_whose_anext_is_decorated_ends_async_for_normally(
    registry_of: RegistryOf, clock: FakeClock, path: str, retry: str
) -> None:
    registry = registry_of(svc=toml(path, retry))

    class Countdown:
        def __init__(self, n: int) -> None:
            self.n = n

        def __aiter__(self) -> Countdown:
            return self

        @under(registry, path)
        async def __anext__(self) -> int:
            if self.n == 0:
                raise StopAsyncIteration
            self.n -= 1
            return self.n + 1

    assert [n async for n in Countdown(3)] == [3, 2, 1]
    assert [n async for n in Countdown(0)] == []


# -- 2. the error's own __context__ is kept, even when called inside an except block ---------

CONTEXT_POLICIES = {
    "no retry rules": "",
    "retry rules that do not match": """
        retry.on_exceptions = ["ConnectionError"]
        retry.on_status = [503]
        wait = { strategy = "fixed", seconds = "1s" }
        """,
    "retried until attempts run out": """
        retry.on_exceptions = ["ValueError"]
        wait = { strategy = "fixed", seconds = "1s" }
        stop.attempts = 3
        """,
}
CONTEXT_PATHS = ["no quota", "rate", "slot", "pool", "weighted"]


class Raising:
    """Raises a new ValueError inside its own `except OSError:` at every call, in one of
    three ways: plainly (context), `from` the OSError (cause), `from None`; keeps them."""

    def __init__(self, how: str, response: Any = None) -> None:
        self.how = how
        self.response = response  # what the errors carry, if anything
        self.raised: list[tuple[ValueError, OSError]] = []

    def __call__(self) -> None:
        try:
            raise OSError(f"disk {len(self.raised)}")
        except OSError as inner:
            error = ValueError(f"bad {len(self.raised)}")
            if self.response is not None:
                error.response = self.response  # type: ignore[attr-defined]
            self.raised.append((error, inner))
            if self.how == "cause":
                raise error from inner
            if self.how == "from None":
                raise error from None
            raise error  # noqa: B904 (the point: a plain raise sets __context__ only)


def expect_chain(error: BaseException, script: Raising) -> None:
    last, inner = script.raised[-1]
    assert error is last
    assert error.__context__ is inner  # not the caller's KeyError
    assert error.__cause__ is (inner if script.how == "cause" else None)
    assert error.__suppress_context__ is (script.how != "context")


def expected_calls(policy: str) -> int:
    return 3 if policy == "retried until attempts run out" else 1


@pytest.mark.parametrize("how", ["context", "cause", "from None"])
@pytest.mark.parametrize("policy", CONTEXT_POLICIES)
@pytest.mark.parametrize("path", CONTEXT_PATHS)
def test_the_error_keeps_its_own_context_when_called_inside_an_except_block(
    registry_of: RegistryOf, clock: FakeClock, path: str, policy: str, how: str
) -> None:
    registry = registry_of(svc=toml(path, CONTEXT_POLICIES[policy]))
    script = Raising(how)
    fn = under(registry, path)(script)

    def caller() -> None:
        try:
            raise KeyError("the caller's own")
        except KeyError:
            fn()

    with pytest.raises(ValueError) as raised:
        caller()
    expect_chain(raised.value, script)
    assert len(script.raised) == expected_calls(policy)


@pytest.mark.parametrize("how", ["context", "cause", "from None"])
@pytest.mark.parametrize("policy", CONTEXT_POLICIES)
@pytest.mark.parametrize("path", CONTEXT_PATHS)
async def test_the_async_error_keeps_its_own_context_when_awaited_inside_an_except_block(
    registry_of: RegistryOf, clock: FakeClock, path: str, policy: str, how: str
) -> None:
    registry = registry_of(svc=toml(path, CONTEXT_POLICIES[policy]))
    script = Raising(how)

    @under(registry, path)
    async def fn() -> None:
        script()

    async def caller() -> None:
        try:
            raise KeyError("the caller's own")
        except KeyError:
            await fn()

    with pytest.raises(ValueError) as raised:
        await caller()
    expect_chain(raised.value, script)
    assert len(script.raised) == expected_calls(policy)


class Answer:
    """A response an error carries: the server says no call remains for 30 s."""

    status_code = 500
    headers = {"X-Left": "0", "X-Reset": "30"}  # noqa: RUF012


# A retry that cannot start before the deadline: its quota (or the server's pause) would
# make it wait past stop.deadline, so the call fails at once with its last error.
REFUSED_BEFORE_DEADLINE = {
    "by a quota": 'quotas = ["1/10s"]',
    "by the server's pause": 'pause = { remaining = "X-Left", reset = "X-Reset" }',
}
DEADLINE_RETRY = """
retry.on_exceptions = ["ValueError"]
wait = { strategy = "fixed", seconds = "1s" }
stop = { attempts = 3, deadline = "5s" }
"""


@pytest.mark.parametrize("how", ["context", "cause", "from None"])
@pytest.mark.parametrize("refused", REFUSED_BEFORE_DEADLINE)
def test_the_last_error_keeps_its_context_when_a_retry_cannot_start_before_the_deadline(
    registry_of: RegistryOf, clock: FakeClock, refused: str, how: str
) -> None:
    registry = registry_of(
        svc=f"[endpoints.e]\n{REFUSED_BEFORE_DEADLINE[refused]}\n{DEADLINE_RETRY}"
    )
    script = Raising(how, Answer())
    fn = registry.policy("svc.e")(script)

    def caller() -> None:
        try:
            raise KeyError("the caller's own")
        except KeyError:
            fn()

    with pytest.raises(ValueError) as raised:
        caller()
    expect_chain(raised.value, script)
    assert len(script.raised) == 1
    assert clock.sleeps == [1.0]


@pytest.mark.parametrize("how", ["context", "cause", "from None"])
@pytest.mark.parametrize("refused", REFUSED_BEFORE_DEADLINE)
async def test_the_last_async_error_keeps_its_context_when_a_retry_cannot_start_in_time(
    registry_of: RegistryOf, clock: FakeClock, refused: str, how: str
) -> None:
    registry = registry_of(
        svc=f"[endpoints.e]\n{REFUSED_BEFORE_DEADLINE[refused]}\n{DEADLINE_RETRY}"
    )
    script = Raising(how, Answer())

    @registry.policy("svc.e")
    async def fn() -> None:
        script()

    async def caller() -> None:
        try:
            raise KeyError("the caller's own")
        except KeyError:
            await fn()

    with pytest.raises(ValueError) as raised:
        await caller()
    expect_chain(raised.value, script)
    assert len(script.raised) == 1
    assert clock.sleeps == [1.0]


# -- 3. errors callpolicy raises keep what caused them ---------------------------------------


class QuotaResponse:
    status_code = 429

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.headers: dict[str, str] = {}

    def json(self) -> dict[str, str]:
        return {"type": self.kind}


class HTTPError(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(f"429 {kind}")
        self.response = QuotaResponse(kind)


GIVE_UP = """
[endpoints.e]
retry.on_status = [429]
retry.give_up = [{ status = 429, json = { type = "insufficient_quota" } }]
wait = { strategy = "fixed", seconds = "1s" }
stop.attempts = 3
"""


@pytest.mark.parametrize("retries_before", [0, 1], ids=["first attempt", "after a retry"])
def test_account_limit_keeps_the_http_error_as_its_context(
    registry_of: RegistryOf, clock: FakeClock, retries_before: int
) -> None:
    gone = HTTPError("insufficient_quota")
    script = Script(*[HTTPError("rate_limit")] * retries_before, gone)
    registry = registry_of(svc=GIVE_UP)
    fn = registry.policy("svc.e")(sync_of(script))

    def caller() -> None:
        try:
            raise KeyError("the caller's own")
        except KeyError:
            fn()

    with pytest.raises(AccountLimit) as raised:
        caller()
    assert raised.value.__context__ is gone
    assert raised.value.response is gone
    assert raised.value.policy == "svc.e"
    assert script.calls == retries_before + 1
    assert clock.sleeps == [1.0] * retries_before
    stats = registry.stats()["svc.e"]  # an account limit is a failure, from any attempt
    assert (stats.calls, stats.failures, stats.in_flight, stats.retries) == (
        1,
        1,
        0,
        retries_before,
    )


@pytest.mark.parametrize("retries_before", [0, 1], ids=["first attempt", "after a retry"])
async def test_async_account_limit_keeps_the_http_error_as_its_context(
    registry_of: RegistryOf, clock: FakeClock, retries_before: int
) -> None:
    gone = HTTPError("insufficient_quota")
    script = Script(*[HTTPError("rate_limit")] * retries_before, gone)
    fn = registry_of(svc=GIVE_UP).policy("svc.e")(async_of(script))

    async def caller() -> None:
        try:
            raise KeyError("the caller's own")
        except KeyError:
            await fn()

    with pytest.raises(AccountLimit) as raised:
        await caller()
    assert raised.value.__context__ is gone
    assert raised.value.response is gone
    assert script.calls == retries_before + 1
    assert clock.sleeps == [1.0] * retries_before


class PredicateBroke(Exception):
    pass


def exploding_predicate(error: BaseException) -> bool:
    raise PredicateBroke(f"cannot judge {error!r}")


PREDICATE = f"""
[endpoints.e]
retry.on_exceptions = ["ConnectionError"]
retry.exception_predicate = "{__name__}.exploding_predicate"
wait = {{ strategy = "fixed", seconds = "1s" }}
stop.attempts = 3
"""


@pytest.mark.parametrize("retries_before", [0, 1], ids=["first attempt", "after a retry"])
def test_an_exception_predicate_that_raises_keeps_the_original_error_as_context(
    registry_of: RegistryOf, clock: FakeClock, retries_before: int
) -> None:
    original = ValueError("judge me")
    script = Script(*[ConnectionError("refused")] * retries_before, original)
    fn = registry_of(svc=PREDICATE).policy("svc.e")(sync_of(script))
    with pytest.raises(PredicateBroke) as raised:
        fn()
    assert raised.value.__context__ is original
    assert script.calls == retries_before + 1


@pytest.mark.parametrize("retries_before", [0, 1], ids=["first attempt", "after a retry"])
async def test_an_async_exception_predicate_that_raises_keeps_the_original_error_as_context(
    registry_of: RegistryOf, clock: FakeClock, retries_before: int
) -> None:
    original = ValueError("judge me")
    script = Script(*[ConnectionError("refused")] * retries_before, original)
    fn = registry_of(svc=PREDICATE).policy("svc.e")(async_of(script))
    with pytest.raises(PredicateBroke) as raised:
        await fn()
    assert raised.value.__context__ is original
    assert script.calls == retries_before + 1


# -- 4. QuotaUnavailable names the policy, whatever the path --------------------------------

DOWN = "redis://127.0.0.1:1/0?timeout=100ms"  # nothing listens on port 1
REDIS_PATHS = {
    "a lone sliding window (the fast path)": ('quotas = ["q"]', ""),
    "two quotas in Redis": ('quotas = ["q", "r"]', ""),
    "a memory quota and a Redis quota": ('quotas = ["m", "q"]', ""),
    "a slot in Redis": ('quotas = ["slots"]', ""),
    "a weighted quota in Redis": ('quotas = ["w"]', ""),
    "a token bucket in Redis": ('quotas = ["tb"]', ""),
}
REDIS_QUOTAS = f"""
[quotas.q]
limit = "5/1s"
storage = "{DOWN}"
[quotas.r]
limit = "50/1m"
storage = "{DOWN}"
[quotas.m]
limit = "5/1s"
[quotas.slots]
concurrency = 2
storage = "{DOWN}"
[quotas.w]
limit = "500/1s"
weighted = true
storage = "{DOWN}"
[quotas.tb]
limit = "5/1s"
algorithm = "token-bucket"
storage = "{DOWN}"
"""


def redis_registry(registry_of: RegistryOf, path: str) -> Registry:
    quotas, _ = REDIS_PATHS[path]
    return registry_of(svc=f"{REDIS_QUOTAS}\n[endpoints.e]\n{quotas}\n")


def expect_named(error: QuotaUnavailable) -> None:
    assert error.policy == "svc.e"
    assert str(error).startswith("svc.e: "), str(error)
    assert error.reason == "unavailable"


@pytest.mark.parametrize("path", REDIS_PATHS)
def test_quota_unavailable_names_the_policy(registry_of: RegistryOf, path: str) -> None:
    script = Script("never called")
    fn = redis_registry(registry_of, path).policy("svc.e", cost=1)(sync_of(script))
    for _ in range(2):  # the first call, and one after the storage is known to be down
        with pytest.raises(QuotaUnavailable) as raised:
            fn()
        expect_named(raised.value)
    assert script.calls == 0


@pytest.mark.parametrize("path", REDIS_PATHS)
async def test_async_quota_unavailable_names_the_policy(registry_of: RegistryOf, path: str) -> None:
    script = Script("never called")
    fn = redis_registry(registry_of, path).policy("svc.e", cost=1)(async_of(script))
    for _ in range(2):
        with pytest.raises(QuotaUnavailable) as raised:
            await fn()
        expect_named(raised.value)
    assert script.calls == 0
