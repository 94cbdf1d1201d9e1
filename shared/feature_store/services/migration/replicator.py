"""Continuous replication: change events from the topic applied to the other database (replicate_changes).

replicate_changes takes the same change stream as ingest_changes, through a second subscription, and
applies each change's row images to the database that does not originate it: source -> target while
the migration replicates forward, target -> source after the cutover (reverse), so a rollback loses
nothing. Images are applied by position, newest wins (stores/migration_replica.py): duplicates,
redeliveries and reordering are harmless, and a row's changes land in its own order whatever order
they arrive in.

Which way the stream flows is the target's ``fs_migration_state.direction``, cached for
``cache_s``. A change is skipped only after a FRESH read of the state says it is not to be applied:
the backfill's first snapshot is taken after the prepare phase committed ``direction = forward``, so
a change skipped before that commit is in every snapshot the backfill reads (docs/migration.md).

After a forward batch lands in the target, the users it touched whose reads already go to the target
are recomputed into the online store (``recompute``), so a reader routed to the target never keeps a
vector computed before the change reached it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import pg8000.native

from feature_store.domain.changes import TABLES, Change, DecimalMode, parse_change
from feature_store.errors import PoisonMessage
from feature_store.logs import get_logger
from feature_store.services.ingest import IngestStats
from feature_store.stores.migration_replica import Image, ReplicaStore
from feature_store.stores.migration_state import Direction, MigrationState, sqlstate

log = get_logger(__name__)

Outcome = Literal["applied", "stale", "skipped", "tombstone", "heartbeat", "transaction", "resolved"]
Origin = Literal["source", "target"]

# SQLSTATE classes that no retry can fix: data exceptions (22), integrity violations (23).
_PERMANENT_CLASSES = ("22", "23")


def origin(change: Change) -> Origin:
    """Which database a change comes from: Debezium events are the source's, changefeed messages the target's."""
    return "target" if change.producer == "cockroachdb" else "source"


def images(change: Change) -> list[Image]:
    """The row images a change leaves: the new row, and a delete of the old key when the key changed."""
    key_cols = TABLES[change.table].primary_key
    if change.op == "d":
        gone = change.before if change.before is not None else change.key
        return [Image(change.table, tuple(gone[c] for c in key_cols), change.position, None, change.ts_ms)]
    assert change.after is not None
    key = tuple(change.after[c] for c in key_cols)
    out = [Image(change.table, key, change.position, dict(change.after), change.ts_ms)]
    if change.before is not None and all(c in change.before for c in key_cols):
        old = tuple(change.before[c] for c in key_cols)
        if old != key:
            out.append(Image(change.table, old, change.position, None, change.ts_ms))
    return out


class Replicator:
    """Applies one change event per call to the database the current direction says."""

    def __init__(self, read_state: Callable[[], MigrationState | None], forward: ReplicaStore,
                 reverse: ReplicaStore | None, recompute: Callable[[Sequence[Change], str], None] | None = None,
                 decimals: DecimalMode = "precise", cache_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read_state = read_state
        self._stores: dict[Direction, ReplicaStore | None] = {"forward": forward, "reverse": reverse}
        self._recompute = recompute
        self._decimals: DecimalMode = decimals
        self._cache_s = cache_s
        self._clock = clock
        self._cached: tuple[float, Direction] | None = None
        self._lock = threading.Lock()
        self.stats = IngestStats()  # applied, stale, skipped by reason, poison by code

    def direction(self, fresh: bool = False) -> Direction:
        """The direction of the stream: the target's state, cached for ``cache_s`` unless ``fresh``."""
        now = self._clock()
        with self._lock:
            cached = self._cached
        if not fresh and cached is not None and now < cached[0]:
            return cached[1]
        try:
            state = self._read_state()
        except pg8000.native.DatabaseError as exc:
            if sqlstate(exc) != "3D000":  # invalid_catalog_name: the target database does not exist yet
                raise
            state = None
        direction: Direction = "none" if state is None else state.direction
        with self._lock:
            self._cached = (now + self._cache_s, direction)
        return direction

    def handle(self, data: bytes, message_id: str, attributes: Mapping[str, str] | None = None,
               published_ms: int | None = None) -> Outcome:
        """Parse one message and apply it where it belongs; PoisonMessage when it never can be.

        Only a row change is applied; a tombstone, heartbeat, transaction boundary or resolved timestamp
        is counted by kind and acknowledged.
        """
        change = parse_change(data, self._decimals, attributes, published_ms)
        if not isinstance(change, Change):
            self.stats.add(change.kind)
            return change.kind  # type: ignore[return-value]
        if change.position <= 0:
            raise PoisonMessage("the change carries no position: a changefeed needs the updated option "
                                "(CREATE CHANGEFEED ... WITH updated, diff)", code="poison_no_position")
        wanted: Direction = "forward" if origin(change) == "source" else "reverse"
        if self.direction() != wanted and self.direction(fresh=True) != wanted:
            self.stats.add(f"skipped:{origin(change)}_change_while_{self.direction()}")
            return "skipped"
        store = self._stores[wanted]
        if store is None:
            raise PoisonMessage("reverse replication is not configured on this instance", code="poison_no_reverse")
        try:
            result = store.apply(images(change), wanted)
        except pg8000.native.DatabaseError as exc:
            if sqlstate(exc)[:2] in _PERMANENT_CLASSES:
                # The SQLSTATE, not the server's sentence: that one may quote the row's values, and poison
                # reasons are logged (no personal data in logs).
                raise PoisonMessage(f"the {change.table} change cannot be applied: SQLSTATE {sqlstate(exc)}",
                                    code="poison_unappliable") from None
            raise
        self.stats.add("applied", result.applied)
        self.stats.add("stale", result.stale)
        if result.applied and wanted == "forward" and self._recompute is not None:
            self._recompute([change], message_id)
        return "applied" if result.applied else "stale"
