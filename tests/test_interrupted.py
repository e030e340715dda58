"""An interrupt (Ctrl-C, a signal handler that raises) at the worst instant leaves nothing
held and nothing lost: a quota's lock is released, a breaker's trial call given back.

The interrupt is raised by a trace at the first instruction after the lock is taken (the
first line on 3.13, which sends no opcode events here): deterministic, what a signal handler
would do there."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from callpolicy import FakeClock, Registry
from callpolicy._model.quotas import Quota, Rate
from callpolicy._quotas.memory import MemoryStorage

Tracer = Callable[[FrameType, str, Any], Any]


@pytest.mark.parametrize("method", ["take_one", "try_take"])
def test_an_interrupt_right_after_the_quota_lock_is_taken_releases_it(method: str) -> None:
    storage = MemoryStorage()
    group = storage.group([Quota(name="svc.q", rate=Rate(100, 1.0))])
    code = getattr(type(group), method).__code__
    fired: list[int] = []

    def tracer(frame: FrameType, event: str, arg: Any) -> Tracer | None:
        if frame.f_code is not code:
            return None
        frame.f_trace_opcodes = True

        def local(frame: FrameType, event: str, arg: Any) -> Tracer:
            # the first opcode (on 3.13, the first line: no opcode events there) traced
            # while the lock is held
            if event in ("opcode", "line") and not fired and storage.lock.locked():
                fired.append(frame.f_lasti)
                raise KeyboardInterrupt
            return local

        return local

    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            group.take_one() if method == "take_one" else group.try_take(1.0)
    finally:
        sys.settrace(None)
    assert fired, "the interrupt was never raised"
    assert not storage.lock.locked()  # else every later call of the registry would hang


BREAKER = """
[breakers.api]
window = 1
min_calls = 1
open_for = "30s"
probes = 1
on_status = [503]
on_exceptions = ["ConnectionError"]

[endpoints.get]
breaker = "api"
"""


def test_an_interrupt_while_the_breaker_reads_the_result_gives_the_trial_back(
    registry_of: Callable[..., Registry], clock: FakeClock
) -> None:
    registry = registry_of(svc=BREAKER)
    mode = {"fail": True, "interrupt": False}

    class Response:
        @property
        def status_code(self) -> int:  # read by the breaker (on_status)
            if mode["interrupt"]:
                mode["interrupt"] = False
                raise KeyboardInterrupt
            return 200

    def call() -> Response:
        if mode["fail"]:
            raise ConnectionError
        return Response()

    get = registry.policy("svc.get")(call)
    with pytest.raises(ConnectionError):
        get()  # opens the breaker
    clock.advance(30.0)
    mode.update(fail=False, interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        get()  # the one trial call, interrupted: no outcome
    assert get().status_code == 200  # given back: this call is the trial, and closes it
    assert registry.stats()["svc.get"].breaker == "closed"


INTERRUPTING = {"now": False}


def interrupting_predicate(error: BaseException) -> bool:
    """A retry predicate (the breaker judges by it) that is interrupted once when asked."""
    if INTERRUPTING["now"]:
        INTERRUPTING["now"] = False
        raise KeyboardInterrupt
    return isinstance(error, ConnectionError)


JUDGED = """
[breakers.api]
window = 1
min_calls = 1
open_for = "30s"
probes = 1

[endpoints.get]
breaker = "api"
retry.exception_predicate = "test_interrupted.interrupting_predicate"
stop.attempts = 1
"""


def test_an_interrupt_while_the_breaker_judges_an_error_gives_the_trial_back(
    registry_of: Callable[..., Registry], clock: FakeClock
) -> None:
    registry = registry_of(svc=JUDGED)
    mode = {"fail": True}

    def call() -> str:
        if mode["fail"]:
            raise ConnectionError
        return "ok"

    get = registry.policy("svc.get")(call)
    with pytest.raises(ConnectionError):
        get()  # opens the breaker
    clock.advance(30.0)
    INTERRUPTING["now"] = True
    with pytest.raises(KeyboardInterrupt):
        get()  # the one trial call fails, and judging it is interrupted: no outcome
    mode["fail"] = False
    assert get() == "ok"  # given back: this call is the trial, and closes it
    assert registry.stats()["svc.get"].breaker == "closed"
