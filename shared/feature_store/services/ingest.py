"""CDC ingestion: apply change events to the online store (and land them in the offline changelog).

An event is only a trigger: the users it affects are RECOMPUTED from the source with one
set-based query and written compare-and-set on the source watermark (OnlineStore.put_if_newer),
users that no longer exist as tombstones. So whatever the order, number or timing of deliveries,
the last write to land for a user is the state of the newest snapshot read for it, and every
snapshot read after a commit contains that commit: the online store converges to the source.

Concurrent messages of one instance are applied together (group commit): a thread that finds
fewer than ``max_inflight`` batches running takes every queued message, including its own, and
applies them with one source query, one online-store round trip (every version of the catalog
shares the cached states) and one streaming insert per changelog table; the others wait for the
batch holding their message. An idle instance
therefore applies a message at once; a busy one applies, in one batch, everything that queued
while the previous batch ran. One batch at a time is the default (FS_CDC_MAX_INFLIGHT=1): bigger
batches cost the source less per user, and bench/ingest.py measured more events/s than with two
side by side. When several run, batches may overlap on a user: the watermark is read before each
snapshot (Source.snapshot_states), so the higher watermark always carries the newer snapshot.

Order inside a batch: Redis first, then BigQuery, so online freshness never waits on (or depends
on) the offline store. The changelog rows are landed off the batch's critical path
(services/changelog_landing.py): the next batch reads the source and writes Redis while the rows
of the previous ones land, several batches' rows in one append; each message returns (is
acknowledged) only once its own rows have landed. A failure of either write raises for every
message it concerned, which Pub/Sub redelivers, and re-applying is harmless.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from feature_store.domain.changes import Change, DecimalMode, parse_change
from feature_store.logs import get_logger
from feature_store.services.changelog_landing import Landing
from feature_store.stores.ports import Changelog, Entry, OnlineStore, Source, Tombstone

log = get_logger(__name__)

Outcome = Literal["applied", "tombstone", "heartbeat", "transaction", "resolved"]


class IngestStats:
    """In-process counters for logs and tests, by kind of message.

    ``applied`` (row changes), ``batches``, ``users``; ``tombstones``, ``heartbeats``, ``transactions``,
    ``resolved`` (acknowledged, nothing to apply); ``unattributed`` (changes naming no user),
    ``raw_values`` (values kept raw, e.g. a TIMESTAMPTZ infinity); ``poison:<code>`` per poison code.
    """

    # The counter of each kind of message that is acknowledged with nothing to apply.
    ACKNOWLEDGED: ClassVar[Mapping[str, str]] = {"tombstone": "tombstones", "heartbeat": "heartbeats",
                                                 "transaction": "transactions", "resolved": "resolved"}

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True)
class _Pending:
    changes: Sequence[Change]
    message_id: str
    # Held until the item's thread may go on: its item is done, or it is handed a batch to apply.
    wake: threading.Lock = field(default_factory=_held_lock)
    batch: list[_Pending] | None = None
    done: bool = False
    error: BaseException | None = None
    landing: Future[int] | None = None  # its changelog rows landing; acknowledged only once they have


class Ingestor:
    """Applies Debezium change events; each call returns once its change is durable online and offline."""

    def __init__(self, online: OnlineStore, source: Source, changelog: Changelog | None,
                 decimals: DecimalMode = "precise", max_batch: int = 256, max_inflight: int = 1) -> None:
        self._online = online
        self._source = source
        self._landing = Landing(changelog) if changelog is not None else None
        self._decimals: DecimalMode = decimals
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._inflight = 0
        self.stats = IngestStats()

    def handle(self, data: bytes, message_id: str, attributes: Mapping[str, str] | None = None,
               published_ms: int | None = None) -> Outcome:
        """Parse one message and apply it: PoisonMessage when it can never apply, TransientError to retry.

        Only a row change is applied; a tombstone, heartbeat, transaction boundary or resolved timestamp
        is counted by kind and acknowledged. A change that names no user (a delete that carries only a
        key without user_id: Debezium without REPLICA IDENTITY FULL, a changefeed without ``diff``) still
        lands in the changelog, and is counted and logged: no cached state can be found for it.
        """
        parsed = parse_change(data, self._decimals, attributes, published_ms)
        if not isinstance(parsed, Change):
            self.stats.add(IngestStats.ACKNOWLEDGED[parsed.kind])
            return parsed.kind  # type: ignore[return-value]
        if parsed.raw_values:
            self.stats.add("raw_values", len(parsed.raw_values))
        if not parsed.user_ids:
            self.stats.add("unattributed")
            log.warning("change names no user; cached states stay until the next refresh", extra={"fields": {
                "message_id": message_id, "table": parsed.table, "op": parsed.op}})
        self.apply([parsed], message_id)
        return "applied"

    def apply(self, changes: Sequence[Change], message_id: str) -> None:
        """Apply parsed changes, batched with whatever else this instance is applying right now.

        A thread that finds a batch slot free applies the queue; the others sleep on their own item's
        lock and are woken exactly once: when their item is done, or to apply the next batch (its first
        item is theirs) when the one before it ends. No thread is woken to find nothing to do.
        """
        item = _Pending(changes, message_id)
        with self._lock:
            self._queue.append(item)
            batch = self._take() if self._inflight < self._max_inflight else None
            if batch is not None:
                self._inflight += 1
        if batch is None:
            item.wake.acquire()
            batch = None if item.done else item.batch
        while batch is not None:
            error: BaseException | None = None
            try:
                self._apply_batch(batch)
            except BaseException as exc:
                error = exc
            with self._lock:
                following = self._take() if self._queue else None
                if following is None:
                    self._inflight -= 1
            for pending in batch:
                pending.done, pending.error = True, error
                if pending is not item:
                    pending.wake.release()
            if following is not None and item.done:
                following[0].batch = following  # hand the slot on: that thread applies the next batch
                following[0].wake.release()
                following = None
            batch = following  # item not done yet: it is queued, so this thread applies the next batch
        if item.error is not None:
            raise item.error
        if item.landing is not None:
            item.landing.result()  # raises the append's error: the message is redelivered

    def _take(self) -> list[_Pending]:
        """The oldest queued items, at most max_batch (the caller holds the lock)."""
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        return batch

    def _apply_batch(self, batch: Sequence[_Pending]) -> None:
        users = sorted({u for p in batch for c in p.changes for u in c.user_ids})
        watermark, states = self._source.snapshot_states(users)
        entries: list[Entry] = [states.get(u) or Tombstone(u, watermark) for u in users]
        self._online.put_if_newer(entries)
        if self._landing is not None:
            landing = self._landing.submit([(c, p.message_id) for p in batch for c in p.changes])
            for p in batch:
                p.landing = landing
        self.stats.add("applied", sum(len(p.changes) for p in batch))
        self.stats.add("batches")
        self.stats.add("users", len(users))
