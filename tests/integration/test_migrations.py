"""The migration runner against a real, empty PostgreSQL database."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Databases, admin_connection, base_env
from feature_store.errors import MigrationError
from feature_store.services.migrations import load_migrations, migrate
from feature_store.settings import Settings
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.sql_files import sql_root


def run_cli(database: str, *args: str, sql_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**base_env(database), "PATH": "/usr/bin:/bin"}
    extra = ["--sql-dir", str(sql_dir)] if sql_dir is not None else []
    return subprocess.run([sys.executable, "-m", "feature_store.cli.migrate", *args, *extra], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def tables(database: str) -> set[str]:
    conn = admin_connection(database)
    try:
        return {r[0] for r in conn.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        conn.close()


def test_from_empty_then_again_is_a_no_op(databases: Databases) -> None:
    name = databases.create(migrated=False)

    first = run_cli(name)
    second = run_cli(name)

    files = len(load_migrations(sql_root() / "postgres"))
    assert first.returncode == 0, first.stderr
    assert f"{files} applied, 0 already applied" in first.stdout
    assert {"users", "transactions", "risk_scores", "installment_plans", "installments",
            "schema_migrations"} <= tables(name)
    assert second.returncode == 0, second.stderr
    assert f"0 applied, {files} already applied, 0 partitions created" in second.stdout


def test_partitions_cover_past_and_future_months_with_full_replica_identity(databases: Databases) -> None:
    name = databases.create(migrated=False)
    assert run_cli(name, "--months-back", "2", "--months-ahead", "3").returncode == 0

    conn = admin_connection(name)
    try:
        rows = conn.run("SELECT c.relname, c.relreplident FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'transactions' ORDER BY 1")
        current = conn.run("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')")[0][0]
    finally:
        conn.close()
    assert len(rows) == 6  # two back, this month, three ahead
    assert f"transactions_{current}" in [r[0] for r in rows]
    assert all(r[1] == "f" for r in rows)


def test_changed_applied_migration_is_refused_and_nothing_changes(databases: Databases, tmp_path: Path) -> None:
    name = databases.create(migrated=False)
    sql_dir = tmp_path / "postgres"
    shutil.copytree(sql_root() / "postgres", sql_dir)
    assert run_cli(name, sql_dir=sql_dir).returncode == 0
    edited = sql_dir / "0002_cdc_identity.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    (sql_dir / "0003_new_table.sql").write_text("CREATE TABLE should_not_exist (id int);")

    result = run_cli(name, sql_dir=sql_dir)

    assert result.returncode == 3
    assert "0002_cdc_identity.sql changed after it was applied" in result.stderr
    assert "Traceback" not in result.stderr
    assert "should_not_exist" not in tables(name)


def test_runner_refuses_a_missing_applied_file(databases: Databases) -> None:
    name = databases.create()
    settings = Settings.from_env(base_env(name))
    pool = PostgresPool(settings.postgres)
    try:
        with pool.connection() as conn, pytest.raises(MigrationError) as caught:
            migrate(conn, load_migrations(sql_root() / "postgres")[:1])
    finally:
        pool.close()
    assert caught.value.code == "migration_missing"


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_x.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError) as caught:
        load_migrations(tmp_path)
    assert caught.value.code == "migration_bad_name"


def test_unreachable_database_exits_4_with_a_sentence() -> None:
    from conftest import closed_port

    env = {**base_env("postgres"), "FS_POSTGRES_PORT": str(closed_port()), "PATH": "/usr/bin:/bin",
           "FS_POSTGRES_CONNECT_TIMEOUT_S": "1"}
    result = subprocess.run([sys.executable, "-m", "feature_store.cli.migrate"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 4
    assert "postgres is unavailable" in result.stderr
    assert "Traceback" not in result.stderr
