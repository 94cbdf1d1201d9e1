"""The offline store's SQL agrees with the catalog and with itself: DDL, mirror specs, generated SQL."""

from __future__ import annotations

import re
import string
from dataclasses import replace

import pytest
from bq_ddl import ddl_tables

from feature_store.domain.catalog import CATALOG, CREDIT_DECISION_V1, FeatureSet
from feature_store.errors import OfflineQueryFailed
from feature_store.stores.bigquery_features import BQ_TYPES, feature_columns, features_sql, identifier, literal
from feature_store.stores.bigquery_mirror import BY_NAME, MIRRORED, apply_sql
from feature_store.stores.bigquery_offline import ddl_files, ddl_statements
from feature_store.stores.postgres_export import page_sql, start_position
from feature_store.stores.sql_files import sql_root

ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64"}


def ddl_columns(table: str) -> dict[str, str]:
    """Column -> type of ``table`` in sql/bigquery/*.sql."""
    tables = ddl_tables(ddl_files())
    assert table in tables, f"no CREATE TABLE for {table} in sql/bigquery/"
    return {name: ALIASES.get(kind, kind) for name, (kind, _) in tables[table].columns.items()}


def test_every_feature_of_every_feature_set_has_bigquery_sql_with_known_placeholders() -> None:
    for fs in CATALOG.values():
        for f in fs.features:
            assert f.bq_sql.strip(), f"{fs.name} v{fs.version} {f.name} has no bq_sql: it cannot be built offline"
            fields = {name for _, name, _, _ in string.Formatter().parse(f.bq_sql) if name is not None}
            assert fields <= {"at", "day"}, f"{f.name}: unknown placeholders {fields - {'at', 'day'}}"


def test_feature_snapshots_has_a_column_of_the_declared_type_for_every_catalog_feature() -> None:
    columns = ddl_columns("feature_snapshots")
    for fs in CATALOG.values():
        for name, kind in feature_columns(fs):
            assert name in columns, f"feature_snapshots has no column {name} ({fs.name} v{fs.version})"
            assert columns[name] == kind, f"feature_snapshots.{name} is {columns[name]}, the catalog says {kind}"


def test_the_mirror_specs_are_the_ddl_of_the_mirrored_tables() -> None:
    for table in MIRRORED:
        assert dict(table.columns) == ddl_columns(table.name), table.name
        assert set(table.key) <= set(table.column_names), table.name


def test_every_ddl_file_renders_into_statements_with_no_placeholder_left() -> None:
    files = ddl_files()
    assert [p.name for p in files if p.name[0].isdigit()] == sorted(p.name for p in files if p.name[0].isdigit())
    for path in files:
        statements = ddl_statements(path.read_text(), "ds_x")
        assert statements, path.name
        for statement in statements:
            assert "{" not in statement and "}" not in statement, (path.name, statement[:80])
            assert not statement.rstrip().endswith(";")


def test_pages_are_keyset_range_scans_starting_before_the_lowest_key() -> None:
    sql = page_sql(BY_NAME["installments"])

    assert "(updated_at, plan_id, seq) > (CAST(:k0 AS timestamptz), CAST(:k1 AS text), CAST(:k2 AS bigint))" in sql
    assert "ORDER BY updated_at, plan_id, seq LIMIT :n" in sql
    assert start_position(BY_NAME["installments"], "-infinity") == ["-infinity", "", "-9223372036854775808"]
    assert start_position(BY_NAME["transactions"], "2026-01-01T00:00:00.000000Z") == ["2026-01-01T00:00:00.000000Z",
                                                                                       ""]


def test_landing_merges_mutable_tables_and_inserts_only_new_transactions() -> None:
    users = apply_sql(BY_NAME["users"], "`d.users`", "`d.s`")
    installments = apply_sql(BY_NAME["installments"], "`d.installments`", "`d.s`")
    transactions = apply_sql(BY_NAME["transactions"], "`d.transactions`", "`d.s`")

    assert users.startswith("MERGE `d.users`") and "WHEN MATCHED AND t.updated_at <= s.updated_at" in users
    assert "QUALIFY ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY _wm DESC) = 1" in users
    assert "WHEN MATCHED THEN UPDATE" in installments  # its cursor is not mirrored: no version to compare
    assert "ON t.plan_id = s.plan_id AND t.seq = s.seq" in installments
    assert transactions.startswith("INSERT INTO `d.transactions`")
    assert "WHERE NOT EXISTS" in transactions and "t.created_at >= @lo" in transactions


def test_a_feature_without_bigquery_sql_is_refused_by_name() -> None:
    broken = FeatureSet("broken", 1, (replace(CREDIT_DECISION_V1.features[0], bq_sql=""),))

    with pytest.raises(OfflineQueryFailed) as caught:
        features_sql(broken, "ds", "SELECT 1", [])

    assert caught.value.code == "feature_without_bq_sql" and "'age'" in caught.value.message


def test_generated_sql_names_every_feature_typed_and_defaulted() -> None:
    for fs in CATALOG.values():
        sql = features_sql(fs, "ds", "SELECT 'r' AS req_id, 'u' AS user_id, CURRENT_TIMESTAMP() AS as_of", ["user_id"])
        for f in fs.features:
            assert re.search(rf"AS {BQ_TYPES[f.dtype]}\) AS {f.name}\b", sql), f.name
        assert "{" not in sql and "`ds.transactions`" in sql


def test_literals_quote_what_they_inline_and_identifiers_refuse_the_rest() -> None:
    from datetime import UTC, date, datetime

    assert literal("it's \\ done\n") == "'it\\'s \\\\ done\\n'"
    assert literal(None) == "NULL" and literal(True) == "TRUE" and literal(3) == "3"
    assert literal(0.5) == "CAST(0.5 AS FLOAT64)"
    assert literal(date(2026, 1, 2)) == "DATE '2026-01-02'"
    assert literal(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "TIMESTAMP '2026-01-02 03:04:05.000006+00:00'"
    with pytest.raises(ValueError):
        literal(datetime(2026, 1, 2))
    assert identifier("feature_snapshots") == "feature_snapshots"
    for bad in ("a;b", "a b", "1abc", "a`", ""):
        with pytest.raises(OfflineQueryFailed):
            identifier(bad)
    assert (sql_root() / "bigquery" / "queries" / "user_state_asof.sql").is_file()
