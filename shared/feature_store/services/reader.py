"""Online reads: the online store first, the source for misses, degraded answers when the online store fails.

One round trip reads every requested user (MGET); the misses are computed with one set-based
source query and written back compare-and-set. A cached value that cannot be decoded (another
layout mid-deploy, a corrupted key) is a miss: recomputed, put in its place, and counted.
Features are finished at the instant of the request, so velocity windows are exact even for a
state cached long ago.

Failure rules (docs/serving.md, "Degradation"): while Redis answers, a cached user is served
whatever the source does. Each dependency has a breaker; when Redis's is open the request goes
to the source, and when the source cannot answer either (down, or its breaker open) Redis is
tried anyway, as it is once more after a failed Redis read: an open breaker or one timeout saves
time, it never turns an answerable request into a 503. A Redis timeout counts against its breaker
only when this thread was running when it expired (services/breaker.py): CPU starvation of our
own process is not a Redis outage.

Rate limits (docs/security.md): a read made for a client charges its limiter one unit per distinct
user in the same pipeline as the MGET (stores/redis_online.py: get_many_limited). Refused, the whole
request is RateLimited and nothing is consumed. When the limiter cannot be asked (Redis failing or its
breaker open) the read goes on unlimited (``rate_fail_open``, the default) and every such request logs
``rate_limit_fail_open`` (a log-based metric with an alert in terraform/), or is refused with a 503.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from feature_store.domain.access import Caller, Rate
from feature_store.domain.catalog import FeatureSet, Instant, Selection
from feature_store.domain.state import UserState
from feature_store.errors import DependencyTimeout, DependencyUnavailable, RateLimited
from feature_store.logs import get_logger
from feature_store.services.blocking import Offload, inline
from feature_store.services.breaker import CircuitBreaker
from feature_store.stores.ports import (
    Admission,
    AsyncOnlineReads,
    Cached,
    OnlineStore,
    Source,
    Tombstone,
    Undecodable,
)

log = get_logger(__name__)

Status = Literal["ok", "unknown_user", "unavailable"]
REDIS_CIRCUIT_OPEN = "redis_circuit_open"
RATE_LIMIT_FAIL_OPEN = "rate_limit_fail_open"  # the log event the terraform metric counts


@dataclass(frozen=True, slots=True)
class VectorResult:
    user_id: str
    status: Status
    features: dict[str, dict[str, Any]] | None = None
    computed_at: float | None = None
    watermark: int | None = None
    cache_hit: bool = False


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    results: list[VectorResult]  # in request order, duplicates included
    as_of: float
    degraded_reason: str | None = None  # set when Redis was skipped or failed

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None


class HitCounter:
    """Hits, misses and undecodable values per feature set version, counted in-process (services/stats flushes them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, int], list[int]] = {}

    def add(self, fs: FeatureSet, hits: int, misses: int, undecodable: int = 0) -> None:
        with self._lock:
            c = self.counts.setdefault((fs.name, fs.version), [0, 0, 0])
            c[0] += hits
            c[1] += misses
            c[2] += undecodable

    def drain(self) -> dict[tuple[str, int], tuple[int, int, int]]:
        with self._lock:
            out = {k: (v[0], v[1], v[2]) for k, v in self.counts.items() if any(v)}
            self.counts.clear()
            return out


class InlineReads:
    """A threaded online store's reads as AsyncOnlineReads, run inline (the in-memory twin's async face)."""

    def __init__(self, store: OnlineStore) -> None:
        self.store = store

    async def get_many(self, user_ids: Sequence[str]) -> list[Cached | None]:
        return self.store.get_many(user_ids)

    async def get_many_limited(self, user_ids: Sequence[str], client_id: str, rate: Rate,
                               cost: int) -> tuple[Admission, list[Cached | None]]:
        return self.store.get_many_limited(user_ids, client_id, rate, cost)


class Reader:
    """Reads feature vectors of one or many users."""

    def __init__(self, online: OnlineStore, source: Source,
                 redis_breaker: CircuitBreaker, source_breaker: CircuitBreaker,
                 counter: HitCounter | None = None, clock: Callable[[], float] = time.time,
                 rate_fail_open: bool = True, online_async: AsyncOnlineReads | None = None,
                 last_resort_wait_s: float | None = None) -> None:
        self._online = online
        self._online_async = online_async or InlineReads(online)
        self._source = source
        self._redis_breaker = redis_breaker
        self._source_breaker = source_breaker
        self.counter = counter or HitCounter()
        self._clock = clock
        self.rate_fail_open = rate_fail_open
        self.last_resort_wait_s = last_resort_wait_s  # the forced read's patience (None: the store's deadline)
        self.unlimited = 0  # requests served without asking the limiter (fail open), since start

    def read(self, feature_set: FeatureSet, user_ids: Sequence[str],
             names: Sequence[str] | None = None, caller: Caller | None = None) -> ReadOutcome:
        """The vectors of ``user_ids``; with a ``caller``, its rate limit is charged first (RateLimited when over)."""
        unique = list(dict.fromkeys(user_ids))
        cached, degraded = self._from_cache(unique, caller=caller)
        return self._complete(feature_set, user_ids, names, unique, cached, degraded)

    async def read_async(self, feature_set: FeatureSet, user_ids: Sequence[str], names: Sequence[str] | None,
                         caller: Caller | None, offload: Offload) -> ReadOutcome:
        """``read`` for a request served on an event loop: Redis awaited, the rest inline when every user is
        cached (no I/O is left), else on the serving pool through ``offload`` (the source, the write-back)."""
        unique = list(dict.fromkeys(user_ids))
        cached, degraded = await self._from_cache_async(unique, caller)
        if degraded is None and all(type(e) is UserState or type(e) is Tombstone for e in cached):
            with inline():
                return self._complete(feature_set, user_ids, names, unique, cached, degraded)
        return await offload(self._complete, feature_set, user_ids, names, unique, cached, degraded)

    def _complete(self, feature_set: FeatureSet, user_ids: Sequence[str], names: Sequence[str] | None,
                  unique: list[str], cached: list[Cached | None], degraded: str | None) -> ReadOutcome:
        """The read once Redis answered (or not): misses from the source, written back, every vector finished."""
        selected = feature_set.select(names)
        misses = [u for u, e in zip(unique, cached, strict=True) if e is None or isinstance(e, Undecodable)]
        computed, source_failed = self._from_source(misses, last_resort=degraded is not None)
        if source_failed and degraded is not None:
            # Redis was skipped on its breaker's word, or one read of it failed (a 10 ms timeout is
            # often our own starvation), and the source cannot answer: Redis may, so ask it again.
            retried, reason = self._from_cache(unique, forced=True)
            if reason is None:
                cached, degraded = retried, None
                misses = [u for u, e in zip(unique, cached, strict=True)
                          if (e is None or isinstance(e, Undecodable)) and u not in computed]
        undecodable = [e for e in cached if isinstance(e, Undecodable)]
        if computed and degraded is None:
            self._write_back(undecodable, list(computed.values()))
        at = Instant(self._clock())
        by_id: dict[str, VectorResult] = {}
        for user_id, entry in zip(unique, cached, strict=True):
            if isinstance(entry, UserState):
                by_id[user_id] = _result(feature_set, entry, at, selected, cache_hit=True)
            elif isinstance(entry, Tombstone):
                by_id[user_id] = VectorResult(user_id, "unknown_user", cache_hit=True)
            elif user_id in computed:
                by_id[user_id] = _result(feature_set, computed[user_id], at, selected, cache_hit=False)
            else:
                by_id[user_id] = VectorResult(user_id, "unavailable" if source_failed else "unknown_user")
        if undecodable:
            log.warning("cached values could not be decoded; recomputed", extra={"fields": {"count": len(undecodable)}})
        if degraded is None:
            self.counter.add(feature_set, len(unique) - len(misses), len(misses), len(undecodable))
        return ReadOutcome([by_id[u] for u in user_ids], as_of=at.epoch, degraded_reason=degraded)

    def _from_cache(self, ids: list[str], forced: bool = False,
                    caller: Caller | None = None) -> tuple[list[Cached | None], str | None]:
        """What Redis holds for ``ids``, or all None and the reason it was not read.

        ``forced`` is the second chance when the source cannot answer either: it reads even when
        the breaker is open and waits ``last_resort_wait_s`` for the reply, not the store's short deadline
        (a slow answer beats none); its success closes the breaker, its failure counts nothing more.
        With a ``caller`` the limiter is charged in the same round trip; a refusal raises RateLimited.
        """
        if not forced and not self._redis_breaker.allow():
            return self._skipped(ids, caller)
        started = time.perf_counter()
        try:
            if forced:
                entries = self._online.get_many(ids, self.last_resort_wait_s)
            elif caller is None:
                entries = self._online.get_many(ids)
            else:
                entries = self._admitted(caller, ids, *self._online.get_many_limited(
                    ids, caller.client_id, caller.scope.rate, len(ids)))
        except DependencyUnavailable as exc:
            return self._failed(exc, ids, started, forced, caller)
        self._redis_breaker.success()
        return entries, None

    async def _from_cache_async(self, ids: list[str], caller: Caller | None) -> tuple[list[Cached | None], str | None]:
        """``_from_cache`` awaited on the async reads (never forced: the second chance runs on the pool)."""
        if not self._redis_breaker.allow():
            return self._skipped(ids, caller)
        started = time.perf_counter()
        try:
            if caller is None:
                entries = await self._online_async.get_many(ids)
            else:
                entries = self._admitted(caller, ids, *await self._online_async.get_many_limited(
                    ids, caller.client_id, caller.scope.rate, len(ids)))
        except DependencyUnavailable as exc:
            return self._failed(exc, ids, started, False, caller)
        self._redis_breaker.success()
        return entries, None

    def _admitted(self, caller: Caller, ids: list[str], admission: Admission,
                  entries: list[Cached | None]) -> list[Cached | None]:
        """The entries of an admitted read; RateLimited (Redis answered: the breaker hears a success) if refused."""
        if not admission.admitted:
            self._redis_breaker.success()
            raise RateLimited(f"client {caller.client_id} is over its rate of {caller.scope.rate.per_s:g} "
                              f"users/s (burst {caller.scope.rate.burst}); this request would cost {len(ids)}",
                              max(1, math.ceil(admission.wait_s)))
        return entries

    def _skipped(self, ids: list[str], caller: Caller | None) -> tuple[list[Cached | None], str]:
        self._unlimited(caller, REDIS_CIRCUIT_OPEN)
        return [None] * len(ids), REDIS_CIRCUIT_OPEN

    def _failed(self, exc: DependencyUnavailable, ids: list[str], started: float, forced: bool,
                caller: Caller | None) -> tuple[list[Cached | None], str]:
        timed_out = isinstance(exc, DependencyTimeout)
        if not forced:
            if timed_out:
                self._redis_breaker.timed_out(time.perf_counter() - started)
            else:
                self._redis_breaker.failure()
        reason = "redis_timeout" if timed_out else "redis_unavailable"
        log.warning("online store read failed; answering from the source",
                    extra={"fields": {"reason": reason, "breaker": self._redis_breaker.state, "forced": forced}})
        self._unlimited(caller, reason)
        return [None] * len(ids), reason

    def _unlimited(self, caller: Caller | None, reason: str) -> None:
        """The limiter could not be asked: go on unlimited (counted, logged for the alert) or refuse."""
        if caller is None:
            return
        if not self.rate_fail_open:
            raise DependencyUnavailable("redis", "the rate limiter cannot be asked (FS_AUTH_RATE_LIMIT_FAIL_OPEN is "
                                                 "false)")
        self.unlimited += 1
        log.warning("rate limiter unavailable; request served without a limit",
                    extra={"fields": {"event": RATE_LIMIT_FAIL_OPEN, "client_id": caller.client_id,
                                      "reason": reason}})

    def _from_source(self, misses: list[str], last_resort: bool = False) -> tuple[dict[str, UserState], bool]:
        """The states of ``misses`` (absent users are simply missing), and whether the source failed.

        ``last_resort``: Redis was not read, so these include cached users; a half-open breaker
        lets such a request through even while another one probes.
        """
        if not misses:
            return {}, False
        if not self._source_breaker.allow(last_resort):
            return {}, True
        try:
            states = self._source.snapshot_states(misses)[1]
        except DependencyUnavailable as exc:
            # Its timeouts are seconds long (connect, statement): no scheduling hiccup explains them.
            self._source_breaker.failure()
            log.warning("source read failed", extra={"fields": {"breaker": self._source_breaker.state,
                                                                "error": exc.message}})
            return {}, True
        self._source_breaker.success()
        return states, False

    def _write_back(self, undecodable: list[Undecodable], states: list[UserState]) -> None:
        try:
            # An undecodable value may carry any watermark prefix, so it is removed (only while still
            # stored as read) before the recomputed state is written compare-and-set.
            self._online.discard(undecodable)
            self._online.put_if_newer(states)
        except DependencyUnavailable:
            # The answer is already computed; the next read recomputes. Not worth failing for.
            self._redis_breaker.failure()
            log.warning("online store write-back failed")


def _result(fs: FeatureSet, state: UserState, at: Instant, selected: Selection, cache_hit: bool) -> VectorResult:
    return VectorResult(state.user_id, "ok", fs.evaluate(state, at, selected), state.computed_at,
                        state.watermark, cache_hit)
