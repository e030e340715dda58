"""Summarise a batch of documents and answer an urgent question with a mock Anthropic API.

The Anthropic seed: new accounts hit 429 (RateLimitError) within minutes, the app did not
tell a passing rate limit from an account-level one, and the advice was a local request
queue, several API keys, priorities and friendly messages. Here the rules live in
examples/policies/anthropic.toml (a minute scaled down to 2 s) and the client shows:

* tokens per minute as a weighted quota: a call takes its estimated tokens before it is
  sent (`cost=`) and the usage the reply reports once it returns (`actual_cost=`);
* a pool of two API keys: each call takes the first key with room and sends it, read with
  `callpolicy.pool_key("anthropic.keys")`;
* an urgent question asked with `call_options(priority=10)` goes before the batch's waiting
  calls;
* 429s wait what the server says (its RFC 3339 reset time, else retry-after), and errors
  are retried or not as its x-should-retry says (`retry.should_retry_header`);
* a user's own key whose credit is gone: `retry.give_up` raises `callpolicy.AccountLimit`
  at once, and the app says so in words instead of retrying.

The mock API (below; standard library only, 127.0.0.1) enforces 5 requests per 2 s per key
and 6000 tokens per 2 s for the organisation, both keys together. The app has just
restarted: the server still counts the 3 requests its previous process sent on key_a, which
this process's quotas cannot know about, so some of its first calls on key_a meet 429s.

    python examples/anthropic_client.py [--quiet]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from mock_api import log_sleeps

import callpolicy
from callpolicy import SleepEvent, policy

POLICIES = Path(__file__).resolve().parent / "policies"
APP_KEYS = {  # pool member -> the API key it stands for
    "anthropic.key_a": "sk-ant-demo-aaaa",
    "anthropic.key_b": "sk-ant-demo-bbbb",
}
SPENT_KEY = "sk-ant-demo-cccc"  # a user's own key: its credit is gone
PERIOD = 2.0  # the mock's "minute"
REQUESTS_PER_KEY = 5
TOKENS_PER_ORG = 6000
LEFTOVERS = 3  # requests the previous process sent on key_a just before the restart


# -- the mock Messages API ---------------------------------------------------------------------
@dataclass
class Arrival:
    at: float  # time.monotonic()
    key: str
    user: str
    status: int
    error: str = ""  # the error type of a non-200 answer
    tokens: int = 0  # input + output tokens of a 200


class MockAnthropic:
    """POST /v1/messages: 5 requests per 2 s per key, 6000 tokens per 2 s for both keys.

    A request counts on arrival, refused ones not. The tokens check reserves `max_tokens`
    for the output before the reply is known, then counts the usage the reply reports. A 429
    carries `retry-after` (whole seconds, rounded up) and the reset time of the limit it hit
    (`anthropic-ratelimit-requests-reset` or `-tokens-reset`, RFC 3339, to the millisecond).
    The spent key gets a 429 whose body says `insufficient_quota`, with a retry-after like
    every 429 of this mock: only the body tells the account-level limit apart. (Providers
    word it differently; Anthropic's API has answered a low credit balance with a 400
    invalid_request_error. Write the policy's give_up rule after what yours sends.)
    """

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.keys = {*APP_KEYS.values(), SPENT_KEY}
        self._requests: dict[str, deque[float]] = {key: deque() for key in self.keys}
        self._tokens: deque[tuple[float, int]] = deque()
        self.arrivals: list[Arrival] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "use the mock in a `with` block"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> MockAnthropic:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def answer(self, key: str, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, headers) for one POST /v1/messages."""
        user = str(body.get("metadata", {}).get("user_id", "")) if isinstance(body, dict) else ""
        with self._lock:
            now = time.monotonic()
            if key not in self.keys:
                return self._error(now, key, user, 401, "authentication_error", "invalid x-api-key")
            if key == SPENT_KEY:
                message = "Your credit balance is too low to access the API. Add credits."
                return self._error(now, key, user, 429, "insufficient_quota", message, 1.0)
            try:
                prompt = body["messages"][-1]["content"]
                max_tokens = int(body["max_tokens"])
            except (KeyError, IndexError, TypeError, ValueError):
                return self._error(now, key, user, 400, "invalid_request_error", "bad body")
            input_tokens = max(1, len(prompt) // 4)  # the mock's tokenizer
            requests = self._requests[key]
            while requests and requests[0] <= now - PERIOD:
                requests.popleft()
            while self._tokens and self._tokens[0][0] <= now - PERIOD:
                self._tokens.popleft()
            if len(requests) >= REQUESTS_PER_KEY:
                wait = requests[0] + PERIOD - now
                return self._limited(now, key, user, "requests", wait)
            used = sum(tokens for _, tokens in self._tokens)
            if used + input_tokens + max_tokens > TOKENS_PER_ORG:
                wait = self._tokens_free_in(now, TOKENS_PER_ORG - input_tokens - max_tokens)
                return self._limited(now, key, user, "tokens", wait)
            output_tokens = self._random.randint(max(1, max_tokens // 3), max_tokens)
            requests.append(now)
            self._tokens.append((now, input_tokens + output_tokens))
            self.arrivals.append(Arrival(now, key, user, 200, tokens=input_tokens + output_tokens))
            remaining = REQUESTS_PER_KEY - len(requests)
        reply = {
            "id": f"msg_{len(self.arrivals):04d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": [{"type": "text", "text": f"A summary in {output_tokens} tokens."}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
        return 200, reply, {"anthropic-ratelimit-requests-remaining": str(remaining)}

    def _tokens_free_in(self, now: float, room: int) -> float:
        """Seconds until the window holds at most `room` tokens."""
        used = sum(tokens for _, tokens in self._tokens)
        for at, tokens in self._tokens:
            used -= tokens
            if used <= room:
                return at + PERIOD - now
        return PERIOD

    def _limited(
        self, now: float, key: str, user: str, limit: str, wait: float
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        status, body, headers = self._error(
            now, key, user, 429, "rate_limit_error", f"{limit} per minute exceeded", wait
        )
        reset = datetime.fromtimestamp(time.time() + wait, tz=timezone.utc)
        headers[f"anthropic-ratelimit-{limit}-reset"] = reset.isoformat(timespec="milliseconds")
        headers[f"anthropic-ratelimit-{limit}-remaining"] = "0"
        self.arrivals[-1].error = f"{limit} limit"
        return status, body, headers

    def _error(
        self,
        now: float,
        key: str,
        user: str,
        status: int,
        kind: str,
        message: str,
        retry_after: float | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.arrivals.append(Arrival(now, key, user, status, kind))
        headers = {} if retry_after is None else {"retry-after": str(math.ceil(retry_after))}
        # The server's own word on retrying, as Anthropic's API sends it: a rate limit passes,
        # a spent account, a bad key or a bad body does not.
        headers["x-should-retry"] = "true" if kind == "rate_limit_error" else "false"
        return status, {"type": "error", "error": {"type": kind, "message": message}}, headers


def _handler(api: MockAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers: dict[str, str] = {}
            if self.path != "/v1/messages":
                status, body = 404, {"type": "error"}
            else:
                try:
                    request = json.loads(raw)
                except ValueError:
                    request = None
                status, body, headers = api.answer(self.headers.get("x-api-key", ""), request)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the example prints its own account."""

    return Handler


# -- the client --------------------------------------------------------------------------------
def estimated_tokens(_client: Any, prompt: str, max_tokens: int, user: str) -> float:
    """A call's tokens before it is sent: the prompt at 3 characters a token (an
    overestimate: the mock's tokenizer counts 4) and all of max_tokens."""
    return len(prompt) // 3 + max_tokens


def used_tokens(reply: dict[str, Any]) -> float:
    """A call's tokens once it returned: what the reply's usage says."""
    usage = reply["usage"]
    return float(usage["input_tokens"] + usage["output_tokens"])


class APIStatusError(Exception):
    """A non-2xx answer, as the Anthropic SDK raises it: `status_code`, the error's `type`,
    and the `response`, where the policy reads the status, the headers and the body."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            error = response.json()["error"]
            kind, message = str(error["type"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            kind, message = "unknown", response.text[:200]
        super().__init__(f"{response.status_code} {kind}: {message}")
        self.status_code = response.status_code
        self.type = kind
        self.message = message
        self.response = response


class AnthropicClient:
    """The requests themselves; which key, when, and whether to try again is the policy's."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def _post(self, api_key: str, prompt: str, max_tokens: int, user: str) -> dict[str, Any]:
        response = self.http.post(
            "/v1/messages",
            headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
            json={
                "model": "claude-demo",
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": prompt}],
                "metadata": {"user_id": user},
            },
        )
        if response.is_error:
            raise APIStatusError(response)
        reply: dict[str, Any] = response.json()
        return reply

    @policy("anthropic.messages", cost=estimated_tokens, actual_cost=used_tokens)
    def message(self, prompt: str, max_tokens: int, user: str) -> dict[str, Any]:
        """With whichever of the app's keys the pool gave this attempt."""
        member = callpolicy.pool_key("anthropic.keys")  # e.g. "anthropic.key_b"
        reply = self._post(APP_KEYS[member], prompt, max_tokens, user)
        reply["sent_with"] = member.removeprefix("anthropic.")  # for the demo's output
        return reply

    @policy("anthropic.own_key")
    def message_with_key(
        self, api_key: str, prompt: str, max_tokens: int, user: str
    ) -> dict[str, Any]:
        """With a user's own key (their limits, their credit)."""
        return self._post(api_key, prompt, max_tokens, user)

    def close(self) -> None:
        self.http.close()


def document(number: int, rng: random.Random) -> str:
    words = ["quota", "latency", "retry", "window", "token", "priority", "budget", "limit"]
    body = " ".join(rng.choice(words) for _ in range(rng.randint(250, 420)))
    return f"Summarise report {number} in three sentences:\n{body}"


class SleepCounter:
    """Sorts callpolicy's sleeps: retries (and how many on the server's word), quota waits."""

    def __init__(self) -> None:
        self.retries = self.hinted = self.quota_waits = 0
        self.quota_seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: SleepEvent) -> None:
        with self._lock:
            if event.source == "backoff":
                self.retries += 1
                self.hinted += event.hint is not None
            else:
                self.quota_waits += 1
                self.quota_seconds += event.seconds


def restart_leftovers(base_url: str, count: int) -> None:
    """What the previous process sent on key_a just before the restart: tiny requests the
    server still counts, and this process's quotas know nothing of."""
    with httpx.Client(base_url=base_url) as http:
        for _ in range(count):
            http.post(
                "/v1/messages",
                headers={"x-api-key": APP_KEYS["anthropic.key_a"]},
                json={"max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]},
            )


def server_message(error: callpolicy.AccountLimit) -> str:
    """What the server said, from the error the policy stopped on."""
    answer = error.response  # the APIStatusError the call raised
    return answer.message if isinstance(answer, APIStatusError) else str(answer)


_print_lock = threading.Lock()


def say(line: str) -> None:
    """print() from several threads, one whole line at a time."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def busiest_window(arrivals: list[Arrival]) -> int:
    """The most tokens the server counted in any PERIOD-long window (ending at an arrival)."""
    served = [(a.at, a.tokens) for a in arrivals if a.status == 200]
    return max(
        (sum(t for at, t in served if end - PERIOD < at <= end) for end, _ in served), default=0
    )


class Demo:
    """The batch, the urgent question and the spent key; what each call asked and got."""

    def __init__(self, client: AnthropicClient, documents: list[str]) -> None:
        self.client = client
        self.documents = documents
        self.submitted: dict[str, float] = {}  # user -> when the call was made
        self.replies: dict[str, dict[str, Any]] = {}
        self.account_limits = 0

    def summarise(self, number: int) -> None:
        user = f"batch-{number:02d}"
        self.submitted[user] = time.monotonic()
        reply = self.client.message(self.documents[number - 1], 300, user)
        self.replies[user] = reply
        usage = reply["usage"]
        took = time.monotonic() - self.submitted[user]
        say(
            f"{user} ({reply['sent_with']}): {usage['input_tokens']} + "
            f"{usage['output_tokens']} tokens, after {took:.2f} s"
        )

    def urgent(self) -> None:
        say("a user asks an urgent question (priority 10)")
        self.submitted["urgent"] = time.monotonic()
        with callpolicy.call_options(priority=10):  # before every waiting batch call
            reply = self.client.message("What is our quota today?", 200, "urgent")
        self.replies["urgent"] = reply
        took = time.monotonic() - self.submitted["urgent"]
        say(f"urgent ({reply['sent_with']}): answered after {took:.2f} s")

    def run(self) -> float:
        """Everything, in order; the seconds it took."""
        started = time.monotonic()
        say(f"a batch of {len(self.documents)} summaries from 6 threads (priority 0)")
        with ThreadPoolExecutor(max_workers=6) as pool:
            done = pool.map(self.summarise, range(1, len(self.documents) + 1))
            time.sleep(0.8)  # the batch is under way when a user asks something
            self.urgent()
            list(done)  # re-raise a batch call's error, if any

        say("\na user brings their own key, whose credit is gone")
        try:
            self.client.message_with_key(SPENT_KEY, "Hello!", 100, "own-key")
        except callpolicy.AccountLimit as exc:  # not a rate limit: no retry, no waiting
            self.account_limits += 1
            say(f"the quota is gone for good: {server_message(exc)} ({exc})")
        return time.monotonic() - started


def report(demo: Demo, arrivals: list[Arrival], counter: SleepCounter, elapsed: float) -> int:
    """Print the summary, from the server's records; the exit status."""
    ours = [a for a in arrivals if a.user]  # the previous process sent no user_id
    names = {key: member.removeprefix("anthropic.") for member, key in APP_KEYS.items()}
    names[SPENT_KEY] = "own key"
    sent = Counter(names[a.key] for a in ours)
    tokens: Counter[str] = Counter()
    for arrival in ours:
        tokens[names[arrival.key]] += arrival.tokens
    errors = Counter(a.error for a in ours if a.status == 429)
    first = {user: min(a.at for a in ours if a.user == user) for user in demo.submitted}
    # Batch calls asked before the urgent one whose first request reached the server after it.
    asked = demo.submitted["urgent"]
    overtaken = sum(
        1
        for user, at in demo.submitted.items()
        if user != "urgent" and at < asked and first[user] > first["urgent"]
    )
    batch_done = sum(1 for user in demo.replies if user != "urgent")
    print("\nsummary")
    print(f"  replies           {batch_done} of {len(demo.documents)} batch, urgent answered")
    print(f"  urgent            went ahead of {overtaken} batch calls asked before it")
    print(
        f"  requests sent     {len(ours)} (key_a {sent['key_a']}, key_b {sent['key_b']}, "
        f"own key {sent['own key']}) + {LEFTOVERS} by the previous process"
    )
    print(
        f"  HTTP 429          {sum(errors.values())} (requests limit {errors['requests limit']}, "
        f"tokens limit {errors['tokens limit']}, insufficient_quota "
        f"{errors['insufficient_quota']})"
    )
    print(f"  retries           {counter.retries} ({counter.hinted} on the server's reset time)")
    print(
        f"  account limits    {demo.account_limits} shown, "
        f"own key sent {sent['own key']} request(s)"
    )
    print(f"  tokens used       key_a {tokens['key_a']}, key_b {tokens['key_b']}")
    print(
        f"  busiest window    {busiest_window(arrivals)} tokens in {PERIOD:g} s "
        f"(limit {TOKENS_PER_ORG})"
    )
    print(f"  quota waits       {counter.quota_waits} ({counter.quota_seconds:.2f} s slept)")
    print(f"  elapsed           {elapsed:.2f} s")
    return 0 if batch_done == len(demo.documents) and demo.account_limits == 1 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=10, help="batch size (10)")
    parser.add_argument("--quiet", action="store_true", help="do not log each sleep")
    args = parser.parse_args(argv)
    log_sleeps(quiet=args.quiet)

    callpolicy.load(POLICIES)  # the directory next to this file: runs from any cwd
    counter = SleepCounter()
    remove_hook = callpolicy.add_sleep_hook(counter)
    rng = random.Random(5)
    documents = [document(n, rng) for n in range(1, args.documents + 1)]
    try:
        with MockAnthropic(seed=5) as api:
            restart_leftovers(api.url, LEFTOVERS)
            demo = Demo(AnthropicClient(api.url), documents)
            try:
                elapsed = demo.run()
            finally:
                demo.client.close()
    finally:
        remove_hook()
    return report(demo, api.arrivals, counter, elapsed)


if __name__ == "__main__":
    sys.exit(main())
