"""A circuit breaker: stop calling a dependency that keeps failing, probe it again later.

closed --(``failures`` in a row, spread over at least ``min_failing_s``)--> open
     --(``reset_s`` elapsed)--> half-open: one probe call; its success closes the breaker,
its failure opens it again.

Only evidence that the dependency itself is down counts. Under CPU starvation of our own
process (every core busy, threads waiting for the interpreter lock) a read with a 10 ms
timeout can time out although the dependency answered in time; such a burst must not open
the breaker, because then every request pays for the other path. So:

- a success anywhere resets the streak: a starved process still sees most calls succeed;
- the streak must last ``min_failing_s`` of wall time, not only ``failures`` calls: a burst
  of timeouts inside one scheduling hiccup is not an outage;
- a timed-out call that took far longer than its own timeout (``timed_out``) shows that this
  thread was not running when the answer was due: it proves nothing and counts nothing, unless
  calls have kept failing, late or not, with no success for ``STARVED_COUNTS_AFTER`` times the
  failing time (at least 3 s): a dependency that hangs while our process is saturated must still
  open its breaker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# A timeout is our own starvation when the call took more than this many times its timeout
# (plus a small scheduling allowance): the thread was not scheduled when the deadline passed.
STARVED_FACTOR = 2.0
STARVED_SLACK_S = 0.005
STARVED_COUNTS_AFTER = 3.0


class CircuitBreaker:
    def __init__(self, name: str, failures: int, reset_s: float, min_failing_s: float = 0.0,
                 call_timeout_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.threshold = failures
        self.reset_s = reset_s
        self.min_failing_s = min_failing_s
        self.call_timeout_s = call_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._failing_since: float | None = None
        self._silent_since: float | None = None  # first failure or starved timeout since the last success
        self._opened_at: float | None = None
        self._probing = False
        self.starved_timeouts = 0  # timeouts not counted because the caller was starved

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._clock() - self._opened_at >= self.reset_s else "open"

    def allow(self, last_resort: bool = False) -> bool:
        """Whether to call the dependency now (in half-open state: one caller at a time probes).

        ``last_resort``: the caller has no other way to answer (the other dependency failed too).
        Once the reset time has passed it may call although another caller is probing: a breaker
        left open by an outage that has ended must not fail requests that could be answered.
        """
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.reset_s:
                return False
            if self._probing:
                return last_resort
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            self._silent_since = None
            self._failures = 0
            self._failing_since = None
            self._opened_at = None
            self._probing = False

    def failure(self) -> None:
        """The dependency failed (refused, reset, shut down, or timed out while we were running)."""
        with self._lock:
            now = self._clock()
            self._failures += 1
            if self._failing_since is None:
                self._failing_since = now
            if self._silent_since is None:
                self._silent_since = now
            if self._opened_at is not None:  # a failed probe (or a failure from before the opening)
                if self._probing:
                    self._opened_at = now
                self._probing = False
                return
            if self._failures >= self.threshold and now - self._failing_since >= self.min_failing_s:
                self._opened_at = now

    def timed_out(self, elapsed_s: float) -> None:
        """A call timed out after ``elapsed_s``: a failure, unless the caller itself was starved."""
        limit = self.call_timeout_s
        starved = limit is not None and elapsed_s > limit * STARVED_FACTOR + STARVED_SLACK_S
        with self._lock:
            now = self._clock()
            if self._silent_since is None:
                self._silent_since = now
            silent_s = now - self._silent_since
        if starved and silent_s < STARVED_COUNTS_AFTER * max(self.min_failing_s, 1.0):
            self.inconclusive()
        else:
            self.failure()

    def inconclusive(self) -> None:
        """A call whose outcome says nothing about the dependency: counts nothing, frees a probe."""
        with self._lock:
            self.starved_timeouts += 1
            self._probing = False
