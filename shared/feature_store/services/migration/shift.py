"""Moving the read percentage: one step at a time, held under the guard, and back.

``step`` sets the routing pointer to a percentage (the previous one becomes the guard's fallback) and
records it in the target's state; ``hold`` watches the guard for the step's observation time, across as
many calls as the time budget needs. ``back`` lowers the percentage (a rollback, or the guard's).

Users whose reads go back from the target to the source carry vectors tagged with the target's
positions in the online store, which the source's positions cannot outrank when the two databases
count differently (a CockroachDB HLC is far above a PostgreSQL LSN): their vectors are dropped, after
waiting for every instance to have re-read the pointer, so the next read recomputes them from the
source. That also runs when the guard tripped by itself (``hold`` finds it and drops them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from feature_store.domain.migration_hash import bucket, threshold
from feature_store.errors import Conflict
from feature_store.logs import get_logger
from feature_store.stores.migration_routing import Route, RoutingStore, p95_ms
from feature_store.stores.migration_state import StateStore

log = get_logger(__name__)


class Shifter:
    """Moves the percentage of reads served by the target, under the guard."""

    def __init__(self, routing: RoutingStore, state: StateStore, client: redis.Redis,
                 user_patterns: Sequence[str], settle_s: float, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, scan_count: int = 1000) -> None:
        self.routing = routing
        self.state = state
        self.client = client
        self.user_patterns = list(user_patterns)  # one SCAN pattern per online-store layout
        self.settle_s = settle_s  # how long every instance may still route by the old pointer
        self._clock, self._sleep = clock, sleep
        self.scan_count = scan_count

    def sync(self) -> Route:
        """Make the pointer agree with the target's state (Redis may have lost it); the pointer."""
        state = self.state.read()
        route = self.routing.read()
        if state is not None and (route.percent != state.percent or route.truth != state.truth):
            route = self.routing.write(state.percent, state.truth, float(state.doc.get("shift", {}).get("fallback", 0)))
        return route

    def step(self, percent: float) -> dict[str, Any]:
        """Serve ``percent`` of users from the target (up from where it is); idempotent for the same step."""
        current = self.routing.read()
        if current.truth == "target":
            raise Conflict("the target is already the source of truth; the shift is over", code="migration_cut_over")
        if percent < current.percent:
            raise Conflict(f"the percentage only goes up by a step ({current.percent:g} now); lower it with rollback",
                           code="shift_backwards")
        doc = (self.state.read() or _missing()).doc.get("shift", {})
        if percent == current.percent and doc.get("generation") == current.generation:
            return {"percent": percent, "generation": current.generation, "held_s": self._held(doc)}
        route = self.routing.write(percent, "source", current.percent)
        with self.state.changing() as state:
            state.percent = percent
            state.doc["shift"] = {"percent": percent, "fallback": current.percent, "generation": route.generation,
                                  "started_at": self._clock(), "history": [*doc.get("history", []), percent]}
        log.info("traffic shift step", extra={"fields": {"percent": percent, "generation": route.generation}})
        return {"percent": percent, "generation": route.generation, "held_s": 0.0}

    def hold(self, hold_s: float, budget_s: float) -> dict[str, Any]:
        """Watch the guard until the step has been held ``hold_s`` in all, or ``budget_s`` of this call passed."""
        deadline = self._clock() + budget_s
        while True:
            route = self.routing.read()
            doc = (self.state.read() or _missing()).doc.get("shift", {})
            counters = self.routing.counters(int(doc.get("generation", route.generation)))
            figures = {"reads": counters.get("reads", 0), "errors": counters.get("errors", 0),
                       "mismatches": counters.get("mismatches", 0), "p95_ms": p95_ms(counters)}
            if route.tripped or route.generation != doc.get("generation"):
                dropped = self.back(route.percent, reason=route.reason or "the pointer moved", already=True)
                return {"done": False, "tripped": True, "reason": route.reason, "percent": route.percent,
                        "dropped_vectors": dropped, **figures}
            held = self._held(doc)
            if held >= hold_s:
                return {"done": True, "tripped": False, "percent": route.percent, "held_s": round(held, 1), **figures}
            if self._clock() >= deadline:
                return {"done": False, "tripped": False, "percent": route.percent, "held_s": round(held, 1),
                        **figures}
            self._sleep(min(1.0, max(0.0, deadline - self._clock())))

    def _held(self, doc: dict[str, Any]) -> float:
        return max(0.0, self._clock() - float(doc.get("started_at", self._clock())))

    def back(self, percent: float, reason: str, already: bool = False) -> int:
        """Lower the percentage to ``percent`` (already done by the guard when ``already``) and drop the
        cached vectors of the users that go back to the source; how many were dropped."""
        with self.state.changing() as state:
            before = float(state.doc.get("shift", {}).get("percent", state.percent))
            if not already:
                self.routing.write(percent, state.truth if state.truth == "source" else "source", percent)
            state.percent = percent
            state.doc["shift"] = {**state.doc.get("shift", {}), "percent": percent,
                                  "generation": self.routing.read().generation, "started_at": self._clock(),
                                  "rolled_back": {"from": before, "to": percent, "reason": reason}}
        if before <= percent:
            return 0
        self._sleep(self.settle_s)  # every instance re-reads the pointer within its cache time
        dropped = self.drop_vectors(percent, before)
        log.warning("traffic shift rolled back", extra={"fields": {"from": before, "to": percent, "reason": reason,
                                                                   "dropped_vectors": dropped}})
        return dropped

    def drop_vectors(self, low: float, high: float) -> int:
        """Delete the cached vectors of users whose bucket lies in [threshold(low), threshold(high))."""
        lo, hi = threshold(low), threshold(high)
        dropped = 0
        for pattern in self.user_patterns:
            prefix_len = len(pattern) - 1
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=pattern, count=self.scan_count):
                user = key[prefix_len:].decode()
                if lo <= bucket(user) < hi:
                    batch.append(key)
                if len(batch) >= 500:
                    dropped += int(self.client.unlink(*batch))
                    batch = []
            if batch:
                dropped += int(self.client.unlink(*batch))
        return dropped


def _missing() -> Any:
    raise Conflict("the target has not been prepared: run the prepare phase first", code="migration_not_prepared")
