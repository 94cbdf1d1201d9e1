"""CDC ingestion: apply change events to the online store (and land them in the offline changelog).

An event is only a trigger: the users it affects are RECOMPUTED from the source with one
set-based query and written compare-and-set on the source watermark (RedisOnlineStore.put_if_newer),
users that no longer exist as tombstones. So whatever the order, number or timing of deliveries,
the last write to land for a user is the state of the newest snapshot read for it, and every
snapshot read after a commit contains that commit: the online store converges to the source.

Concurrent messages of one instance are applied together (group commit): a thread that finds
fewer than ``max_inflight`` batches running takes every queued message, including its own, and
applies them with one source query, one Redis pipeline per feature set and one streaming insert
per changelog table; the others wait for the batch holding their message. An idle instance
therefore applies a message at once, a busy one amortises the round trips over batches that run
side by side. Batches may overlap on a user: the watermark is read before each snapshot
(SourceStore.snapshot_states), so the higher watermark always carries the newer snapshot.

Order inside a batch: Redis first, then BigQuery, so online freshness never waits on (or depends
on) the offline store; a failure of either raises for every message of the batch, which Pub/Sub
redelivers, and re-applying is harmless.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from feature_store.domain.changes import Change, DecimalMode, parse_change
from feature_store.logs import get_logger
from feature_store.stores.redis_online import Entry, RedisOnlineStore, Tombstone
from feature_store.stores.source import SourceStore

log = get_logger(__name__)

Outcome = Literal["applied", "tombstone"]


class Changelog(Protocol):
    """Where changes land offline (stores/bigquery_changelog.py)."""

    def append(self, items: Sequence[tuple[Change, str]]) -> int: ...


class IngestStats:
    """In-process counters (applied, tombstones, batches, poison by code) for logs and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


@dataclass(slots=True)
class _Pending:
    changes: Sequence[Change]
    message_id: str
    taken: bool = False
    done: bool = False
    error: BaseException | None = None


class Ingestor:
    """Applies Debezium change events; each call returns once its change is durable online and offline."""

    def __init__(self, stores: Sequence[RedisOnlineStore], source: SourceStore, changelog: Changelog | None,
                 decimals: DecimalMode = "precise", max_batch: int = 256, max_inflight: int = 2) -> None:
        self._stores = list(stores)
        self._source = source
        self._changelog = changelog
        self._decimals: DecimalMode = decimals
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._inflight = 0
        self.stats = IngestStats()

    def handle(self, data: bytes, message_id: str) -> Outcome:
        """Parse one message and apply it: PoisonMessage when it can never apply, TransientError to retry."""
        change = parse_change(data, self._decimals)
        if change is None:
            self.stats.add("tombstones")
            return "tombstone"
        self.apply([change], message_id)
        return "applied"

    def apply(self, changes: Sequence[Change], message_id: str) -> None:
        """Apply parsed changes, batched with whatever else this instance is applying right now."""
        item = _Pending(changes, message_id)
        with self._cond:
            self._queue.append(item)
            while not item.done:
                if item.taken or self._inflight >= self._max_inflight:
                    self._cond.wait()
                    continue
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                for pending in batch:
                    pending.taken = True
                self._inflight += 1
                error: BaseException | None = None
                self._cond.release()
                try:
                    self._apply_batch(batch)
                except BaseException as exc:
                    error = exc
                finally:
                    self._cond.acquire()
                    for pending in batch:
                        pending.done, pending.error = True, error
                    self._inflight -= 1
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error

    def _apply_batch(self, batch: Sequence[_Pending]) -> None:
        users = sorted({u for p in batch for c in p.changes for u in c.user_ids})
        watermark, states = self._source.snapshot_states(users)
        entries: list[Entry] = [states.get(u) or Tombstone(u, watermark) for u in users]
        for store in self._stores:
            store.put_if_newer(entries)
        if self._changelog is not None:
            self._changelog.append([(c, p.message_id) for p in batch for c in p.changes])
        self.stats.add("applied", sum(len(p.changes) for p in batch))
        self.stats.add("batches")
        self.stats.add("users", len(users))
