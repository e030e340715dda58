"""@policy: binding, metadata, methods, coroutines, generators, reloading."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import callpolicy
from callpolicy import FakeClock, PolicyError, Registry, policy

WritePolicies = Callable[..., Path]

RETRY_TWICE = """
[endpoints.get]
retry.on_exceptions = ["ConnectionError"]
wait.strategy = "none"
stop.attempts = 2
"""


class Failing:
    """Raises ConnectionError on the first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("down")
        return self.calls


def test_decorating_before_loading_binds_on_the_first_call(
    default_registry: Registry, write_policies: WritePolicies, clock: FakeClock
) -> None:
    flaky = Failing(1)
    fn = policy("api.get")(flaky)
    assert flaky.calls == 0
    callpolicy.load(write_policies(api=RETRY_TWICE))
    assert fn() == 2


def test_default_registry_reads_callpolicy_path(
    default_registry: Registry,
    write_policies: WritePolicies,
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
) -> None:
    monkeypatch.setenv("CALLPOLICY_PATH", str(write_policies(api=RETRY_TWICE)))
    default_registry.__init__(lazy=True)  # type: ignore[misc]
    assert policy("api.get")(Failing(1))() == 2


def test_an_unknown_name_says_where_and_suggests_the_closest(
    registry_of: Callable[..., Registry],
) -> None:
    registry = registry_of(spotify="[endpoints.tracks]\n")

    @registry.policy("spotify.trakcs")
    def track() -> None: ...

    with pytest.raises(PolicyError) as raised:
        track()
    [problem] = raised.value.problems
    assert problem.path == __file__
    assert problem.line == inspect.getsourcelines(track)[1]  # the decorator line
    assert problem.message.startswith(
        "no policy named 'spotify.trakcs'; did you mean 'spotify.tracks'?"
    )


def test_generator_functions_are_refused_at_decoration() -> None:
    def pages() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match=r"cannot wrap generator function .*pages"):
        policy("api.get")(pages)


def test_async_generator_functions_are_refused_too() -> None:
    async def pages() -> object:
        yield 1

    with pytest.raises(TypeError, match="cannot wrap generator function"):
        policy("api.get")(pages)


def test_name_docstring_and_signature_are_kept() -> None:
    def track(track_id: str, *, market: str = "US") -> dict[str, str]:
        """Fetch one track."""
        return {}

    wrapped = policy("spotify.tracks")(track)
    assert wrapped.__name__ == "track"
    assert wrapped.__doc__ == "Fetch one track."
    assert inspect.signature(wrapped) == inspect.signature(track)
    assert wrapped.__wrapped__ is track  # type: ignore[attr-defined]


def test_coroutine_functions_stay_coroutine_functions() -> None:
    async def track() -> None: ...

    assert inspect.iscoroutinefunction(policy("spotify.tracks")(track))


def test_methods_get_self(registry_of: Callable[..., Registry], clock: FakeClock) -> None:
    registry = registry_of(api=RETRY_TWICE)

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @registry.policy("api.get")
        def get(self, path: str) -> str:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("down")
            return f"{path} after {self.calls}"

        @registry.policy("api.get")
        async def aget(self) -> Client:
            return self

    client = Client()
    assert client.get("/x") == "/x after 2"


async def test_async_methods_get_self(registry_of: Callable[..., Registry]) -> None:
    registry = registry_of(api=RETRY_TWICE)

    class Client:
        @registry.policy("api.get")
        async def me(self) -> Client:
            return self

    client = Client()
    assert await client.me() is client


def test_a_broken_edit_never_replaces_loaded_policies(
    write_policies: WritePolicies, clock: FakeClock
) -> None:
    folder = write_policies(api=RETRY_TWICE)
    registry = Registry(folder)
    fn = registry.policy("api.get")(Failing(1))
    assert fn() == 2
    (folder / "api.toml").write_text(RETRY_TWICE.replace("attempts = 2", "attempts = 0"))
    with pytest.raises(PolicyError, match="must be >= 1"):
        registry.load()
    assert registry.get("api.get").stop.attempts == 2
    assert registry.policy("api.get")(Failing(1))() == 2


def test_a_good_edit_applies_to_already_decorated_functions(
    write_policies: WritePolicies, clock: FakeClock
) -> None:
    folder = write_policies(api=RETRY_TWICE)
    registry = Registry(folder)
    flaky = Failing(2)
    fn = registry.policy("api.get")(flaky)
    with pytest.raises(ConnectionError):
        fn()
    (folder / "api.toml").write_text(RETRY_TWICE.replace("attempts = 2", "attempts = 3"))
    registry.load()
    flaky.calls = 0
    assert fn() == 3


def test_loading_a_missing_directory_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file or directory"):
        Registry(tmp_path / "nope")


def test_policy_names_are_sorted(registry_of: Callable[..., Registry]) -> None:
    registry = registry_of(b="[endpoints.z]\n[endpoints.a]\n", a="[endpoints.m]\n")
    assert registry.names() == ["a.m", "b.a", "b.z"]


def test_public_api_is_exactly_the_sorted_all() -> None:
    assert callpolicy.__all__ == sorted(callpolicy.__all__)
    public = {n for n in vars(callpolicy) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(callpolicy, n))}
    assert set(callpolicy.__all__) == public - modules - {"annotations", "PathLike"}


class AsyncCallable:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls < 2:
            raise ConnectionError("down")
        return self.calls


async def test_an_object_with_an_async_call_is_retried_as_a_coroutine(
    registry_of: Callable[..., Registry], clock: FakeClock
) -> None:
    fn = registry_of(api=RETRY_TWICE).policy("api.get")(AsyncCallable())
    assert inspect.iscoroutinefunction(fn)
    assert await fn() == 2


async def test_a_wrapped_coroutine_function_is_retried_as_a_coroutine(
    registry_of: Callable[..., Registry], clock: FakeClock
) -> None:
    flaky = AsyncCallable()

    async def fetch() -> int:
        return await flaky()

    @functools.wraps(fetch)
    def plain_wrapper() -> Any:
        return fetch()

    fn = registry_of(api=RETRY_TWICE).policy("api.get")(plain_wrapper)
    assert await fn() == 2


def test_a_sync_function_returning_a_coroutine_is_refused_on_its_first_call(
    registry_of: Callable[..., Registry],
) -> None:
    async def fetch() -> int:
        return 1

    def start_fetch() -> Any:  # a plain function that forgets to await
        return fetch()

    fn = registry_of(api=RETRY_TWICE).policy("api.get")(start_fetch)
    with pytest.raises(TypeError, match="returned a coroutine, which no retry could cover"):
        fn()


def test_static_and_class_methods_can_be_decorated(
    registry_of: Callable[..., Registry], clock: FakeClock
) -> None:
    registry = registry_of(api=RETRY_TWICE)

    class Client:
        @registry.policy("api.get")
        @staticmethod
        def ping(value: int) -> int:
            return value

        @registry.policy("api.get")
        @classmethod
        def name(cls) -> str:
            return cls.__name__

    assert Client.ping(3) == 3
    assert Client().ping(4) == 4
    assert Client.name() == "Client"
