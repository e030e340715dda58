"""Fallbacks: what a call serves when it gives up, and only then; sync and async, fake clock."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import warnings
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import requests

import callpolicy
from callpolicy import (
    AccountLimit,
    CircuitOpen,
    FakeClock,
    FallbackEvent,
    QuotaExceeded,
    Registry,
    RetryExhausted,
)
from callpolicy._engine import fallback as fallback_engine
from callpolicy._engine.outcomes import describe_exception
from callpolicy._explain import explain

RegistryOf = Callable[..., Registry]
HERE = __name__  # the dotted path policies name this module's functions by


@attrs.define
class Response:
    status_code: int
    body: dict[str, Any] = attrs.Factory(dict)

    def json(self) -> dict[str, Any]:
        return self.body


class HTTPError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"server said {status}")
        self.response = Response(status, body or {})


SEEN: list[tuple[Any, ...]] = []  # what the fallback functions were called with


def answer_from_fallback(*args: Any, **kwargs: Any) -> str:
    event = callpolicy.last_fallback()
    assert event is not None  # the use in progress: the function can read the error
    SEEN.append((args, kwargs, type(event.error).__name__))
    return "from fallback"


async def async_answer_from_fallback(*args: Any, **kwargs: Any) -> str:
    await asyncio.sleep(0)
    return "from async fallback"


def broken_fallback(*args: Any, **kwargs: Any) -> str:
    raise LookupError("the fallback's own store is down")


AGAIN: list[Callable[..., Any]] = []  # the decorated function a fallback calls again


def call_again(*args: Any, **kwargs: Any) -> Any:
    SEEN.append(args)
    return AGAIN[0](*args, **kwargs)


class AsyncAnswer:
    async def __call__(self, *args: Any, **kwargs: Any) -> str:
        return "from an awaitable"


ASYNC_OBJECT = AsyncAnswer()
PARTIAL = functools.partial(answer_from_fallback, "bound")


def generator_fallback(*args: Any, **kwargs: Any) -> Any:
    yield "cached"


def by_first(first: Any, *rest: Any, **kwargs: Any) -> Any:
    return first


@pytest.fixture(autouse=True)
def seen() -> None:
    SEEN.clear()


def failing(error: Exception) -> Callable[..., Any]:
    calls: list[tuple[Any, ...]] = []

    def fn(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise error

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


POLICIES = f"""
[defaults]
retry.on_exceptions = ["ConnectionError"]
wait = {{ strategy = "fixed", seconds = "1s" }}
stop.attempts = 2
fallback.call = "{HERE}.answer_from_fallback"

[endpoints.get]

[endpoints.polled]
retry.until = {{ field = "status", in = ["DONE"] }}

[endpoints.quoted]
quotas = [{{ limit = "1/1m", max_wait = "0s" }}]

[endpoints.costly]
quotas = [{{ limit = "10/1m", weighted = true }}]

[endpoints.account]
retry.give_up = [{{ status = 402 }}]

[endpoints.account_on]
retry.give_up = [{{ status = 402 }}]
fallback.on = ["account"]

[endpoints.only_quota]
fallback.on = ["quota"]

[endpoints.plain]
fallback = {{ on = ["retries"], call = "{HERE}.answer_from_fallback" }}
retry.on_exceptions = []

[endpoints.async_fallback]
fallback.call = "{HERE}.async_answer_from_fallback"

[endpoints.broken]
fallback.call = "{HERE}.broken_fallback"

[endpoints.guarded]
breaker = {{ window = 2, min_calls = 2, open_for = "1m" }}
stop.attempts = 1

[endpoints.recursive]
fallback.call = "{HERE}.call_again"

[endpoints.awaitable_object]
fallback.call = "{HERE}.ASYNC_OBJECT"

[endpoints.generator]
fallback.call = "{HERE}.generator_fallback"

[endpoints.partial]
fallback.call = "{HERE}.PARTIAL"

[endpoints.http]
retry.on_status = [500]

[endpoints.guarded_other]
breaker = {{ window = 2, min_calls = 2, open_for = "1m" }}
stop.attempts = 1
fallback.on = ["quota"]
"""


@pytest.fixture
def api(registry_of: RegistryOf, clock: FakeClock) -> Registry:
    return registry_of(api=POLICIES)


# -- each give-up kind, sync ---------------------------------------------------------------------
def test_retries_exhausted_on_an_error_serve_the_fallback(api: Registry) -> None:
    error = ConnectionError("refused")
    fn = failing(error)
    assert api.policy("api.get")(fn)("a", page=2) == "from fallback"
    assert len(fn.calls) == 2  # type: ignore[attr-defined]
    assert SEEN == [(("a",), {"page": 2}, "ConnectionError")]  # the call's own arguments
    event = callpolicy.last_fallback()
    assert event is not None
    assert (event.policy, event.give_up, event.source) == ("api.get", "retries", "call")
    assert event.error is error
    assert event.function == f"{HERE}.answer_from_fallback"


def test_retries_exhausted_on_a_value_serve_the_fallback(api: Registry) -> None:
    def poll() -> Any:
        return {"status": "RUNNING"}

    assert api.policy("api.polled")(poll)() == "from fallback"
    event = callpolicy.last_fallback()
    assert event is not None and isinstance(event.error, RetryExhausted)
    assert event.give_up == "retries"


def test_a_quota_that_would_not_admit_in_time_serves_the_fallback(api: Registry) -> None:
    def real() -> str:
        return "real"

    fn = api.policy("api.quoted")(real)
    assert fn() == "real"
    assert callpolicy.last_fallback() is None
    assert fn() == "from fallback"
    event = callpolicy.last_fallback()
    assert event is not None and event.give_up == "quota"
    assert isinstance(event.error, QuotaExceeded)


def test_a_cost_above_a_quotas_limit_is_never_served(api: Registry) -> None:
    def real() -> str:
        return "real"

    fn = api.policy("api.costly")(real)
    with callpolicy.call_options(cost=50), pytest.raises(QuotaExceeded) as raised:
        fn()  # no wait would ever admit it: a programming error, not an outage
    assert raised.value.reason == "cost"
    assert callpolicy.last_fallback() is None
    with callpolicy.call_options(cost=5):
        assert fn() == "real"


def test_an_account_limit_is_not_served_by_default(api: Registry) -> None:
    fn = api.policy("api.account")(failing(HTTPError(402)))
    with pytest.raises(AccountLimit):
        fn()
    assert callpolicy.last_fallback() is None


def test_an_account_limit_is_served_when_on_names_it(api: Registry) -> None:
    assert api.policy("api.account_on")(failing(HTTPError(402)))() == "from fallback"
    event = callpolicy.last_fallback()
    assert event is not None and event.give_up == "account"


def test_a_kind_that_on_does_not_name_is_raised(api: Registry) -> None:
    error = ConnectionError("refused")
    with pytest.raises(ConnectionError) as raised:
        api.policy("api.only_quota")(failing(error))()
    assert raised.value is error


def test_an_open_circuit_is_served(api: Registry) -> None:
    """The breaker's `CircuitOpen` is a give-up of the kind "circuit"."""
    fn = failing(ConnectionError("refused"))
    guarded = api.policy("api.guarded")(fn)
    assert guarded() == "from fallback"  # retries exhausted (one attempt), then opens
    assert guarded() == "from fallback"
    assert guarded() == "from fallback"  # open: no call made
    assert len(fn.calls) == 2  # type: ignore[attr-defined]
    event = callpolicy.last_fallback()
    assert event is not None and event.give_up == "circuit"
    assert isinstance(event.error, CircuitOpen) and event.error.policy == "api.guarded"


def test_an_open_circuit_not_in_on_is_raised(api: Registry) -> None:
    guarded = api.policy("api.guarded_other")(failing(ConnectionError("refused")))
    for _ in range(2):
        with pytest.raises(ConnectionError):
            guarded()
    with pytest.raises(CircuitOpen):
        guarded()


# -- never on what is not a give-up --------------------------------------------------------------
def test_an_error_that_is_not_retried_is_never_hidden(api: Registry) -> None:
    error = ValueError("a bug")
    with pytest.raises(ValueError) as raised:
        api.policy("api.get")(failing(error))()
    assert raised.value is error and error.__cause__ is None and error.__context__ is None
    assert callpolicy.last_fallback() is None and not SEEN


def test_an_error_not_retried_after_a_retried_one_is_never_hidden(api: Registry) -> None:
    outcomes = iter([ConnectionError("refused"), KeyError("a bug")])

    def fn() -> None:
        raise next(outcomes)

    with pytest.raises(KeyError):
        api.policy("api.get")(fn)()
    assert not SEEN


def test_a_policy_that_retries_nothing_never_serves(api: Registry) -> None:
    with pytest.raises(ConnectionError):
        api.policy("api.plain")(failing(ConnectionError("refused")))()
    assert not SEEN


def test_a_nested_calls_give_up_is_not_the_outer_calls(api: Registry) -> None:
    inner = api.policy("api.only_quota")(failing(ConnectionError("refused")))
    outer = api.policy("api.plain")(inner)  # retries nothing: the inner give-up passes
    with pytest.raises(ConnectionError):
        outer()
    assert not SEEN
    other = RetryExhausted("api.other", None, 2, "stop.attempts = 2 reached")
    assert fallback_engine.give_up_kind(other, "api.plain") is None
    assert fallback_engine.give_up_kind(other, "api.other") == "retries"


def test_interrupts_are_never_served(api: Registry) -> None:
    def fn() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.policy("api.get")(fn)()


# -- async ---------------------------------------------------------------------------------------
async def test_async_calls_serve_a_sync_fallback(api: Registry) -> None:
    @api.policy("api.get")
    async def fn(item: str) -> str:
        raise ConnectionError("refused")

    assert await fn("x") == "from fallback"
    assert SEEN == [(("x",), {}, "ConnectionError")]
    event = callpolicy.last_fallback()
    assert event is not None and event.give_up == "retries"


async def test_async_calls_await_an_async_fallback(api: Registry) -> None:
    @api.policy("api.async_fallback")
    async def fn() -> str:
        raise ConnectionError("refused")

    assert await fn() == "from async fallback"


async def test_async_quota_give_up_and_errors_not_retried(api: Registry) -> None:
    @api.policy("api.quoted")
    async def fn() -> str:
        return "real"

    assert await fn() == "real"
    assert await fn() == "from fallback"

    @api.policy("api.get")
    async def buggy() -> str:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await buggy()


def test_a_sync_call_refuses_an_async_fallback(api: Registry) -> None:
    error = ConnectionError("refused")
    with pytest.raises(TypeError, match="coroutine function") as raised:
        api.policy("api.async_fallback")(failing(error))()
    assert raised.value.__cause__ is error


@pytest.mark.parametrize(
    ("policy", "what"), [("api.awaitable_object", "an awaitable"), ("api.generator", "a generator")]
)
def test_a_sync_call_refuses_a_fallback_returning_unrun_work(
    api: Registry, policy: str, what: str
) -> None:
    error = ConnectionError("refused")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the coroutine is closed, never "never awaited"
        with pytest.raises(TypeError, match=f"returned {what}") as raised:
            api.policy(policy)(failing(error))()
        gc.collect()
    assert raised.value.__cause__ is error
    assert callpolicy.last_fallback() is None


def test_the_async_function_refusal_is_not_a_fallback_used(
    api: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callpolicy")
    events: list[FallbackEvent] = []
    remove = callpolicy.add_hook(events.append, ["fallback"])
    try:
        with pytest.raises(TypeError, match="coroutine function"):
            api.policy("api.async_fallback")(failing(ConnectionError("refused")))()
    finally:
        remove()
    assert events == []
    assert not [r for r in caplog.records if "calling the fallback" in r.getMessage()]
    assert api.stats()["api.async_fallback"].fallbacks == 0
    assert callpolicy.last_fallback() is None


def test_a_fallback_calling_its_own_function_gets_the_give_up(api: Registry) -> None:
    error = ConnectionError("refused")
    fn = api.policy("api.recursive")(failing(error))
    AGAIN[:] = [fn]
    with pytest.raises(ConnectionError) as raised:
        fn("x")
    assert len(SEEN) == 1  # the fallback ran once; the call inside it raised its give-up
    assert raised.value.__cause__ is error


async def test_an_async_fallback_calling_its_own_function_gets_the_give_up(
    api: Registry,
) -> None:
    @api.policy("api.recursive")
    async def fn(x: str) -> str:
        raise ConnectionError("refused")

    async def again(x: str) -> str:
        return await fn(x)

    AGAIN[:] = [again]
    with pytest.raises(ConnectionError):
        await fn("x")
    assert len(SEEN) == 1


def test_the_fallback_is_named_as_the_file_names_it(
    api: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callpolicy")
    assert api.policy("api.partial")(failing(ConnectionError("refused")))() == "from fallback"
    said = [r.getMessage() for r in caplog.records if "(fallback)" in r.getMessage()]
    assert f"calling the fallback {HERE}.PARTIAL (fallback)" in said[0]
    assert f"{HERE}.PARTIAL(same arguments)" in explain(api.get("api.partial"))
    event = callpolicy.last_fallback()
    assert event is not None and event.function == f"{HERE}.PARTIAL"


# -- a fallback that raises ----------------------------------------------------------------------
def test_a_fallback_error_propagates_with_the_give_up_as_its_cause(api: Registry) -> None:
    error = ConnectionError("refused")
    with pytest.raises(LookupError, match="store is down") as raised:
        api.policy("api.broken")(failing(error))()
    assert raised.value.__cause__ is error
    assert raised.value.__context__ is error
    assert callpolicy.last_fallback() is None  # the call raised: no fallback served it


async def test_an_async_fallback_error_keeps_the_give_up_too(api: Registry) -> None:
    @api.policy("api.broken")
    async def fn() -> None:
        raise ConnectionError("refused")

    with pytest.raises(LookupError) as raised:
        await fn()
    assert isinstance(raised.value.__cause__, ConnectionError)


# -- what the caller learns: last_fallback(), hooks, the log --------------------------------------
def test_last_fallback_is_cleared_by_the_next_call(api: Registry) -> None:
    outcomes: Any = iter([ConnectionError("a"), ConnectionError("b"), "real"])

    def fn() -> Any:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    get = api.policy("api.get")(fn)
    assert get() == "from fallback"
    assert callpolicy.last_fallback() is not None
    assert get() == "real"
    assert callpolicy.last_fallback() is None


def test_a_call_returning_its_own_result_after_a_nested_fallback_reports_none(
    api: Registry,
) -> None:
    inner = api.policy("api.get")(failing(ConnectionError("refused")))

    @api.policy("api.get")
    def outer() -> str:
        assert inner() == "from fallback"
        assert callpolicy.last_fallback() is not None  # the inner call's, while inside
        return "outer's own"

    assert outer() == "outer's own"
    assert callpolicy.last_fallback() is None


async def test_a_task_reports_only_the_calls_it_made(api: Registry) -> None:
    @api.policy("api.get")
    async def fn(fail: bool) -> str:
        if fail:
            raise ConnectionError("refused")
        return "real"

    assert await fn(True) == "from fallback"

    async def child() -> FallbackEvent | None:
        return callpolicy.last_fallback()

    assert await asyncio.create_task(child()) is None  # not inherited from this task
    assert list(await asyncio.gather(fn(False))) == ["real"]
    event = callpolicy.last_fallback()  # the gathered call ran in a task of its own
    assert event is not None and event.policy == "api.get"
    assert await fn(False) == "real"
    assert callpolicy.last_fallback() is None


def test_hooks_get_every_use_and_the_log_says_it_once(
    api: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callpolicy")
    events: list[FallbackEvent] = []

    def broken_hook(event: FallbackEvent) -> None:
        raise RuntimeError("a hook's own bug")

    removers = [
        callpolicy.add_hook(events.append, ["fallback"]),
        callpolicy.add_hook(broken_hook, ["fallback"]),
    ]
    try:
        fn = api.policy("api.get")(failing(ConnectionError("refused")))
        assert [fn() for _ in range(3)] == ["from fallback"] * 3  # hooks change nothing
    finally:
        for remove in removers:
            remove()
    assert [e.give_up for e in events] == ["retries"] * 3
    said = [r.getMessage() for r in caplog.records if "(fallback)" in r.getMessage()]
    assert said == [
        "api.get: gave up (retries: ConnectionError: refused); calling the fallback "
        f"{HERE}.answer_from_fallback (fallback) (said at most once a minute per policy and kind)"
    ]
    hook_lines = [r for r in caplog.records if "on a fallback event" in r.getMessage()]
    assert len(hook_lines) == 1


def test_no_secret_of_a_url_in_the_log_the_event_or_the_hooks(
    api: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callpolicy")
    events: list[FallbackEvent] = []
    remove = callpolicy.add_hook(events.append, ["fallback"])

    @api.policy("api.http")
    def fetch() -> None:
        response = requests.Response()
        response.status_code, response.reason = 500, "Internal Server Error"
        response.url = "https://bob:hunter2@api.example.com/v1/offers?api_key=SECRET#frag"
        response.request = requests.Request("GET", response.url).prepare()
        response.raise_for_status()  # requests' own HTTPError: "... for url: <the URL>"

    try:
        assert fetch() == "from fallback"
    finally:
        remove()
    said = " ".join(r.getMessage() for r in caplog.records)
    cause = "HTTPError: 500 Server Error: Internal Server Error for url: "
    assert f"(retries: {cause}https://***@api.example.com/v1/offers);" in said
    assert events[0].cause == f"{cause}https://***@api.example.com/v1/offers"
    for text in (said, events[0].cause, repr(events[0])):
        assert "SECRET" not in text and "hunter2" not in text


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        (
            "HTTPSConnectionPool(host='h', port=443): Max retries exceeded with url: "
            "/v1/x?token=SECRET (Caused by X)",
            "HTTPSConnectionPool(host='h', port=443): Max retries exceeded with url: "
            "/v1/x (Caused by X)",
        ),
        ("down (redis://:SECRET@cache:6379/0), again", "down (redis://***@cache:6379/0), again"),
        ("no URL here: a=SECRET?", "no URL here: a=SECRET?"),
    ],
)
def test_errors_are_described_without_the_secrets_of_their_urls(said: str, shown: str) -> None:
    assert describe_exception(ConnectionError(said)) == f"ConnectionError: {shown}"


# -- last_good -------------------------------------------------------------------------------------
CACHED = f"""
[endpoints.search]
retry.on_exceptions = ["ConnectionError"]
wait = {{ strategy = "fixed", seconds = "1s" }}
stop.attempts = 2
fallback = {{ last_good = "10s", max_entries = 2 }}

[endpoints.keyed]
retry.on_exceptions = ["ConnectionError"]
stop.attempts = 1
fallback = {{ last_good = "10s", key = "{HERE}.by_first" }}

[endpoints.cached_then_called]
retry.on_exceptions = ["ConnectionError"]
stop.attempts = 1
fallback = {{ last_good = "10s", call = "{HERE}.answer_from_fallback" }}
"""


class Server:
    """Answers `query` -> "answer N" until `down`, then raises ConnectionError."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def __call__(self, query: Any, extra: Any = None) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionError("down")
        return f"{query} {self.calls}"


@pytest.fixture
def cached(registry_of: RegistryOf) -> Registry:
    return registry_of(api=CACHED)


def test_last_good_serves_the_same_arguments_result_within_its_age(
    cached: Registry, clock: FakeClock
) -> None:
    server = Server()
    search = cached.policy("api.search")(server)
    assert search("gpu") == "gpu 1"
    assert search("cpu") == "cpu 2"
    server.down = True
    clock.advance(5.0)
    assert search("gpu") == "gpu 1"  # 5 s + the 1 s retry sleep old
    event = callpolicy.last_fallback()
    assert event is not None and event.source == "last_good" and event.age == 6.0
    with pytest.raises(ConnectionError):  # never stored: the give-up is the outcome
        search("tpu")
    clock.advance(4.5)
    with pytest.raises(ConnectionError):  # 11.5 s old: past last_good
        search("cpu")
    assert callpolicy.last_fallback() is None


async def test_last_good_serves_async_calls(cached: Registry, clock: FakeClock) -> None:
    server = Server()

    @cached.policy("api.search")
    async def search(query: str) -> str:
        return server(query)

    assert await search("gpu") == "gpu 1"
    server.down = True
    assert await search("gpu") == "gpu 1"


def test_last_good_keeps_max_entries_least_recently_used_dropped(
    cached: Registry, clock: FakeClock
) -> None:
    server = Server()
    search = cached.policy("api.search")(server)
    search("a"), search("b")
    server.down = True
    assert search("a") == "a 1"  # served: "a" is now the most recently used
    server.down = False
    search("c")  # a third entry: "b" goes
    server.down = True
    assert search("a") == "a 1"
    assert search("c") == "c 5"
    with pytest.raises(ConnectionError):
        search("b")


def test_unhashable_arguments_are_not_kept_and_said_once(
    cached: Registry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callpolicy")
    server = Server()
    search = cached.policy("api.search")(server)
    assert search(["gpu"]) == "['gpu'] 1"
    assert search(["gpu"]) == "['gpu'] 2"
    server.down = True
    with pytest.raises(ConnectionError):
        search(["gpu"])
    said = [r.getMessage() for r in caplog.records if "keeps no result" in r.getMessage()]
    assert len(said) == 1
    assert said[0].startswith(
        "api.search: fallback.last_good keeps no result of this call: its arguments are not "
        "hashable (unhashable type: 'list'); name a key function"
    )


def key_refusing(query: Any, extra: Any = None) -> Any:
    raise ValueError(f"no key for {query}")


def test_a_key_functions_error_is_said_once_whatever_its_text(
    registry_of: RegistryOf, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callpolicy")
    policies = f"""
[endpoints.refused]
fallback = {{ last_good = "10s", key = "{HERE}.key_refusing" }}
"""
    search = registry_of(api=policies).policy("api.refused")(Server())
    for query in range(3):
        search(query)
    said = [r.getMessage() for r in caplog.records if "keeps no result" in r.getMessage()]
    assert len(said) == 1 and "ValueError: no key for 0" in said[0]


def test_a_key_function_chooses_what_counts_as_the_same_arguments(
    cached: Registry, clock: FakeClock
) -> None:
    server = Server()
    keyed = cached.policy("api.keyed")(server)
    assert keyed("gpu", extra=["unhashable"]) == "gpu 1"
    server.down = True
    assert keyed("gpu", extra=["other"]) == "gpu 1"  # the key is the first argument only


def test_last_good_first_then_the_fallback_function(cached: Registry, clock: FakeClock) -> None:
    server = Server()
    fn = cached.policy("api.cached_then_called")(server)
    assert fn("gpu") == "gpu 1"
    server.down = True
    assert fn("gpu") == "gpu 1"
    assert fn("cpu") == "from fallback"
    event = callpolicy.last_fallback()
    assert event is not None and event.source == "call"


def test_a_fallback_result_is_never_kept_as_a_good_one(cached: Registry, clock: FakeClock) -> None:
    server = Server()
    server.down = True
    fn = cached.policy("api.cached_then_called")(server)
    assert fn("cpu") == "from fallback"
    assert fn("cpu") == "from fallback"
    assert len(SEEN) == 2


def test_two_functions_of_one_policy_never_serve_each_others_results(
    cached: Registry, clock: FakeClock
) -> None:
    users, invoices = Server(), Server()

    @cached.policy("api.search")
    def get_user(i: int) -> str:
        return f"user {users(i)}"

    @cached.policy("api.search")
    def get_invoice(i: int) -> str:
        return f"invoice {invoices(i)}"

    assert get_user(42) == "user 42 1"
    invoices.down = True
    with pytest.raises(ConnectionError):  # not the user's result for 42
        get_invoice(42)
    users.down = True
    assert get_user(42) == "user 42 1"


def test_a_key_function_keys_each_decorated_function_apart(
    cached: Registry, clock: FakeClock
) -> None:
    first, second = Server(), Server()
    one = cached.policy("api.keyed")(first)
    other = cached.policy("api.keyed")(second)
    assert one("gpu") == "gpu 1"
    second.down = True
    with pytest.raises(ConnectionError):
        other("gpu")


# -- fallback = false ----------------------------------------------------------------------------
def test_fallback_false_drops_an_inherited_fallback(
    registry_of: RegistryOf, clock: FakeClock
) -> None:
    policies = f"""
[defaults]
retry.on_exceptions = ["ConnectionError"]
stop.attempts = 1
fallback.call = "{HERE}.answer_from_fallback"

[endpoints.inherits]

[endpoints.none]
fallback = false

[endpoints.own]
extends = "none"
fallback.last_good = "10s"
"""
    api = registry_of(api=policies)
    error = ConnectionError("refused")
    assert api.policy("api.inherits")(failing(error))() == "from fallback"
    with pytest.raises(ConnectionError):
        api.policy("api.none")(failing(error))()
    assert api.get("api.none").fallback is None
    own = api.get("api.own").fallback  # a table after false starts afresh: no inherited call
    assert own is not None and own.call is None and own.last_good == 10.0


def test_fallback_true_is_an_error_naming_false(registry_of: RegistryOf) -> None:
    with pytest.raises(callpolicy.PolicyError, match=r"fallback.*must be a table or false"):
        registry_of(api="[endpoints.x]\nfallback = true\n")
