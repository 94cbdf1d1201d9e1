"""The source side of the ETL export: keyset pages of the mirrored tables as text, and the source's clock.

The source is read in pages ordered by (modification time, key) (keyset pagination: each page
starts after the last row of the previous one, an index range scan), with every value rendered
as text by PostgreSQL so that pages go to CSV without per-value work in Python
(stores/bigquery_mirror.py lands them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from feature_store.stores.bigquery_mirror import CURSOR_COLUMN, MirrorTable
from feature_store.stores.postgres import PostgresPool

_ISO = "YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\""
ReadPage = Callable[[Sequence[str], int], list[list[Any]]]


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


def keyset_position(table: MirrorTable, row: Sequence[Any]) -> list[str]:
    """The keyset position of a page row (to start the next page after it)."""
    index = {c: i + 1 for i, c in enumerate(table.column_names)}
    return [row[0] if c == table.cursor else row[index[c]] for c in table.keyset]


class ExportSource:
    """Reads the mirrored tables for the export, one connection per table being read."""

    def __init__(self, pool: PostgresPool) -> None:
        self.pool = pool

    def now(self) -> str:
        """The source's clock as a watermark text (the export's upper bound)."""
        with self.pool.connection() as conn:
            return str(conn.run(f"SELECT to_char(now() AT TIME ZONE 'UTC', '{_ISO}')")[0][0])

    @contextmanager
    def pages(self, table: MirrorTable, upper: str) -> Iterator[ReadPage]:
        """``read(after, limit)``: the next page of rows as text after a keyset position, cursor at most ``upper``."""
        sql = page_sql(table)
        with self.pool.connection() as conn:
            def read(after: Sequence[str], limit: int) -> list[list[Any]]:
                return conn.run(sql, upper=upper, n=limit, **{f"k{i}": v for i, v in enumerate(after)})

            yield read
