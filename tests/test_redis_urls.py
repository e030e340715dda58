"""The parts of Redis storage URLs (callpolicy._model.redis_url), for every topology."""

from __future__ import annotations

import re

import pytest

from callpolicy._model import CLUSTER, SENTINEL, RedisAddress, redis_address

SERVER = "server"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", RedisAddress(SERVER, False, (("localhost", 6379),))),
        ("redis://h", RedisAddress(SERVER, False, (("h", 6379),))),
        (
            "rediss://user:p%40ss%3A@h:7000/3",
            RedisAddress(SERVER, True, (("h", 7000),), "user", "p@ss:", db=3),
        ),
        (
            "redis+sentinel://:pw@s1,s2:26380,[::1]:26381/my-primary/2",
            RedisAddress(
                SENTINEL,
                False,
                (("s1", 26379), ("s2", 26380), ("::1", 26381)),
                None,
                "pw",
                "my-primary",
                2,
            ),
        ),
        (
            "rediss+cluster://u:pw@n1:7000,n2:7001/",
            RedisAddress(CLUSTER, True, (("n1", 7000), ("n2", 7001)), "u", "pw"),
        ),
        ("redis+cluster://n1:7000/0", RedisAddress(CLUSTER, False, (("n1", 7000),))),
    ],
)
def test_a_redis_url_gives_its_parts(url: str, expected: RedisAddress) -> None:
    found = redis_address(url)
    assert found == expected
    assert (found.username, found.password) == (expected.username, expected.password)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://h:1/0", "unknown scheme"),
        ("redis+replica://h:1/0", "unknown scheme"),
        ("redis://a:1,b:2/0", "several hosts: use redis+sentinel:// or redis+cluster://"),
        ("redis+cluster://a:1,,b:2", "no host"),
        ("redis+cluster://a:70000", "not a valid port"),
        ("redis+cluster://a:1/1", "a Cluster has database 0 only"),
        ("redis+sentinel://a:1", "no service name: write redis+sentinel://host:port/service"),
        ("redis+sentinel://a:1/svc/x", "the path must be a database number"),
        ("redis://:pw@a:1/x", "the path must be a database number"),
    ],
)
def test_a_bad_redis_url_says_why_without_its_password(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        redis_address(url)


def test_the_repr_of_a_redis_address_holds_no_credentials() -> None:
    shown = repr(redis_address("redis+cluster://admin:s3cret@n1:7000"))
    assert "s3cret" not in shown
    assert "admin" not in shown
