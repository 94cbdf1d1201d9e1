"""SQL dialects of the source of truth: PostgreSQL and CockroachDB (same driver, pg8000).

The differences the code must handle live here; docs/cockroachdb.md lists the schema ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from feature_store.domain.changefeed import hlc_position

WATERMARK_HEX_DIGITS = 24  # 96 bits: a PostgreSQL LSN (64) or a CockroachDB HLC (wall ns << 32 | logical)


@dataclass(frozen=True)
class Dialect:
    name: str
    # A statement giving the source position to tag the next snapshot with: every commit at or
    # below it is visible to a snapshot taken after it (stores/source.py reads it first).
    watermark_sql: str
    # Whether watermark and snapshot must share one explicit transaction (CockroachDB: exact, every later
    # commit is above it). PostgreSQL's is not exact for a stream whose positions are per-change LSNs: a
    # writer open at the watermark can commit a change below it later; stores/migration_chunks.settled_rows
    # waits such writers out with PostgreSQL-only catalogs (pg_locks), and only when this is False.
    watermark_in_transaction: bool
    # Declarative monthly partitions of transactions (PostgreSQL) or one range-split table.
    partitions_transactions: bool

    def watermark(self, value: Any) -> int:
        """The snapshot position as a non-negative integer that grows with every commit."""
        if self.name == "cockroachdb":
            position = hlc_position(format(Decimal(str(value)), "f"))
            if position is None:
                raise ValueError(f"not a CockroachDB HLC timestamp: {value!r}")
            return position
        return int(value)


POSTGRESQL = Dialect(
    name="postgresql",
    # The WAL flush position, read before the state statement takes its snapshot: a commit at or
    # below it is flushed and so visible to that snapshot. (Read after the snapshot, a commit could
    # land in between and a state missing it would carry a watermark above it.)
    watermark_sql="SELECT pg_current_wal_flush_lsn() - CAST('0/0' AS pg_lsn)",
    watermark_in_transaction=False,
    partitions_transactions=True,
)

COCKROACHDB = Dialect(
    name="cockroachdb",
    # Fixes the transaction's timestamp: every read of the transaction is exactly as of it.
    watermark_sql="SELECT cluster_logical_timestamp()",
    watermark_in_transaction=True,
    partitions_transactions=False,
)

DIALECTS = {d.name: d for d in (POSTGRESQL, COCKROACHDB)}


def format_watermark(dialect: Dialect, value: int) -> str:
    """A watermark as its source writes it: ``16/B374D848`` (LSN) or ``<wall>.<logical>`` (HLC)."""
    if dialect.name == "cockroachdb":
        return f"{value >> 32}.{value & 0xFFFFFFFF:010d}"
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
