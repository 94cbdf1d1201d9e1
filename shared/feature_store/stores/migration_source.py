"""Sources that route each user's reads to the migration's source or target by the routing pointer.

``RoutingSource`` wraps two user-state sources (the read path's read-through and CDC recomputation),
``RoutingBulkSource`` two bulk sources (cache refresh). A user whose stable hash bucket is under the
pointer's percentage (domain/migration_hash.py) is read from the target, every other user from the
source; with the percentage at 0 and the source as the truth, the target is never asked.

States keep the watermark of the database they were read from: each database's positions order its
own snapshots exactly, so compare-and-set in the online store keeps working for a user read from one
side. A user moving to the target (PostgreSQL LSN -> CockroachDB HLC, a larger number) simply takes
the target's states; a user moving back needs its cached vector dropped first (services/migration/
shift.py does so when the percentage goes down). The batch watermark (what a deleted user's tombstone
carries) is the larger of the two.

A failed or slow target read never fails the caller: the users asked of the target are read from the
source instead, and the observer (the guard) counts the failure and the latency.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from feature_store.domain.migration_hash import bucket, threshold
from feature_store.domain.state import UserState
from feature_store.errors import DependencyUnavailable
from feature_store.logs import get_logger
from feature_store.stores.migration_routing import Route
from feature_store.stores.ports import Source
from feature_store.stores.postgres_bulk import BulkSource, IdBatch, Vector

log = get_logger(__name__)


class RouteReader(Protocol):
    def route(self) -> Route: ...


class ReadObserver(Protocol):
    """What the guard needs to know of the target's reads, and which reads to shadow."""

    def target_read(self, users: int, seconds: float, failed: bool) -> None: ...

    def offer(self, user_ids: Sequence[str]) -> None: ...


def split(user_ids: Sequence[str], route: Route) -> tuple[list[str], list[str]]:
    """(users read from the source, users read from the target) under ``route``."""
    if route.truth == "target" and route.percent >= 100:
        return [], list(user_ids)
    limit = threshold(route.percent)
    if limit == 0:
        return list(user_ids), []
    source: list[str] = []
    target: list[str] = []
    for user_id in user_ids:
        (target if bucket(user_id) < limit else source).append(user_id)
    return source, target


class RoutingSource:
    """A user-state source that reads each user from the database the routing pointer names."""

    def __init__(self, source: Source, target: Source, routing: RouteReader,
                 observer: ReadObserver | None = None) -> None:
        self.source = source
        self.target = target
        self.routing = routing
        self.observer = observer

    def states_for(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        if not user_ids:
            return {}
        return self.snapshot_states(user_ids)[1]

    def snapshot_states(self, user_ids: Sequence[str]) -> tuple[int, dict[str, UserState]]:
        route = self.routing.route()
        if not route.active:
            return self.source.snapshot_states(user_ids)
        from_source, from_target = split(user_ids, route)
        if self.observer is not None and user_ids:
            self.observer.offer(user_ids)
        marks: list[int] = []
        states: dict[str, UserState] = {}
        if from_target:
            got = self._from_target(from_target)
            if got is None:
                from_source += from_target
            else:
                marks.append(got[0])
                states.update(got[1])
        if from_source or not marks:
            mark, found = self.source.snapshot_states(from_source)
            marks.append(mark)
            states.update(found)
        return max(marks), states

    def _from_target(self, user_ids: list[str]) -> tuple[int, dict[str, UserState]] | None:
        started = time.perf_counter()
        try:
            got = self.target.snapshot_states(user_ids)
        except DependencyUnavailable as exc:
            self._observe(len(user_ids), started, failed=True)
            log.warning("target read failed; answered from the source", extra={"fields": {"reason": exc.message}})
            return None
        self._observe(len(user_ids), started, failed=False)
        return got

    def _observe(self, users: int, started: float, failed: bool) -> None:
        if self.observer is not None:
            self.observer.target_read(users, time.perf_counter() - started, failed)


class RoutingBulkSource:
    """Bulk reads for cache refresh, each user's vector from the database the pointer names.

    Ranges are read from both sides while users are split (each keeps its own users); boundaries,
    counts, the clock and change scans come from the truth.
    """

    def __init__(self, source: BulkSource, target: BulkSource, routing: RouteReader) -> None:
        self.source = source
        self.target = target
        self.routing = routing

    def _primary(self, route: Route) -> BulkSource:
        return self.target if route.truth == "target" else self.source

    def vectors_in_range(self, lo: str, hi: str | None) -> list[Vector]:
        route = self.routing.route()
        if not route.active:
            return self.source.vectors_in_range(lo, hi)
        if route.truth == "target" and route.percent >= 100:
            return self.target.vectors_in_range(lo, hi)
        limit = threshold(route.percent)
        mine = [v for v in self.source.vectors_in_range(lo, hi) if bucket(v.user_id) >= limit]
        theirs = [v for v in self.target.vectors_in_range(lo, hi) if bucket(v.user_id) < limit]
        return sorted(mine + theirs, key=lambda v: v.user_id)

    def vectors_for(self, user_ids: Sequence[str]) -> IdBatch:
        route = self.routing.route()
        if not route.active:
            return self.source.vectors_for(user_ids)
        from_source, from_target = split(user_ids, route)
        batches = [side.vectors_for(ids) for side, ids in ((self.source, from_source), (self.target, from_target))
                   if ids]
        return IdBatch([v for b in batches for v in b.vectors], [u for b in batches for u in b.missing],
                       max(b.watermark for b in batches))

    def next_boundary(self, lo: str, n: int, hi: str | None = None) -> str | None:
        return self._primary(self.routing.route()).next_boundary(lo, n, hi)

    def count(self, lo: str, hi: str | None) -> int:
        return self._primary(self.routing.route()).count(lo, hi)

    def safe_now(self) -> tuple[datetime, datetime]:
        return self._primary(self.routing.route()).safe_now()

    def changed_since(self, since: datetime, after: str, page: int) -> AbstractContextManager[Iterator[list[str]]]:
        return self._primary(self.routing.route()).changed_since(since, after, page)
