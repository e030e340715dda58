"""Running calls: a policy compiled into a `Runner` (retry conditions, waits, stops, server
hints and pauses, HTTP adapters), driving one attempt loop per flavour."""

from callpolicy._engine.fallback import FallbackRunner, build_runner
from callpolicy._engine.runner import Runner

__all__ = ["FallbackRunner", "Runner", "build_runner"]
