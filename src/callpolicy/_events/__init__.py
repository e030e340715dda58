"""Everything that happens in a call, as events: logged, and passed to hooks."""

from callpolicy._events.hub import (
    HOOKS,
    Event,
    Hook,
    add_hook,
    add_sleep_hook,
    emit,
    listening,
    logger,
    wants,
)
from callpolicy._events.kinds import (
    EVENT_KINDS,
    AttemptEnded,
    AttemptStarted,
    BreakerChanged,
    BudgetChanged,
    CallEnded,
    EventKind,
    GaveUp,
    QuotaRefused,
)
from callpolicy._events.sleep import SHORTEST_INFO, SleepEvent, SleepSource, SleepTrigger
from callpolicy._events.trace import Trace, current_call_id, current_trace, new_trace

__all__ = [
    "EVENT_KINDS",
    "HOOKS",
    "SHORTEST_INFO",
    "AttemptEnded",
    "AttemptStarted",
    "BreakerChanged",
    "BudgetChanged",
    "CallEnded",
    "Event",
    "EventKind",
    "GaveUp",
    "Hook",
    "QuotaRefused",
    "SleepEvent",
    "SleepSource",
    "SleepTrigger",
    "Trace",
    "add_hook",
    "add_sleep_hook",
    "current_call_id",
    "current_trace",
    "emit",
    "listening",
    "logger",
    "new_trace",
    "wants",
]
