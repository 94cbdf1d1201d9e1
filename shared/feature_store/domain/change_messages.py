"""What one change-stream message is, once parsed: a row change or one of the messages around them.

``parse_change`` (domain/changes.py) classifies every message as one of these classes or raises
``PoisonMessage``:

- ``Change``: a row of a captured table was inserted, updated, deleted or read by a snapshot;
- ``Tombstone``: Debezium's null value after a delete (or an empty Pub/Sub message);
- ``Heartbeat``: a Debezium heartbeat, or a logical decoding message (op ``m``, what a
  ``heartbeat.action.query`` with ``pg_logical_emit_message`` produces);
- ``TransactionBoundary``: a Debezium BEGIN/END record (``provide.transaction.metadata``);
- ``Resolved``: a CockroachDB resolved timestamp, a checkpoint of the changefeed.

A ``Change`` carries everything its producer gives about the row: table, op, primary key, position,
commit time and transaction, and the ``before``/``after`` images with every captured column decoded
(a value with no Python form kept as a ``RawValue``), so both ingestion (which only needs the table
and the users to recompute) and a replicator (which writes the images) can use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Literal

from feature_store.domain.column_values import DecimalMode, InvalidValue, RawValue, decode_value, plain
from feature_store.domain.source_tables import TABLES, SourceTable
from feature_store.errors import PoisonMessage

Op = Literal["c", "u", "d", "r"]
Row = Mapping[str, Any]
Producer = Literal["debezium", "cockroachdb"]

OPS: tuple[Op, ...] = ("c", "u", "d", "r")
OP_NAMES: Mapping[str, str] = {"c": "insert", "u": "update", "d": "delete", "r": "snapshot"}


@dataclass(frozen=True, slots=True)
class Change:
    """One row change of a captured table, with its row images decoded.

    ``position`` orders the changes of one row: the change's LSN (Debezium ``source.lsn``) or its
    CockroachDB HLC timestamp as ``(wall << 32) | logical`` (stores/dialect.py's watermark form).
    ``key`` holds the primary-key columns; from a CockroachDB ``key`` array it holds every column
    of that key (for ``transactions``: user_id, created_at, transaction_id).
    """

    kind: ClassVar[str] = "change"

    table: str
    op: Op
    key: Row
    position: int
    ts_ms: int  # when the change committed at the source (epoch milliseconds)
    before: Row | None
    after: Row | None
    producer: Producer = "debezium"
    tx_id: int | None = None  # Debezium source.txId
    transaction: str | None = None  # Debezium transaction.id, or CockroachDB's `updated` (one per transaction)
    order: int | None = None  # Debezium transaction.total_order: the change's place in its transaction
    mvcc: str | None = None  # CockroachDB mvcc_timestamp, when the changefeed has that option

    @property
    def lsn(self) -> int:
        """The position, under the name the changelog gives it."""
        return self.position

    @property
    def row(self) -> Row:
        """The row as the change leaves it (``after``; ``before`` or the key for a delete), RawValues as None."""
        image = self.before if self.op == "d" else self.after
        return {name: plain(value) for name, value in (image if image is not None else self.key).items()}

    @property
    def user_ids(self) -> tuple[str, ...]:
        """Every user whose state the change can alter (an update that moves a row affects both)."""
        ids = {img["user_id"] for img in (self.before, self.after, self.key)
               if img is not None and isinstance(img.get("user_id"), str)}
        return tuple(sorted(ids))

    @property
    def raw_values(self) -> tuple[str, ...]:
        """``image.column`` of every value kept raw (no Python form), e.g. ``after.paid_at``."""
        return tuple(f"{label}.{name}" for label, img in (("before", self.before), ("after", self.after))
                     if img is not None for name, value in img.items() if isinstance(value, RawValue))

    @property
    def row_key(self) -> str:
        """The primary key of the changed row as compact JSON text."""
        return json.dumps([_text(self.key[c]) for c in TABLES[self.table].primary_key], separators=(",", ":"))

    @property
    def insert_id(self) -> str:
        """A stable id of this change (table, position, key): the same on every redelivery."""
        raw = f"{self.table}|{self.position}|{self.row_key}".encode()
        return hashlib.sha256(raw).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Debezium's null value after a delete: nothing to apply."""

    kind: ClassVar[str] = "tombstone"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A Debezium heartbeat (``io.debezium.connector.common.Heartbeat``) or logical decoding message."""

    kind: ClassVar[str] = "heartbeat"

    ts_ms: int | None


@dataclass(frozen=True, slots=True)
class TransactionBoundary:
    """A Debezium transaction-metadata record: the BEGIN or END of one source transaction."""

    kind: ClassVar[str] = "transaction"

    status: Literal["BEGIN", "END"]
    id: str
    event_count: int | None
    ts_ms: int | None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A CockroachDB resolved timestamp: no change at or below ``position`` is still to come."""

    kind: ClassVar[str] = "resolved"

    position: int
    hlc: str


Parsed = Change | Tombstone | Heartbeat | TransactionBoundary | Resolved


def _text(value: Any) -> Any:
    if isinstance(value, RawValue):
        return value.wire
    return value.isoformat() if isinstance(value, date | datetime) else value


def invalid(why: str) -> PoisonMessage:
    """A change whose content its producer's documented format cannot give."""
    return PoisonMessage(f"impossible change event: {why}", code="poison_invalid_value")


def row_image(raw: Any, where: str, table: SourceTable, schemas: Mapping[str, Any], decimals: DecimalMode,
              *, complete: bool, malformed: PoisonMessage) -> dict[str, Any] | None:
    """The decoded image of one row (``complete``: a whole row, so NOT NULL holds), None for null.

    Columns the table does not declare (added at the source later) are left out: not ours to judge.
    The reasons name the column, never its value (poison logs carry no personal data).
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise malformed
    row: dict[str, Any] = {}
    for name, value in raw.items():
        col = table.by_name.get(name)
        if col is None:
            continue
        if value is None:
            if complete and col.required:
                raise invalid(f"{where}.{name} is null but the column is NOT NULL")
            row[name] = None
            continue
        try:
            row[name] = decode_value(col, value, schemas.get(name), decimals)
        except InvalidValue:
            raise invalid(f"{where}.{name} is not a valid {col.kind} of {table.name}.{name}") from None
    return row


def key_of(table: SourceTable, image: Row | None) -> dict[str, Any] | None:
    """The primary-key columns of an image, or None when one of them is missing or null."""
    if image is None or any(image.get(c) is None for c in table.primary_key):
        return None
    return {c: image[c] for c in table.primary_key}
