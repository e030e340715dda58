"""The Vast.ai and Anthropic examples run end to end against their mock APIs (127.0.0.1), from a
foreign working directory, and do what their seeds asked for; the learned limit example
follows a local server changing its limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from examples_helper import number, numbers, run_example, summary


def test_vastai_client(tmp_path: Path) -> None:
    output = run_example("vastai_client.py", cwd=tmp_path)
    values = summary(output)

    # Both instances were polled until they ran, waiting 100 ms growing x1.5 between polls.
    running = re.findall(r"^instance (\d+): running after (\d+) polls", output, re.MULTILINE)
    assert len(running) == 2, output
    assert values["instances"] == "2 of 2 running"
    polls = re.findall(
        r"vastai\.poll_instance: attempt (\d+) of 40 is not done yet \(returned \{'id': \d+, "
        r"'actual_status': 'loading'.*?\); sleeping ([\d.]+)s \(backoff\)$",
        output,
        re.MULTILINE,
    )
    assert polls, output
    for attempt, slept in polls:
        assert abs(float(slept) - min(0.1 * 1.5 ** (int(attempt) - 1), 0.6)) < 0.002
    assert numbers(values["polls"])[0] == sum(int(n) for _, n in running)

    # A 429 with Retry-After waited what the server said; a bare 429 backed off 100, 200 ms.
    hinted_sleep = re.search(
        r"vastai\.search: attempt 1 of 5 failed \(HTTPError: 429 .*\); sleeping ([\d.]+)s "
        r"\(Retry-After: ([\d.]+), instead of the backoff 0\.100s\)$",
        output,
        re.MULTILINE,
    )
    assert hinted_sleep, output
    assert float(hinted_sleep[1]) == float(hinted_sleep[2]) > 0.5  # the other script's burst
    bare = re.findall(
        r"vastai\.create_instance: attempt \d of 5 failed \(HTTPError: 429 .*\); "
        r"sleeping ([\d.]+)s \(backoff\)$",
        output,
        re.MULTILINE,
    )
    assert bare[:2] == ["0.100", "0.200"], output
    paced = r"vastai\.search: attempt 1 of 5 waited 0\.\d+s for quota vastai\.search \(1/200ms\)"
    assert len(re.findall(paced, output)) >= 2, output  # the batch search took its turns

    # Cached offers were served while throttled: by the client's own quota (non-blocking)
    # and by the server's 429 whose Retry-After was above what a refresh may wait.
    cached = re.findall(
        r"^refresh \S+: served \d+ cached offers, [\d.]+s old, while throttled \((.*)\)$",
        output,
        re.MULTILINE,
    )
    assert any(re.fullmatch(r"quota vastai\.\w+ frees in [\d.]+s", why) for why in cached)
    assert any(why.startswith("the server answered 429, Retry-After: ") for why in cached)
    # ...by the policy's fallback (last_good), which logged each kind of give-up once.
    for kind, error in (("quota", r"QuotaExceeded: "), ("retries", r"HTTPError: 429 ")):
        said = (
            rf"vastai\.refresh_offers: gave up \({kind}: {error}.*\); served the last good "
            r"result for these arguments, [\d.]+s old \(fallback\)"
        )
        assert len(re.findall(said, output)) == 1, output
    assert re.search(r"^refresh RTX_4090: \d+ offers \(fresh\)$", output, re.MULTILINE)
    fresh, from_cache = numbers(values["searches"])[1:3]
    assert fresh >= 1 and from_cache == len(cached) >= 2

    # The quota kept the minimum delay between the client's requests (arrivals at the server).
    assert numbers(values["closest requests"])[0] >= 80
    throttled = numbers(values["HTTP 429"])
    assert throttled[0] == throttled[1] + throttled[2] + throttled[3]  # search + create + show
    # Every 429 to the client was retried, but the refresh's, which served the cache instead.
    retries, hinted = numbers(values["retries"])
    assert retries == throttled[0] - sum(why.startswith("the server") for why in cached)
    assert hinted >= 1
    assert numbers(values["elapsed"])[0] < 15


def test_anthropic_client(tmp_path: Path) -> None:
    output = run_example("anthropic_client.py", cwd=tmp_path)
    values = summary(output)
    assert values["replies"] == "10 of 10 batch, urgent answered"

    # The spent key: AccountLimit at once, shown in words, one request and never retried,
    # although its 429 carried retry-after like the others.
    assert re.search(
        r"^the quota is gone for good: Your credit balance is too low .*\(anthropic\.own_key: "
        r"the server says the account's limit is reached \(HTTP 429, error\.type = "
        r"'insufficient_quota'\); not retrying\)$",
        output,
        re.MULTILINE,
    ), output
    assert values["account limits"] == "1 shown, own key sent 1 request(s)"
    assert "anthropic.own_key: attempt" not in output  # no sleep, no second attempt
    sent = re.fullmatch(
        r"(\d+) \(key_a (\d+), key_b (\d+), own key (\d+)\) \+ 3 by the previous process",
        values["requests sent"],
    )
    assert sent, values["requests sent"]
    total, key_a, key_b, own = map(int, sent.groups())
    assert own == 1 and total == key_a + key_b + own
    assert key_b >= 1  # the pool used both keys

    # The restart's 429s (key_a's requests limit) waited the server's RFC 3339 reset time;
    # the tokens quota kept every window under the organisation's limit: no tokens 429.
    limited = re.fullmatch(
        r"(\d+) \(requests limit (\d+), tokens limit (\d+), insufficient_quota (\d+)\)",
        values["HTTP 429"],
    )
    assert limited, values["HTTP 429"]
    all_429, requests_429, tokens_429, account_429 = map(int, limited.groups())
    assert requests_429 >= 1 and tokens_429 == 0 and account_429 == 1
    assert all_429 == requests_429 + account_429
    retries, hinted = map(int, numbers(values["retries"]))
    assert retries == hinted == requests_429  # each rate-limit 429 retried once, on the hint
    assert re.search(
        r"anthropic\.messages: attempt 1 of 5 failed \(APIStatusError: 429 rate_limit_error: "
        r"requests per minute exceeded, x-should-retry: true\); sleeping [\d.]+s \("
        r"anthropic-ratelimit-requests-reset: \d{4}-\d\d-\d\dT[\d:.]+\+00:00 \(read as ",
        output,
    ), output
    busiest, window, limit = numbers(values["busiest window"])
    assert window == 2 and limit == 6000 and 0 < busiest <= limit
    assert all(n > 0 for n in numbers(values["tokens used"]))

    # The urgent question (priority 10) went before batch calls already waiting for quota.
    assert numbers(values["urgent"])[0] >= 1
    assert re.search(r"^urgent \(key_[ab]\): answered after ([\d.]+) s$", output, re.MULTILINE)
    assert numbers(values["elapsed"])[0] < 15


@pytest.mark.parametrize("algorithm", ["cubic", "aimd"])
def test_adaptive_rate(tmp_path: Path, algorithm: str) -> None:
    output = run_example("adaptive_rate.py", "--algorithm", algorithm, cwd=tmp_path)
    values = summary(output)
    cut = re.findall(
        r"^quota adaptive.api: limit (\S+) -> (\S+) \(HTTP 429: (.+)\)$", output, re.MULTILINE
    )
    assert cut, output  # each cut logged, with why
    assert number(values["congestion events"]) >= 1
    assert 5 <= number(values["rate at the end"]) <= 50
    # A fixed 20/1s is refused about 40 times in the 4 s of 10/s; the adapted rate a few.
    assert number(values["10/s phase"].split(", ")[1]) < 20, output


@pytest.mark.parametrize("style", ["ietf", "github"])
def test_learned_limit(tmp_path: Path, style: str) -> None:
    output = run_example("learned_limit.py", "--style", style, cwd=tmp_path)
    values = summary(output)
    quota = "learned.github" if style == "github" else "learned.api"
    said = re.findall(rf"^quota {quota}: limit (\S+) -> (\S+) \((.+)\)$", output, re.MULTILINE)
    assert [(old, new) for old, new, _ in said] == [("20/1s", "10/1s"), ("10/1s", "30/1s")], output
    header = (
        "X-RateLimit-Limit: 10" if style == "github" else 'RateLimit-Policy: "default";q=10;w=1'
    )
    assert said[0][2] == header
    assert values["learned limit"] == "30/1s"
    # Only requests admitted before the first response announcing 10/s was back are refused.
    for phase in ("20/s phase", "30/s phase"):
        assert values[phase].endswith(", 0 refused by the server (429)"), output
