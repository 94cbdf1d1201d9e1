"""The SQL the migration builds from a table's spec, as text: keys, ranges, COPY, and the checksums of both
dialects (the CockroachDB forms are checked here only: no CockroachDB server runs where the tests run)."""

from __future__ import annotations

from feature_store.stores.migration_tables import (
    TableSpec,
    canonical,
    checksum_sql,
    copy_out_sql,
    key_range,
    key_value,
    literal,
)

TX = TableSpec("transactions", ("transaction_id", "created_at"),
               (("transaction_id", "character varying"), ("user_id", "character varying"), ("amount", "numeric"),
                ("created_at", "timestamp with time zone")))


def test_key_values_render_as_typed_literals_with_quotes_doubled() -> None:
    from datetime import UTC, datetime

    key = key_value(["t-o'1", datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)])

    assert key == ("t-o'1", "2026-01-02T03:04:05.600000+00:00")
    assert key_range(TX, key, None) == ("(transaction_id, created_at) > ('t-o''1', "
                                        "CAST('2026-01-02T03:04:05.600000+00:00' AS TIMESTAMPTZ))")
    assert literal("7", "integer") == "CAST('7' AS INTEGER)" and literal("x", "character") == "'x'"


def test_a_chunk_is_read_in_source_key_order_between_its_bounds() -> None:
    sql = copy_out_sql(TX, ("a", "2026-01-01T00:00:00+00:00"), ("b", "2026-01-01T00:00:00+00:00"))

    assert sql.startswith("COPY (SELECT transaction_id, user_id, amount, created_at FROM transactions WHERE ")
    assert ") > (" in sql and ") <= (" in sql and sql.endswith("ORDER BY transaction_id, created_at) TO STDOUT")
    assert key_range(TX, None, None) == "TRUE"


def test_both_dialects_render_every_value_as_the_same_text() -> None:
    pg = {kind: canonical("c", kind, "postgresql") for kind in ("timestamp with time zone", "date", "numeric")}
    crdb = {kind: canonical("c", kind, "cockroachdb") for kind in ("timestamp with time zone", "date", "numeric")}

    assert pg["timestamp with time zone"] == "to_char(c AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    assert crdb["timestamp with time zone"] == "experimental_strftime(c, '%Y-%m-%d %H:%M:%S.%f')"
    assert pg["date"] == "to_char(c, 'YYYY-MM-DD')" and crdb["date"] == "experimental_strftime(c, '%Y-%m-%d')"
    assert pg["numeric"] == crdb["numeric"] == "CAST(c AS TEXT)"  # NUMERIC(p, s) keeps its scale on both
    assert canonical("c", "character varying", "cockroachdb") == "c"


def test_a_checksum_hashes_the_ordered_rows_with_nulls_marked() -> None:
    sql = checksum_sql(TX, "cockroachdb", None, ("z", "2026-01-01T00:00:00+00:00"))

    assert sql.startswith("SELECT count(*), COALESCE(md5(string_agg(quote_nullable(transaction_id) || ',' || ")
    assert "ORDER BY transaction_id, created_at)), '')" in sql and "experimental_strftime(created_at" in sql


def test_postgresql_orders_the_checksummed_rows_in_a_subquery_not_in_the_aggregate() -> None:
    sql = checksum_sql(TX, "postgresql", None, ("z", "2026-01-01T00:00:00+00:00"))

    assert sql.startswith("SELECT count(*), COALESCE(md5(string_agg(r, chr(10))), '') FROM (SELECT "
                          "quote_nullable(transaction_id) || ',' || ")
    assert sql.endswith("ORDER BY transaction_id, created_at) AS ordered")
    assert "to_char(created_at AT TIME ZONE 'UTC'" in sql and "string_agg(r, chr(10) ORDER BY" not in sql
