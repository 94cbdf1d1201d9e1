"""The mirror of the source tables in BigQuery: what is mirrored and how a batch of rows lands.

Each ``MirrorTable`` names a PostgreSQL table, its columns as declared in
sql/bigquery/0001_mirror_tables.sql, its key and its modification time (the export's cursor);
stores/postgres_export.py reads it in pages. A batch of pages is written to a CSV file
(``MirrorBatch``), loaded into a staging table of its own, then merged on the key (mutable tables)
or inserted where the key is new (append-only transactions): replaying a batch changes nothing.
"""

from __future__ import annotations

import csv
import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from feature_store.errors import OfflineQueryFailed

if TYPE_CHECKING:
    from feature_store.stores.bigquery_offline import OfflineStore

# The first column of every page and staging table: the row's modification time (ISO 8601, UTC).
CURSOR_COLUMN = "_wm"


@dataclass(frozen=True)
class MirrorTable:
    """One mirrored table: columns (name, BigQuery type), key, modification-time cursor."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    cursor: str
    append_only: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    @property
    def keyset(self) -> tuple[str, ...]:
        """The page order: the cursor, then the key columns that are not the cursor."""
        return (self.cursor, *(k for k in self.key if k != self.cursor))

    @property
    def staging_schema(self) -> list[tuple[str, str]]:
        return [(CURSOR_COLUMN, "TIMESTAMP"), *self.columns]

    @property
    def cursor_is_mirrored(self) -> bool:
        return self.cursor in self.column_names


_USERS = (("user_id", "STRING"), ("age", "INT64"), ("location_country", "STRING"), ("signup_date", "DATE"),
          ("verification_status", "STRING"), ("income_bracket", "STRING"), ("created_at", "TIMESTAMP"),
          ("updated_at", "TIMESTAMP"))
_TRANSACTIONS = (("transaction_id", "STRING"), ("user_id", "STRING"), ("amount", "NUMERIC"), ("currency", "STRING"),
                 ("merchant", "STRING"), ("category", "STRING"), ("status", "STRING"), ("created_at", "TIMESTAMP"))
_RISK_SCORES = (("user_id", "STRING"), ("risk_score", "NUMERIC"), ("fraud_probability", "NUMERIC"),
                ("payment_delays", "INT64"), ("device_trust_score", "NUMERIC"), ("credit_utilization", "NUMERIC"),
                ("calculated_at", "TIMESTAMP"))
_PLANS = (("plan_id", "STRING"), ("user_id", "STRING"), ("transaction_id", "STRING"), ("principal", "NUMERIC"),
          ("n_installments", "INT64"), ("status", "STRING"), ("created_at", "TIMESTAMP"), ("updated_at", "TIMESTAMP"))
_INSTALLMENTS = (("plan_id", "STRING"), ("seq", "INT64"), ("user_id", "STRING"), ("due_date", "DATE"),
                 ("amount", "NUMERIC"), ("paid_at", "TIMESTAMP"))

# Exported in this order; each table has its own watermark, so the order only matters for speed.
MIRRORED: tuple[MirrorTable, ...] = (
    MirrorTable("users", _USERS, ("user_id",), "updated_at"),
    MirrorTable("risk_scores", _RISK_SCORES, ("user_id",), "calculated_at"),
    MirrorTable("installment_plans", _PLANS, ("plan_id",), "updated_at"),
    # installments.updated_at comes from sql/postgres/0004 (kept current by a trigger); not mirrored.
    MirrorTable("installments", _INSTALLMENTS, ("plan_id", "seq"), "updated_at"),
    MirrorTable("transactions", _TRANSACTIONS, ("transaction_id", "created_at"), "created_at", append_only=True),
)
BY_NAME = {t.name: t for t in MIRRORED}


# --- BigQuery: staging to mirror --------------------------------------------------------------


def _latest(table: MirrorTable, staging: str) -> str:
    # A batch can hold two versions of one row (updated while the export paged): keep the newest.
    keys = ", ".join(table.key)
    return (f"SELECT * FROM {staging} WHERE TRUE "
            f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {CURSOR_COLUMN} DESC) = 1")


def apply_sql(table: MirrorTable, target: str, staging: str) -> str:
    """The statement that lands a loaded staging table in the mirror, idempotently.

    Append-only tables take ``@lo`` (the batch's earliest cursor) so BigQuery reads only the
    partitions the batch can touch.
    """
    columns = table.column_names
    insert = f"({', '.join(columns)})"
    if table.append_only:
        match = " AND ".join(f"t.{k} = s.{k}" for k in table.key)
        return (f"INSERT INTO {target} {insert}\n"
                f"SELECT {', '.join('s.' + c for c in columns)} FROM ({_latest(table, staging)}) AS s\n"
                f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {match} AND t.{table.cursor} >= @lo)")
    on = " AND ".join(f"t.{k} = s.{k}" for k in table.key)
    # Never replace a newer mirrored version with an older one (a re-read of the overlap window).
    newer = f" AND t.{table.cursor} <= s.{table.cursor}" if table.cursor_is_mirrored else ""
    updates = ", ".join(f"{c} = s.{c}" for c in columns if c not in table.key)
    return (f"MERGE {target} AS t\nUSING ({_latest(table, staging)}) AS s\nON {on}\n"
            f"WHEN MATCHED{newer} THEN UPDATE SET {updates}\n"
            f"WHEN NOT MATCHED THEN INSERT {insert} VALUES ({', '.join('s.' + c for c in columns)})")


class MirrorBatch:
    """Pages of one table gathered in a CSV file, then landed in the mirror with one load and one merge."""

    def __init__(self, offline: OfflineStore, table: MirrorTable, tmp_dir: str | None = None) -> None:
        self.offline = offline
        self.table = table
        fd, name = tempfile.mkstemp(prefix=f"fs_export_{table.name}_", suffix=".csv",
                                    dir=tmp_dir or tempfile.gettempdir())
        self.path = Path(name)
        self._file = os.fdopen(fd, "w", newline="")
        self._reset()

    def _reset(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow([c for c, _ in self.table.staging_schema])
        self.rows = 0
        self.first: str | None = None  # the batch's earliest and latest cursor (pages come in cursor order)
        self.last: str | None = None

    def add(self, page: Sequence[Sequence[Any]]) -> None:
        """Add a page of text rows (cursor first, as stores/postgres_export.py reads them)."""
        if not page:
            return
        self._writer.writerows(page)
        self.rows += len(page)
        self.first = self.first or str(page[0][0])
        self.last = str(page[-1][0])

    def land(self) -> str:
        """Load and merge what was added (idempotent), start an empty batch; return the batch's latest cursor."""
        assert self.rows and self.last is not None and self.first is not None, "an empty batch has nothing to land"
        self._file.flush()
        staging = f"_stage_{self.table.name}_{secrets.token_hex(6)}"
        lo = datetime.fromisoformat(self.first.replace("Z", "+00:00")).astimezone(UTC)
        try:
            loaded = self.offline.load_csv(self.path, staging, self.table.staging_schema)
            if loaded != self.rows:
                raise OfflineQueryFailed(f"{self.table.name}: {self.rows} rows written but {loaded} loaded; "
                                         "nothing merged", code="export_incomplete")
            self.offline.run(apply_sql(self.table, self.offline.table(self.table.name), self.offline.table(staging)),
                             {"lo": lo} if self.table.append_only else None)
        finally:
            self.offline.drop_table(staging)
        last = self.last
        self._reset()
        return last

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> MirrorBatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
