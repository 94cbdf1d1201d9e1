"""The migrated tables as the migration reads and writes them: keys, columns, and the SQL built from them.

Every table is walked in the order of its SOURCE primary key (domain/changes.py: ``TABLES``), which the
target keeps unique even where its own primary key differs (transactions: services/migration/schema.py),
so the same key range names the same rows on both sides. Columns come from the database's catalog,
in ordinal order. Key values are carried as text (``KeyValue``: what the driver returned, formatted)
and rendered as typed literals: ``COPY (query)`` takes no bind parameters.

Checksums hash the ordered rows of a key range: one text per row (every column in a canonical text,
``quote_nullable`` so NULL and 'NULL' differ), joined in key order, md5 of the whole. The canonical
texts are per dialect so both sides of a PostgreSQL -> CockroachDB pair render a value the same way;
the CockroachDB expressions are checked by unit tests only (no CockroachDB server runs here).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from feature_store.domain.changes import TABLES
from feature_store.stores.postgres import Connection

# The order the phases walk the tables in: parents before children, the biggest last. The API clients
# and keys (0006_api_clients.sql) are copied and verified like the rest but are not in the change stream
# (they are no input of any feature): fs-keys changes made after their backfill show in verification.
MIGRATED: tuple[str, ...] = ("api_clients", "api_keys", "users", "risk_scores", "installment_plans", "installments",
                             "transactions")
# The key each table is walked by: the captured tables' source primary key, and the keys of the others.
KEYS: dict[str, tuple[str, ...]] = {**{name: t.primary_key for name, t in TABLES.items()},
                                    "api_clients": ("client_id",), "api_keys": ("key_id",)}

_TEXT_TYPES = {"character varying", "text", "character", "bpchar", "varchar", "string"}


@dataclass(frozen=True)
class TableSpec:
    """One migrated table: its source key and every column with its catalog type."""

    name: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (name, information_schema data_type)

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def type_of(self, column: str) -> str:
        return dict(self.columns)[column]

    @property
    def replica(self) -> str:
        """The table of per-row replication positions (sql/migration/replica.sql)."""
        return f"fs_replica_{self.name}"

    @property
    def stage(self) -> str:
        """The staging table a chunk lands in first when the target range is not empty."""
        return f"fs_stage_{self.name}"


def load_spec(conn: Connection, table: str) -> TableSpec:
    """The spec of ``table`` as the database connected to has it."""
    rows = conn.run("SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = :t ORDER BY ordinal_position", t=table)
    if not rows:
        raise LookupError(f"table {table} does not exist in this database")
    return TableSpec(table, KEYS[table], tuple((str(n), str(t)) for n, t in rows))


# --- keys ---------------------------------------------------------------------------------------

KeyValue = tuple[str, ...]


def key_value(values: Sequence[Any]) -> KeyValue:
    """A key as returned by the driver, as text that renders back to the same value."""
    return tuple(v.isoformat() if isinstance(v, datetime) else str(v) for v in values)


def key_json(key: KeyValue | None) -> str | None:
    return None if key is None else json.dumps(list(key))


def key_from_json(text: Any) -> KeyValue | None:
    if text is None:
        return None
    values = json.loads(text) if isinstance(text, str) else text
    return tuple(str(v) for v in values)


def literal(value: str, data_type: str) -> str:
    """A typed SQL literal of one key value (single quotes doubled; standard_conforming_strings)."""
    quoted = "'" + value.replace("'", "''") + "'"
    if data_type in _TEXT_TYPES:
        return quoted
    if data_type == "integer":
        return f"CAST({quoted} AS INTEGER)"
    if data_type == "bigint":
        return f"CAST({quoted} AS BIGINT)"
    if data_type.startswith("timestamp"):
        return f"CAST({quoted} AS TIMESTAMPTZ)"
    if data_type == "date":
        return f"CAST({quoted} AS DATE)"
    return f"CAST({quoted} AS {data_type.upper()})"


def _tuple(spec: TableSpec, prefix: str = "") -> str:
    cols = ", ".join(f"{prefix}{c}" for c in spec.key)
    return f"({cols})" if len(spec.key) > 1 else cols


def _key_literal(spec: TableSpec, key: KeyValue) -> str:
    values = ", ".join(literal(v, spec.type_of(c)) for c, v in zip(spec.key, key, strict=True))
    return f"({values})" if len(spec.key) > 1 else values


def key_range(spec: TableSpec, after: KeyValue | None, last: KeyValue | None, prefix: str = "") -> str:
    """``after < key <= last`` (either bound may be open) as a predicate on the key columns."""
    parts = []
    if after is not None:
        parts.append(f"{_tuple(spec, prefix)} > {_key_literal(spec, after)}")
    if last is not None:
        parts.append(f"{_tuple(spec, prefix)} <= {_key_literal(spec, last)}")
    return " AND ".join(parts) or "TRUE"


def order_by(spec: TableSpec, prefix: str = "") -> str:
    return ", ".join(f"{prefix}{c}" for c in spec.key)


def bound_sql(spec: TableSpec, after: KeyValue | None, n: int) -> str:
    """The key of the ``n``-th row after ``after``: the inclusive end of a chunk of ``n`` rows."""
    return (f"SELECT {', '.join(spec.key)} FROM {spec.name} WHERE {key_range(spec, after, None)} "
            f"ORDER BY {order_by(spec)} OFFSET {int(n) - 1} LIMIT 1")


def copy_out_sql(spec: TableSpec, after: KeyValue | None, last: KeyValue | None) -> str:
    return (f"COPY (SELECT {', '.join(spec.names)} FROM {spec.name} WHERE {key_range(spec, after, last)} "
            f"ORDER BY {order_by(spec)}) TO STDOUT")


def copy_in_sql(spec: TableSpec, table: str | None = None) -> str:
    return f"COPY {table or spec.name} ({', '.join(spec.names)}) FROM STDIN"


# --- checksums ----------------------------------------------------------------------------------


def canonical(column: str, data_type: str, dialect: str) -> str:
    """``column`` as the text both sides agree on (NULL stays NULL; quote_nullable marks it)."""
    if data_type in _TEXT_TYPES:
        return column
    if data_type.startswith("timestamp"):
        if dialect == "cockroachdb":
            return f"experimental_strftime({column}, '%Y-%m-%d %H:%M:%S.%f')"
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    if data_type == "date":
        if dialect == "cockroachdb":
            return f"experimental_strftime({column}, '%Y-%m-%d')"
        return f"to_char({column}, 'YYYY-MM-DD')"
    return f"CAST({column} AS TEXT)"


def checksum_sql(spec: TableSpec, dialect: str, after: KeyValue | None, last: KeyValue | None) -> str:
    """Rows and md5 of the ordered canonical rows of ``after < key <= last``.

    The digest is the same on both dialects: md5 of the rows' texts joined by newlines in key order. How the
    order is asked for differs. CockroachDB keeps the aggregate's own ORDER BY (the form written from its
    documentation; no CockroachDB server runs here). PostgreSQL (15) sorts the input of an ordered aggregate
    whatever order the scan gives, and that sort was about a third of the statement's CPU; there the rows
    come from a subquery ordered by the key, which the key index serves without a sort. Equal digests mean
    the same rows in the same order however the order came about, so the order only decides whether equal
    data looks equal: a chunk whose rows arrived in another order would look different and be settled by
    the row-by-row recheck, never pass unseen.
    """
    row = " || ',' || ".join(f"quote_nullable({canonical(c, t, dialect)})" for c, t in spec.columns)
    if dialect == "cockroachdb":
        return (f"SELECT count(*), COALESCE(md5(string_agg({row}, chr(10) ORDER BY {order_by(spec)})), '') "
                f"FROM {spec.name} WHERE {key_range(spec, after, last)}")
    return (f"SELECT count(*), COALESCE(md5(string_agg(r, chr(10))), '') FROM (SELECT {row} AS r FROM {spec.name} "
            f"WHERE {key_range(spec, after, last)} ORDER BY {order_by(spec)}) AS ordered")


def row_hashes_sql(spec: TableSpec, dialect: str, after: KeyValue | None, last: KeyValue | None,
                   with_position: bool = False) -> str:
    """Key and md5 of each row of the range (and, on the receiving side, its replica position)."""
    row = " || ',' || ".join(f"quote_nullable({canonical('t.' + c, ty, dialect)})" for c, ty in spec.columns)
    keys = ", ".join(f"t.{c}" for c in spec.key)
    if not with_position:
        return (f"SELECT {keys}, md5({row}) FROM {spec.name} t WHERE {key_range(spec, after, last, 't.')} "
                f"ORDER BY {order_by(spec, 't.')}")
    match = " AND ".join(f"r.{c} = t.{c}" for c in spec.key)
    return (f"SELECT {keys}, md5({row}), r.position FROM {spec.name} t LEFT JOIN {spec.replica} r ON {match} "
            f"WHERE {key_range(spec, after, last, 't.')} ORDER BY {order_by(spec, 't.')}")


def newer_sql(spec: TableSpec, after: KeyValue | None, last: KeyValue | None) -> str:
    """Keys of the range whose replica position is above ``:w`` (changed after a snapshot at w)."""
    return (f"SELECT {', '.join('r.' + c for c in spec.key)} FROM {spec.replica} r "
            f"WHERE {key_range(spec, after, last, 'r.')} AND r.position > CAST(:w AS NUMERIC)")


def rows_sql(spec: TableSpec, after: KeyValue | None, last: KeyValue | None) -> str:
    return (f"SELECT {', '.join(spec.names)} FROM {spec.name} WHERE {key_range(spec, after, last)} "
            f"ORDER BY {order_by(spec)}")
