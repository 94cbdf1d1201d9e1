"""Row images applied to the receiving database, newest position wins (sql/migration/replica.sql).

An image is a row as a change left it (or a delete) at a position of the sending database's log
(PostgreSQL LSN, CockroachDB HLC). Applying a batch is one transaction: per table, the positions are
compare-and-set first (``INSERT ... ON CONFLICT DO UPDATE ... WHERE stored < new``, in key order so
concurrent batches lock rows in the same order), and only the keys that won are then deleted or
upserted. So a duplicate, a redelivery or an older change arriving late changes nothing, and two
batches racing on one row leave the newer image (the position row's lock orders them). Deletes stay
as tombstones (``deleted = true``) so nothing older can bring the row back.

Values travel as one JSON document per statement (``json_to_recordset``), typed by the receiving
table's catalog: one round trip per table and step, whatever the batch size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from feature_store.domain.column_values import RawValue
from feature_store.stores.dialect import Dialect
from feature_store.stores.migration_tables import TableSpec, key_value, load_spec
from feature_store.stores.postgres import Connection, PostgresPool

Row = Mapping[str, Any]

_RECORD_TYPES = {"character varying": "TEXT", "character": "TEXT", "text": "TEXT", "integer": "INTEGER",
                 "bigint": "BIGINT", "numeric": "NUMERIC", "date": "DATE", "boolean": "BOOLEAN",
                 "timestamp with time zone": "TIMESTAMPTZ", "timestamp without time zone": "TIMESTAMP"}


@dataclass(frozen=True, slots=True)
class Image:
    """One row as a change left it: ``row`` None for a delete. ``key`` holds the source-key values."""

    table: str
    key: tuple[Any, ...]
    position: int
    row: Row | None
    commit_ms: int | None = None  # when the sending database committed it (for the lag)


@dataclass(frozen=True)
class Applied:
    applied: int  # images that were newer than what the receiving side held
    stale: int  # images at or below the stored position: nothing changed


def newest(images: Sequence[Image]) -> list[Image]:
    """One image per row: the highest position (the later one on a tie), in table and key order."""
    best: dict[tuple[str, tuple[str, ...]], Image] = {}
    for image in images:
        k = (image.table, key_value(image.key))
        held = best.get(k)
        if held is None or image.position >= held.position:
            best[k] = image
    return [best[k] for k in sorted(best)]


def _json_value(value: Any) -> Any:
    if isinstance(value, RawValue):  # legal at the source, no Python form: the database reads its text
        return value.wire
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _record(spec: TableSpec, columns: Sequence[str]) -> str:
    return ", ".join(f"{c} {_RECORD_TYPES.get(spec.type_of(c), 'TEXT')}" for c in columns)


class ReplicaStore:
    """Applies images to one database (the target forward, the source in reverse)."""

    def __init__(self, pool: PostgresPool, dialect: Dialect) -> None:
        self.pool = pool
        self.dialect = dialect
        self._specs: dict[str, TableSpec] = {}

    def spec(self, conn: Connection, table: str) -> TableSpec:
        if table not in self._specs:
            self._specs[table] = load_spec(conn, table)
        return self._specs[table]

    def apply(self, images: Sequence[Image], direction: str | None = None) -> Applied:
        """Apply a batch in one transaction; record it in fs_replication_progress when ``direction`` is given."""
        batch = newest(images)
        if not batch:
            return Applied(0, len(images))
        applied = 0
        with self.pool.connection() as conn:
            conn.execute("BEGIN")
            try:
                for table in dict.fromkeys(i.table for i in batch):
                    applied += self.apply_table(conn, self.spec(conn, table), [i for i in batch if i.table == table])
                if direction is not None:
                    self._progress(conn, direction, batch, applied, len(images) - applied)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return Applied(applied, len(images) - applied)

    def recent_lag_s(self, direction: str, within_s: float = 60.0) -> float:
        """The lag (commit to apply) of the last batch ``direction`` applied, in seconds, if it applied one in
        the last ``within_s``; 0 when it has been idle longer or never ran (its lag says nothing now)."""
        with self.pool.connection() as conn:
            rows = conn.run("SELECT extract(epoch FROM clock_timestamp() - last_applied_at), last_lag_ms "
                            "FROM fs_replication_progress WHERE direction = :d", d=direction)
        if not rows or rows[0][0] is None or rows[0][1] is None or float(rows[0][0]) > within_s:
            return 0.0
        return max(0.0, float(rows[0][1]) / 1000)

    def apply_table(self, conn: Connection, spec: TableSpec, images: Sequence[Image]) -> int:
        """Apply one table's images (one per key, in key order) in the caller's transaction."""
        won = self._claim(conn, spec, images)
        if not won:
            return 0
        winners = [i for i in images if key_value(i.key) in won]
        gone = [i for i in winners if i.row is None]
        if gone:
            keys = json.dumps([dict(zip(spec.key, map(_json_value, i.key), strict=True)) for i in gone])
            conn.run(f"DELETE FROM {spec.name} WHERE ({', '.join(spec.key)}) IN (SELECT {', '.join(spec.key)} "
                     f"FROM json_to_recordset(CAST(:k AS JSON)) AS x({_record(spec, spec.key)}))", k=keys)
        upserts: dict[tuple[str, ...], list[Row]] = {}
        for image in winners:
            if image.row is not None:
                cols = tuple(c for c in spec.names if c in image.row)
                upserts.setdefault(cols, []).append(image.row)
        for cols, rows in upserts.items():
            self._upsert(conn, spec, cols, rows)
        return len(winners)

    def _claim(self, conn: Connection, spec: TableSpec, images: Sequence[Image]) -> set[tuple[str, ...]]:
        """Compare-and-set the positions; the keys whose image is newer than the stored one."""
        items = json.dumps([{**dict(zip(spec.key, map(_json_value, i.key), strict=True)),
                             "position": str(i.position), "deleted": i.row is None} for i in images])
        keys = ", ".join(spec.key)
        rows = conn.run(
            f"INSERT INTO {spec.replica} ({keys}, position, deleted, applied_at) "
            f"SELECT {keys}, position, deleted, now() FROM json_to_recordset(CAST(:items AS JSON)) "
            f"AS x({_record(spec, spec.key)}, position NUMERIC, deleted BOOLEAN) ORDER BY {keys} "
            f"ON CONFLICT ({keys}) DO UPDATE SET position = EXCLUDED.position, deleted = EXCLUDED.deleted, "
            f"applied_at = EXCLUDED.applied_at WHERE {spec.replica}.position < EXCLUDED.position "
            f"RETURNING {keys}", items=items)
        return {key_value(r) for r in rows}

    def _upsert(self, conn: Connection, spec: TableSpec, cols: Sequence[str], rows: Sequence[Row]) -> None:
        data = json.dumps([{c: _json_value(r[c]) for c in cols} for r in rows])
        names = ", ".join(cols)
        changes = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in spec.key)
        conflict = f"DO UPDATE SET {changes}" if changes else "DO NOTHING"
        conn.run(f"INSERT INTO {spec.name} ({names}) SELECT {names} FROM json_to_recordset(CAST(:rows AS JSON)) "
                 f"AS x({_record(spec, cols)}) ON CONFLICT ({', '.join(spec.key)}) {conflict}", rows=data)

    @staticmethod
    def _progress(conn: Connection, direction: str, batch: Sequence[Image], applied: int, stale: int) -> None:
        commits = [i.commit_ms for i in batch if i.commit_ms is not None]
        newest_commit = max(commits) if commits else None
        oldest_commit = min(commits) if commits else None
        conn.run("INSERT INTO fs_replication_progress (direction) VALUES (:d) ON CONFLICT (direction) DO NOTHING",
                 d=direction)
        conn.run("UPDATE fs_replication_progress SET applied = applied + :a, stale = stale + :s, "
                 "batches = batches + 1, "
                 "last_position = GREATEST(COALESCE(last_position, 0), CAST(:p AS NUMERIC)), "
                 "last_commit_at = GREATEST(last_commit_at, to_timestamp(CAST(:c AS DOUBLE PRECISION) / 1000)), "
                 "last_applied_at = now(), "
                 "last_lag_ms = COALESCE(extract(epoch FROM clock_timestamp()) * 1000 - CAST(:o AS DOUBLE PRECISION), "
                 "last_lag_ms) "
                 "WHERE direction = :d", a=applied, s=stale, p=str(max(i.position for i in batch)),
                 c=newest_commit, o=oldest_commit, d=direction)
