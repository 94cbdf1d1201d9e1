"""The CockroachDB form of sql/postgres (services/migration/schema.py) and its compatibility report.

No CockroachDB server can run here: these check the derived DDL as text, rule by rule, and that the
report lists every statement the rules touched. tests/migration/test_migration_prepare.py applies the
PostgreSQL rendering to a real database.
"""

from __future__ import annotations

import re

import pytest

from feature_store.cli.migrate import main as fs_migrate
from feature_store.services.migration.schema import derive, report, split_statements, target_schema
from feature_store.services.migrations import Migration, load_migrations
from feature_store.stores.sql_files import sql_root

SOURCE = load_migrations(sql_root() / "postgres")


def cockroach() -> str:
    return "\n".join(m.sql for m in derive(SOURCE, "cockroachdb").migrations)


def statements(sql: str) -> list[str]:
    return [re.sub(r"\s+", " ", re.sub(r"--[^\n]*", "", s)).strip() for s in split_statements(sql)]


def test_no_declarative_partitions_and_transactions_keyed_by_user() -> None:
    sql = cockroach()

    assert "PARTITION" not in sql.upper()
    create = next(s for s in statements(sql) if s.startswith("CREATE TABLE transactions"))
    assert "PRIMARY KEY (user_id, created_at, transaction_id)" in create
    assert "CREATE UNIQUE INDEX transactions_source_key ON transactions (transaction_id, created_at)" in statements(sql)


def test_covering_indexes_say_storing_and_growing_timestamps_are_hash_sharded() -> None:
    derived = statements(cockroach())

    assert not any("INCLUDE" in s for s in derived)
    assert "CREATE INDEX idx_plans_user ON installment_plans (user_id) STORING (status)" in derived
    assert "CREATE INDEX idx_installments_user ON installments (user_id) STORING (due_date, amount, paid_at)" in derived
    for name, cols in (("idx_users_updated_at", "updated_at"), ("idx_transactions_created_at", "created_at"),
                       ("idx_risk_scores_calculated_user", "calculated_at, user_id")):
        hashed = [s for s in derived if s.startswith(f"CREATE INDEX {name} ON")]
        assert len(hashed) == 1 and hashed[0].endswith(f"({cols}) USING HASH"), name
    # an index led by a text column stays a plain index
    assert not any("USING HASH" in s for s in derived if s.startswith("CREATE INDEX idx_plans_user "))


def test_no_replica_identity_and_the_index_the_new_key_covers_goes() -> None:
    sql = cockroach()

    assert "REPLICA IDENTITY" not in sql
    assert "idx_transactions_user_created" not in sql


def test_everything_else_is_kept_as_it_is() -> None:
    derived = statements(cockroach())

    for keep in ("ALTER TABLE installments ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now()",
                 "CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION "
                 "touch_updated_at()"):
        assert keep in derived
    assert sum("CREATE TABLE" in s for s in derived) == 7  # the five source tables, api_clients, api_keys
    assert [m.filename for m in derive(SOURCE).migrations] == [m.filename for m in SOURCE]


def test_the_report_lists_every_statement_the_rules_changed() -> None:
    schema = derive(SOURCE)
    text = report(schema)

    touched = [s for m in SOURCE for s in statements(m.sql)
               if "INCLUDE" in s or "REPLICA IDENTITY" in s or "PARTITION BY" in s
               or re.match(r"CREATE INDEX \w+ ON \w+ \((updated_at|created_at|calculated_at)", s)]
    for statement in touched:
        subject = re.search(r"(?:INDEX|TABLE) (\w+)", statement)
        assert subject is not None
        assert any(d.subject == subject.group(1) for d in schema.differences), statement
    assert f"{len(schema.differences)} differences" in text
    assert "PRIMARY KEY (transaction_id, created_at)" in text and "v24.3" in text
    assert len(schema.differences) == 17


def test_the_postgresql_rendering_keeps_the_form_in_what_postgresql_accepts() -> None:
    sql = "\n".join(m.sql for m in target_schema("postgresql").migrations)

    assert "STORING" not in sql and "USING HASH" not in sql and "PARTITION" not in sql.upper()
    assert "INCLUDE (status)" in sql and "PRIMARY KEY (user_id, created_at, transaction_id)" in sql
    assert "REPLICA IDENTITY" not in sql


def test_statements_split_on_semicolons_outside_quotes_comments_and_bodies() -> None:
    sql = ("-- a; comment\nCREATE TABLE a (x TEXT DEFAULT ';');\n"
           "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN NEW;\nEND\n$$;\n"
           "SELECT 1")

    parts = split_statements(sql)

    assert len(parts) == 3
    assert "DEFAULT ';'" in parts[0] and "RETURN NEW;" in parts[1]


def test_a_table_to_redistribute_without_a_table_level_key_is_refused() -> None:
    broken = [Migration(1, "x", "CREATE TABLE transactions (transaction_id TEXT PRIMARY KEY, user_id TEXT)")]

    with pytest.raises(ValueError, match="no table-level PRIMARY KEY"):
        derive(broken)


def test_fs_migrate_report_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    code = fs_migrate(["report"])

    out = capsys.readouterr().out
    assert code == 0
    assert out == report(derive(SOURCE))
