"""Chunks of a migrated table: read from one database with COPY, landed in the other, checksummed on both.

A chunk is the rows ``after < key <= last`` in source-key order (stores/migration_tables.py). Reading
one is a single REPEATABLE READ transaction (its bound and its rows from one snapshot); the rows travel
as COPY text, never as Python values.

Landing one never overwrites what the replication wrote (docs/migration.md, "Backfill"): inside one
transaction of the receiving database it locks the table's replica positions against the replication
(PostgreSQL: ``LOCK ... IN SHARE MODE``; CockroachDB's serializable transactions order the two
instead), then either COPYs straight into an empty key range and removes the rows the replication has
deleted (its tombstones), or, when the replication already wrote into the range, COPYs into a staging
table and inserts only the rows the replication has not touched. The caller's checkpoint is written
in the same transaction, so a chunk lands exactly once however often the copy is interrupted.

The verification reads the sending side *settled* (``settled_rows``): complete to the position it is tagged
with, which its rechecks and repair need (services/migration/verify.py says why).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from feature_store.stores.dialect import Dialect
from feature_store.stores.migration_tables import (
    KeyValue,
    TableSpec,
    bound_sql,
    checksum_sql,
    copy_in_sql,
    copy_out_sql,
    key_range,
    key_value,
    order_by,
)
from feature_store.stores.postgres import Connection, PostgresPool


@dataclass(frozen=True)
class Chunk:
    """Rows read from one snapshot: COPY text, how many, and the key range they cover."""

    after: KeyValue | None
    last: KeyValue | None  # None: every row after ``after`` (the table's last chunk)
    data: bytes
    rows: int


@dataclass(frozen=True)
class Checksum:
    rows: int
    md5: str


def read_chunk(pool: PostgresPool, spec: TableSpec, after: KeyValue | None, rows: int) -> Chunk:
    """The next ``rows`` rows after ``after`` (fewer at the end), bound and rows from one snapshot."""
    with pool.connection() as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            found = conn.raw.run(bound_sql(spec, after, rows))
            last = key_value(found[0]) if found else None
            chunk = _copy_out(conn, spec, after, last)
        finally:
            conn.execute("COMMIT")
    return chunk


def read_range(conn: Connection, spec: TableSpec, after: KeyValue | None, last: KeyValue | None) -> Chunk:
    """The rows of a known key range, in the caller's transaction."""
    return _copy_out(conn, spec, after, last)


def _copy_out(conn: Connection, spec: TableSpec, after: KeyValue | None, last: KeyValue | None) -> Chunk:
    out = io.BytesIO()
    conn.raw.run(copy_out_sql(spec, after, last), stream=out)
    data = out.getvalue()
    return Chunk(after, last, data, data.count(b"\n"))


def land_chunk(pool: PostgresPool, dialect: Dialect, spec: TableSpec, chunk: Chunk,
               checkpoint: Callable[[Connection], None]) -> int:
    """Insert the chunk's rows the replication has not written or deleted; run ``checkpoint`` in the same
    transaction. Returns how many rows were inserted."""
    with pool.connection() as conn:
        conn.execute("BEGIN")
        try:
            if dialect.name == "postgresql":
                conn.execute(f"LOCK TABLE {spec.replica} IN SHARE MODE")
            inserted = _land(conn, spec, chunk) if chunk.rows else 0
            checkpoint(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return inserted


def _land(conn: Connection, spec: TableSpec, chunk: Chunk) -> int:
    scope = key_range(spec, chunk.after, chunk.last)
    empty = not conn.raw.run(f"SELECT 1 FROM {spec.name} WHERE {scope} LIMIT 1")
    cols = ", ".join(spec.names)
    key = ", ".join(spec.key)
    if empty:
        conn.raw.run(copy_in_sql(spec), stream=io.BytesIO(chunk.data))
        replica_scope = key_range(spec, chunk.after, chunk.last, prefix="r.")
        conn.raw.run(f"DELETE FROM {spec.name} WHERE ({key}) IN (SELECT {', '.join('r.' + c for c in spec.key)} "
                     f"FROM {spec.replica} r WHERE r.deleted AND {replica_scope})")
        return chunk.rows - int(conn.raw.row_count)
    conn.execute(f"DELETE FROM {spec.stage}")
    conn.raw.run(copy_in_sql(spec, spec.stage), stream=io.BytesIO(chunk.data))
    match = " AND ".join(f"r.{c} = s.{c}" for c in spec.key)
    conn.raw.run(
        f"INSERT INTO {spec.name} ({cols}) SELECT {', '.join('s.' + c for c in spec.names)} FROM {spec.stage} s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {spec.replica} r WHERE {match}) ORDER BY {order_by(spec, 's.')} "
        "ON CONFLICT DO NOTHING")
    inserted = int(conn.raw.row_count)
    conn.execute(f"DELETE FROM {spec.stage}")
    return inserted


def checksum(pool: PostgresPool, dialect: Dialect, spec: TableSpec, after: KeyValue | None,
             last: KeyValue | None) -> Checksum:
    """Rows and md5 of the ordered rows of the range, as this database holds them now."""
    with pool.connection() as conn:
        rows, md5 = conn.raw.run(checksum_sql(spec, dialect.name, after, last))[0]
    return Checksum(int(rows), str(md5))


def bound(pool: PostgresPool, spec: TableSpec, after: KeyValue | None, rows: int) -> KeyValue | None:
    """The key ``rows`` rows after ``after``, or None when fewer remain."""
    with pool.connection() as conn:
        found = conn.raw.run(bound_sql(spec, after, rows))
    return key_value(found[0]) if found else None


# Transactions of THIS database holding an xid (every writer has one before its first change): each holds
# the lock on its own xid until its end is visible to new snapshots (PostgreSQL releases it after
# ProcArrayEndTransaction), so a lock found gone means its commit is in any snapshot taken afterwards.
# Sessions known to be in other databases are left out; one we cannot place (a prepared transaction) counts
# as ours. Not pg_snapshot_xip(pg_current_snapshot()): a snapshot lists only running xids below its xmax (the
# newest completed xid + 1), so a writer whose xid came after the last commit is not listed (tested).
_WRITERS = """
SELECT DISTINCT CAST(l.transactionid AS TEXT) FROM pg_locks l
WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                  WHERE a.pid = l.pid AND a.datname IS DISTINCT FROM current_database())
"""
_STILL_OPEN = _WRITERS + " AND CAST(l.transactionid AS TEXT) = ANY(CAST(:xids AS TEXT[]))"


@dataclass(frozen=True)
class Snapshot:
    """Rows of the sending database and the position they are complete to: when ``settled``, every change of
    the replicated stream at or below ``position`` is in ``rows``; otherwise some below it may be missing."""

    position: int
    rows: list[list[Any]]
    settled: bool


def settled_rows(pool: PostgresPool, dialect: Dialect, sql: str, wait_s: float,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> Snapshot:
    """The rows of ``sql`` with a position every change at or below which they contain (settled), waiting at
    most ``wait_s`` for the writers open at the watermark; past that, the rows unsettled.

    CockroachDB: the watermark and the rows share one transaction, read exactly at its timestamp (a later
    commit is above it). PostgreSQL (pg_locks, pg_stat_activity): the WAL flush position ``w`` is read, then
    the writers open at that moment are listed by their xid locks and waited for, then the rows are read
    from a snapshot taken after the last of them ended, at position ``w - 1``. A change below ``w`` was
    written before ``w`` was read, so by a transaction that had committed by then or was listed; a change
    written after has a position of at least ``w`` (its record starts at or after the flush position), hence
    ``w - 1``. Writers starting later are never waited for: a stream of short writers delays the read by
    about one of them.
    """
    if dialect.watermark_in_transaction:
        with pool.connection() as conn:
            conn.execute("BEGIN")
            try:
                mark = dialect.watermark(conn.run(dialect.watermark_sql)[0][0])
                rows = conn.raw.run(sql)
            finally:
                conn.execute("COMMIT")
        return Snapshot(mark, rows, True)
    deadline = clock() + wait_s
    pause = 0.005
    with pool.connection() as conn:
        mark = dialect.watermark(conn.run(dialect.watermark_sql)[0][0])
        open_ = [str(r[0]) for r in conn.raw.run(_WRITERS)]
        while open_ and clock() < deadline:
            sleep(pause)
            pause = min(2 * pause, 0.05)
            open_ = [str(r[0]) for r in conn.run(_STILL_OPEN, xids="{" + ",".join(open_) + "}")]
        # A new transaction, so its snapshot is taken after the check found the writers gone.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            rows = conn.raw.run(sql)
        finally:
            conn.execute("COMMIT")
    return Snapshot(mark - 1, rows, not open_)


def keyed(rows: Sequence[Sequence[Any]], width: int) -> dict[KeyValue, list[Any]]:
    """Rows whose first ``width`` columns are the key, by key."""
    return {key_value(r[:width]): list(r[width:]) for r in rows}


def fetch(pool: PostgresPool, sql: str, **params: Any) -> list[list[Any]]:
    with pool.connection() as conn:
        rows: list[list[Any]] = conn.raw.run(sql, **params) if params else conn.raw.run(sql)
    return rows
