"""An OpenTelemetry hook (`opentelemetry-api`, the `opentelemetry` extra): a span per call,
an event on it per attempt, sleep, quota refusal and give-up, and metrics.

The span is started when the call's first attempt begins and made current for the call, so
the spans of an instrumented HTTP client inside it are its children; it ends with the call
(the call's trace runs the clean-up, even if the hook was removed meanwhile), its status an
error if the call raised. Spans open at once are bounded: past `MAX_OPEN_SPANS` (calls in
flight), further calls are not traced, said once a minute.
"""

from __future__ import annotations

import threading
from typing import Any

try:
    from opentelemetry import context, metrics, trace
    from opentelemetry.trace import Span, Status, StatusCode
except ImportError as missing:  # imported only when asked for: say what to install
    raise ImportError(
        "callpolicy's OpenTelemetry hook needs opentelemetry-api: "
        "pip install 'callpolicy[opentelemetry]'"
    ) from missing

from callpolicy._events import current_trace
from callpolicy._forks import renew_after_fork
from callpolicy._text import Throttled

MAX_OPEN_SPANS = 10_000
_LIBRARY = "callpolicy"
_too_many = Throttled(60.0)


class OpenTelemetryHook:
    """`callpolicy.add_hook(OpenTelemetryHook())`: spans from the global tracer provider
    (or `tracer_provider`), metrics from the global meter provider (or `meter_provider`)."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer = trace.get_tracer(_LIBRARY, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_LIBRARY, meter_provider=meter_provider)
        self.calls = meter.create_counter("callpolicy.calls", "{call}", "Calls ended")
        self.retries = meter.create_counter("callpolicy.retries", "{attempt}", "Retries")
        self.sleeps = meter.create_histogram(
            "callpolicy.sleep.duration", "s", "Sleeps between attempts and quota waits"
        )
        self._open: dict[int, Span] = {}
        self._lock = threading.Lock()
        renew_after_fork(self)

    def after_fork(self) -> None:
        """In a forked child: the parent's calls in flight are not the child's."""
        self._lock = threading.Lock()
        self._open = {}

    def __call__(self, event: Any) -> None:
        kind = event.kind
        if kind == "attempt_start" and event.attempt == 1:
            self._start(event)
            return
        with self._lock:
            opened = self._open.get(event.call_id)
        if kind == "sleep":
            self.sleeps.record(event.seconds, {"policy": event.policy, "source": event.source})
        elif kind == "attempt_start":
            self.retries.add(1, {"policy": event.policy})
        if opened is None:
            return
        span = opened
        if kind == "call_end":
            self._end(event, span)
        elif kind == "attempt_start":
            span.add_event("attempt", {"attempt": event.attempt})
        elif kind == "attempt_end":
            span.add_event(
                "attempt end",
                {
                    "attempt": event.attempt,
                    "outcome": event.outcome,
                    "retried": event.retried,
                    "seconds": event.seconds,
                },
            )
        elif kind == "sleep":
            span.add_event(
                "sleep",
                {"seconds": event.seconds, "source": event.source, "cause": event.cause},
            )
        else:  # give_up, quota_refused, breaker, budget, fallback
            span.add_event(kind.replace("_", " "), _attributes(event))

    def _start(self, event: Any) -> None:
        call = current_trace()
        if call is None or call.call_id != event.call_id:
            return  # not in the call's own thread or task: nothing to make current
        with self._lock:
            if len(self._open) >= MAX_OPEN_SPANS:
                _too_many.warn(
                    "otel-open",
                    "OpenTelemetry hook: %d calls in flight already traced; not tracing more",
                    MAX_OPEN_SPANS,
                )
                return
            span = self.tracer.start_span(
                f"callpolicy {event.policy}",
                attributes={
                    "callpolicy.policy": event.policy,
                    "callpolicy.call_id": event.call_id,
                },
            )
            self._open[event.call_id] = span
        token = context.attach(trace.set_span_in_context(span))

        def close() -> None:  # when the call is over, whether or not call_end reached us
            with self._lock:
                self._open.pop(event.call_id, None)
            try:
                context.detach(token)
            finally:
                span.end()

        call.at_end(close)

    def _end(self, event: Any, span: Span) -> None:
        span.set_attribute("callpolicy.attempts", event.attempt)
        outcome = "failure" if event.failed else "success"
        if event.failed:
            span.set_status(Status(StatusCode.ERROR, event.error))
        self.calls.add(1, {"policy": event.policy, "outcome": outcome})


def _attributes(event: Any) -> dict[str, Any]:
    """An event's fields that OpenTelemetry attributes can hold (str, bool, int, float)."""
    fields = getattr(type(event), "__attrs_attrs__", ())
    found = {f.name: getattr(event, f.name) for f in fields}
    return {k: v for k, v in found.items() if isinstance(v, (str, bool, int, float))}
