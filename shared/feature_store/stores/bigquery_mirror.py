"""The mirror of the source tables in BigQuery: what is mirrored, how it is read and how it lands.

Each ``MirrorTable`` names a PostgreSQL table, its columns as declared in
sql/bigquery/0001_mirror_tables.sql, its key and its modification time (the export's cursor).
The source is read in pages ordered by (modification time, key) (keyset pagination: each page
starts after the last row of the previous one, an index range scan), with every value rendered
as text by PostgreSQL so that pages go to CSV without per-value work in Python. In BigQuery a
page batch is loaded into a staging table, then merged on the key (mutable tables) or inserted
where the key is new (append-only transactions): replaying a batch changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feature_store.stores.postgres import Connection

# The first column of every page and staging table: the row's modification time (ISO 8601, UTC).
CURSOR_COLUMN = "_wm"
_ISO = "YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\""


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


# --- PostgreSQL: pages of text ----------------------------------------------------------------


def _as_text(column: str, kind: str) -> str:
    if kind == "TIMESTAMP":
        return f"to_char({column} AT TIME ZONE 'UTC', '{_ISO}')"
    return f"CAST({column} AS text)"


def _pg_type(kind: str) -> str:
    return {"TIMESTAMP": "timestamptz", "INT64": "bigint"}.get(kind, "text")


def _kinds(table: MirrorTable) -> dict[str, str]:
    return dict(table.columns) | {table.cursor: "TIMESTAMP"}


def page_sql(table: MirrorTable) -> str:
    """One page of ``table``: rows after the keyset position ``k0, k1..``, cursor at most ``upper``,
    in keyset order, ``n`` rows; the cursor as text first, then the mirrored columns as text.

    The one row comparison is an index range scan on (cursor, key) for the first page too: a
    first page written as ``cursor >= lo`` let the planner sort the whole table when its
    statistics were stale.
    """
    kinds = _kinds(table)
    values = ", ".join(_as_text(c, k) for c, k in table.columns)
    after = ", ".join(f"CAST(:k{i} AS {_pg_type(kinds[c])})" for i, c in enumerate(table.keyset))
    return (f"SELECT {_as_text(table.cursor, 'TIMESTAMP')} AS {CURSOR_COLUMN}, {values} FROM {table.name} "
            f"WHERE ({', '.join(table.keyset)}) > ({after}) AND {table.cursor} <= CAST(:upper AS timestamptz) "
            f"ORDER BY {', '.join(table.keyset)} LIMIT :n")


def start_position(table: MirrorTable, lo: str) -> list[str]:
    """The keyset position just before every row whose cursor is ``lo`` or later."""
    kinds = _kinds(table)
    # The smallest key values there are: '' sorts first in every collation; keys are never empty.
    return [lo, *("-9223372036854775808" if kinds[c] == "INT64" else "" for c in table.keyset[1:])]


def read_page(conn: Connection, table: MirrorTable, upper: str, after: Sequence[str], limit: int) -> list[list[Any]]:
    """A page of rows as text (cursor text first, then the mirrored columns) after a keyset position."""
    keys = {f"k{i}": v for i, v in enumerate(after)}
    return conn.run(page_sql(table), upper=upper, n=limit, **keys)


def keyset_position(table: MirrorTable, row: Sequence[Any]) -> list[str]:
    """The keyset position of a page row (to start the next page after it)."""
    index = {c: i + 1 for i, c in enumerate(table.column_names)}
    return [row[0] if c == table.cursor else row[index[c]] for c in table.keyset]


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
