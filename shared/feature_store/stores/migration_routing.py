"""The routing pointer of the migration and its guard's counters, in Redis (docs/redis-keys.md).

    {prefix}:migration:route            hash: percent, truth (source|target), generation, fallback,
                                        tripped (0|1), reason, updated_at
    {prefix}:migration:guard:{gen}      hash: reads, errors, mismatches, ms:<bound> latency histogram
                                        (a day's TTL)

Every instance reads the pointer (cached ``cache_s``); run_migration writes it (each write is a new
generation), and the guard takes the percentage back to ``fallback`` by itself with one script that
only acts on the generation it judged, so a guard never undoes a newer step. Neither key has a TTL
but the counters, so volatile-lru never evicts the pointer. When Redis cannot be read, the last
pointer read is kept (none read yet: every read goes to the source of truth the configuration names).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis

from feature_store.logs import get_logger

log = get_logger(__name__)

Truth = Literal["source", "target"]
# Upper bounds (ms) of the latency histogram's buckets; the last one catches the rest.
LATENCY_BOUNDS_MS: tuple[float, ...] = (1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 300, 500, 800, 1200, 2000, 5000,
                                        float("inf"))
GUARD_TTL_S = 24 * 3600

# KEYS[1] route; ARGV: generation judged, reason, now. 1 when it took the percentage back.
_TRIP = """
local gen = redis.call('HGET', KEYS[1], 'generation')
if gen ~= ARGV[1] then return 0 end
local fallback = redis.call('HGET', KEYS[1], 'fallback') or '0'
if tonumber(redis.call('HGET', KEYS[1], 'percent') or '0') <= tonumber(fallback) then return 0 end
redis.call('HSET', KEYS[1], 'percent', fallback, 'tripped', '1', 'reason', ARGV[2], 'updated_at', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'generation', 1)
return 1
"""


@dataclass(frozen=True)
class Route:
    """Where reads go: ``percent`` of users (by stable hash) to the target; writes go to ``truth``."""

    percent: float = 0.0
    truth: Truth = "source"
    generation: int = 0
    fallback: float = 0.0
    tripped: bool = False
    reason: str = ""

    @property
    def active(self) -> bool:
        """Whether any read goes to the target."""
        return self.percent > 0 or self.truth == "target"


def _route(raw: Mapping[bytes, bytes]) -> Route:
    def text(name: str, default: str) -> str:
        value = raw.get(name.encode())
        return value.decode() if value is not None else default

    truth = text("truth", "source")
    return Route(float(text("percent", "0")), "target" if truth == "target" else "source",
                 int(text("generation", "0")), float(text("fallback", "0")), text("tripped", "0") == "1",
                 text("reason", ""))


def latency_bucket(ms: float) -> str:
    for bound in LATENCY_BOUNDS_MS:
        if ms <= bound:
            return f"ms:{bound:g}"
    raise AssertionError("unreachable")


class RoutingStore:
    """Reads (cached) and writes the routing pointer; counts and judges the guard's window."""

    def __init__(self, client: redis.Redis, prefix: str, cache_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.key = f"{prefix}:migration:route"
        self.prefix = prefix
        self.cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Route] | None = None
        self._trip = client.register_script(_TRIP)

    def guard_key(self, generation: int) -> str:
        return f"{self.prefix}:migration:guard:{generation}"

    def route(self) -> Route:
        """The pointer as this instance sees it (at most ``cache_s`` old); never raises."""
        now = self._clock()
        with self._lock:
            cached = self._cached
        if cached is not None and now < cached[0]:
            return cached[1]
        fallback = cached[1] if cached is not None else Route()
        try:
            route = _route(self.client.hgetall(self.key))  # type: ignore[arg-type]
        except redis.RedisError as exc:
            log.warning("routing pointer unreadable; keeping the last one",
                        extra={"fields": {"error": type(exc).__name__, "percent": fallback.percent}})
            route = fallback
        with self._lock:
            self._cached = (now + self.cache_s, route)
        return route

    def read(self) -> Route:
        """The pointer as stored now (uncached); errors propagate."""
        return _route(self.client.hgetall(self.key))  # type: ignore[arg-type]

    def write(self, percent: float, truth: Truth, fallback: float) -> Route:
        """Set the pointer: a new generation, the guard's trip cleared."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key, mapping={"percent": f"{percent:g}", "truth": truth, "fallback": f"{fallback:g}",
                                     "tripped": "0", "reason": "", "updated_at": f"{time.time():.3f}"})
        pipe.hincrby(self.key, "generation", 1)
        pipe.execute()
        with self._lock:
            self._cached = None
        return self.read()

    def count(self, generation: int, reads: int, errors: int, latencies_ms: Mapping[str, int], mismatches: int) -> None:
        key = self.guard_key(generation)
        pipe = self.client.pipeline(transaction=False)
        for name, n in (("reads", reads), ("errors", errors), ("mismatches", mismatches), *latencies_ms.items()):
            if n:
                pipe.hincrby(key, name, n)
        pipe.expire(key, GUARD_TTL_S)
        pipe.execute()

    def counters(self, generation: int) -> dict[str, int]:
        raw: dict[Any, Any] = self.client.hgetall(self.guard_key(generation))
        return {k.decode(): int(v) for k, v in raw.items()}

    def trip(self, generation: int, reason: str) -> bool:
        """Take the percentage back to the fallback if the pointer is still at ``generation``."""
        done = bool(self._trip(keys=[self.key], args=[str(generation), reason[:500], f"{time.time():.3f}"]))
        with self._lock:
            self._cached = None
        return done


def p95_ms(counters: Mapping[str, int]) -> float:
    """The 95th percentile of the latency histogram (the upper bound of its bucket); 0 with no reads."""
    buckets = sorted(((float(k[3:]), n) for k, n in counters.items() if k.startswith("ms:")), key=lambda b: b[0])
    total = sum(n for _, n in buckets)
    if not total:
        return 0.0
    seen = 0
    for bound, n in buckets:
        seen += n
        if seen >= 0.95 * total:
            return bound
    return buckets[-1][0]
