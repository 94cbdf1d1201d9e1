"""The traffic shift's guard: the target's error rate and latency, shadow reads, and the automatic rollback.

Every instance counts its reads of the target (how many, how many failed, a latency histogram) and adds
them to the current generation's counters in Redis at most every ``flush_s`` (stores/migration_routing.py).
After each flush it judges the generation's totals over every instance: with at least ``min_reads``
target reads, an error rate above ``error_rate`` or a p95 above ``p95_ms`` trips the guard; so does any
confirmed vector mismatch. Tripping takes the percentage back to the step before (one Redis script that
acts only on the generation judged), and every instance follows within its pointer cache time.

Shadow reads: a sample (``sample``) of routed reads is compared off the request path by a background
thread, which reads the same users from BOTH databases and evaluates every catalog feature set's vector
at one instant. A difference is read again ``attempts`` times ``recheck_delay_s`` apart (a write may
still be on its way through the replication); one that persists is a confirmed mismatch.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from feature_store.domain.catalog import CATALOG, FeatureSet, Instant
from feature_store.domain.state import UserState
from feature_store.logs import get_logger
from feature_store.stores.migration_routing import RoutingStore, latency_bucket, p95_ms
from feature_store.stores.ports import Source

log = get_logger(__name__)


class Guard:
    """Counts target reads and mismatches, flushes them to Redis, and trips when a threshold is passed."""

    def __init__(self, routing: RoutingStore, error_rate: float, p95_limit_ms: float, min_reads: int,
                 flush_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.routing = routing
        self.error_rate = error_rate
        self.p95_limit_ms = p95_limit_ms
        self.min_reads = min_reads
        self.flush_s = flush_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._last_flush = clock()
        self.shadow: ShadowReader | None = None

    def target_read(self, users: int, seconds: float, failed: bool) -> None:
        with self._lock:
            self._pending["reads"] += 1
            self._pending["errors"] += int(failed)
            self._pending[latency_bucket(seconds * 1000)] += 1
            due = self._clock() - self._last_flush >= self.flush_s
        if due:
            self.flush()

    def mismatch(self, users: Sequence[str]) -> None:
        with self._lock:
            self._pending["mismatches"] += len(users)
        self.flush()

    def offer(self, user_ids: Sequence[str]) -> None:
        if self.shadow is not None:
            self.shadow.offer(user_ids)

    def flush(self) -> str | None:
        """Add this instance's counts to the current generation's and judge it; the reason when it tripped."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._last_flush = self._clock()
        route = self.routing.route()
        try:
            if pending:
                self.routing.count(route.generation, pending.pop("reads", 0), pending.pop("errors", 0),
                                   {k: n for k, n in pending.items() if k.startswith("ms:")},
                                   pending.get("mismatches", 0))
            return self.judge(route.generation)
        except Exception as exc:  # the guard must never fail a read; the next flush tries again
            log.warning("guard could not flush or judge", extra={"fields": {"error": type(exc).__name__}})
            return None

    def verdict(self, counters: dict[str, int]) -> str | None:
        """Why these counters trip the guard, or None."""
        if counters.get("mismatches", 0):
            return f"vector_mismatch: {counters['mismatches']} users read differently from the two databases"
        reads = counters.get("reads", 0)
        if reads < self.min_reads:
            return None
        rate = counters.get("errors", 0) / reads
        if rate > self.error_rate:
            return f"error_rate: {rate:.2%} of {reads} target reads failed (limit {self.error_rate:.2%})"
        p95 = p95_ms(counters)
        if p95 > self.p95_limit_ms:
            return f"p95_latency: target reads took up to {p95:g} ms at p95 (limit {self.p95_limit_ms:g} ms)"
        return None

    def judge(self, generation: int) -> str | None:
        reason = self.verdict(self.routing.counters(generation))
        if reason is not None and self.routing.trip(generation, reason):
            log.error("migration guard tripped: percentage taken back", extra={"fields": {
                "generation": generation, "reason": reason}})
        return reason


class ShadowReader:
    """Compares a sample of reads between the two databases, off the request path."""

    def __init__(self, source: Source, target: Source, guard: Guard, sample: float,
                 recheck_delay_s: float, attempts: int, feature_sets: Iterable[FeatureSet] = CATALOG.values(),
                 rng: Callable[[], float] = random.random, sleep: Callable[[float], None] = time.sleep,
                 max_queue: int = 64) -> None:
        self.source, self.target, self.guard = source, target, guard
        self.sample = sample
        self.recheck_delay_s = recheck_delay_s
        self.attempts = attempts
        self.feature_sets = list(feature_sets)
        self._rng, self._sleep = rng, sleep
        self._queue: queue.Queue[list[str]] = queue.Queue(max_queue)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self.compared = 0
        self.mismatched = 0

    def offer(self, user_ids: Sequence[str]) -> None:
        if not user_ids or self._rng() >= self.sample:
            return
        try:
            self._queue.put_nowait(list(user_ids))
        except queue.Full:
            return  # shadowing is a sample: dropping one under load is fine
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="shadow-reads", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            try:
                users = self._queue.get(timeout=30)
            except queue.Empty:
                return
            try:
                mismatched = self.compare(users)
            except Exception as exc:  # a failed shadow read is not a mismatch; the guard counts errors
                log.warning("shadow read failed", extra={"fields": {"error": type(exc).__name__}})
                continue
            if mismatched:
                self.guard.mismatch(mismatched)

    def compare(self, user_ids: Sequence[str]) -> list[str]:
        """Users whose vectors still differ between the databases after the rechecks."""
        differing = self._differing(user_ids)
        for _ in range(self.attempts):
            if not differing:
                break
            self._sleep(self.recheck_delay_s)
            differing = self._differing(differing)
        self.compared += len(user_ids)
        self.mismatched += len(differing)
        if differing:
            log.error("shadow read mismatch", extra={"fields": {"users": len(differing)}})
        return differing

    def _differing(self, user_ids: Sequence[str]) -> list[str]:
        _, mine = self.source.snapshot_states(user_ids)
        _, theirs = self.target.snapshot_states(user_ids)
        at = Instant(time.time())
        return [u for u in user_ids if self._vectors(mine.get(u), at) != self._vectors(theirs.get(u), at)]

    def _vectors(self, state: UserState | None, at: Instant) -> list[object] | None:
        if state is None:
            return None
        return [fs.evaluate(state, at) for fs in self.feature_sets]
