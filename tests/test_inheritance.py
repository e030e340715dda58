"""[defaults], then extends, then the endpoint's own keys, merged key by key."""

from __future__ import annotations

from collections.abc import Callable

from callpolicy import Registry, Wait

RegistryOf = Callable[..., Registry]


def test_layers_apply_in_order_defaults_extends_own(registry_of: RegistryOf) -> None:
    registry = registry_of(
        http="""
        [endpoints.base]
        retry.on_status = [429]
        stop = { attempts = 4, deadline = "1m" }
        """,
        svc="""
        [defaults]
        stop.attempts = 9
        retry.on_status = [500]
        description = "from defaults"

        [endpoints.e]
        extends = "http.base"
        stop.attempts = 2
        """,
    )
    policy = registry.get("svc.e")
    assert policy.stop.attempts == 2  # own beats extends beats defaults
    assert policy.stop.deadline == 60.0  # from extends, kept beside the own attempts
    assert policy.retry.on_status == frozenset({429})  # lists are replaced, not merged
    assert policy.description == "from defaults"


def test_an_empty_list_drops_an_inherited_one(registry_of: RegistryOf) -> None:
    registry = registry_of(
        svc="""
        [defaults]
        retry.on_status = [429, 503]
        [endpoints.post]
        retry.on_status = []
        """
    )
    assert registry.get("svc.post").retry.on_status == frozenset()


def test_restating_the_default_strategy_keeps_inherited_wait_keys(registry_of: RegistryOf) -> None:
    registry = registry_of(
        svc="""
        [defaults]
        wait.initial = "5s"
        wait.jitter = "2s"
        [endpoints.e]
        wait.strategy = "exponential"
        wait.max = "60s"
        """
    )
    wait = registry.get("svc.e").wait
    assert (wait.initial, wait.jitter, wait.max) == (5.0, 2.0, 60.0)


def test_another_strategy_replaces_the_inherited_wait_table(registry_of: RegistryOf) -> None:
    registry = registry_of(
        svc="""
        [defaults]
        wait = { strategy = "exponential", initial = "5s", jitter = "2s" }
        [endpoints.e]
        wait = { strategy = "fixed", seconds = "1s" }
        """
    )
    assert registry.get("svc.e").wait == Wait("fixed", seconds=1.0)


def test_an_endpoint_may_extend_another_of_its_file(registry_of: RegistryOf) -> None:
    registry = registry_of(
        svc="""
        [endpoints.base]
        stop.attempts = 7
        quotas = ["2/1s"]
        [endpoints.e]
        extends = "base"
        """
    )
    assert registry.get("svc.e").stop.attempts == 7
    assert [q.name for q in registry.get("svc.e").quotas] == ["svc.e[2/1s]"]
