"""Hit rate of the online store: the read path's in-process counts, flushed to Redis every few seconds.

Each flush is one pipeline of HINCRBY on ``{prefix}:{feature_set}:v{version}:stats`` (fields
``hits`` and ``misses``, docs/redis-keys.md), made by whichever read finds the last flush at least
``every_s`` old: one extra round trip per instance per few seconds, none on other requests.
A failed flush keeps its counts for the next one; counting never fails a read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from feature_store.domain.catalog import FeatureSet
from feature_store.errors import DependencyUnavailable
from feature_store.logs import get_logger
from feature_store.services.blocking import running_inline
from feature_store.services.reader import HitCounter
from feature_store.stores.redis_admin import RedisAdmin

log = get_logger(__name__)


class FlushingHitCounter(HitCounter):
    """A HitCounter that adds its counts to Redis at most every ``every_s`` seconds."""

    def __init__(self, admin: RedisAdmin, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.admin = admin
        self.every_s = every_s
        self._clock = clock
        self._last = clock()
        self._flushing = threading.Lock()

    def add(self, fs: FeatureSet, hits: int, misses: int, undecodable: int = 0) -> None:
        super().add(fs, hits, misses, undecodable)
        if self._clock() - self._last >= self.every_s:
            if running_inline():  # an event loop never waits on this round trip
                threading.Thread(target=self.flush, name="hit-count-flush", daemon=True).start()
            else:
                self.flush()

    def flush(self) -> None:
        """Add the counts gathered since the last flush to Redis (one thread at a time, never raising)."""
        if not self._flushing.acquire(blocking=False):
            return  # another request is flushing right now
        try:
            self._last = self._clock()
            counts = self.drain()
            if not counts:
                return
            try:
                self.admin.add_hits(counts)  # all of a flush lands or none of it, so a failure can be retried
            except DependencyUnavailable as exc:
                self._restore(counts)
                log.warning("hit counts not flushed; kept for the next flush",
                            extra={"fields": {"error": type(exc).__name__}})
        finally:
            self._flushing.release()

    def _restore(self, counts: dict[tuple[str, int], tuple[int, int, int]]) -> None:
        with self._lock:
            for key, restored in counts.items():
                c = self.counts.setdefault(key, [0, 0, 0])
                for i, n in enumerate(restored):
                    c[i] += n
