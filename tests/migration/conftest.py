"""Fixtures of the migration suite: a source database and a target database (both real PostgreSQL; the
target holds the CockroachDB form of the schema as far as PostgreSQL accepts it), and the migration's
services over them with this test's Redis prefix. Databases are named fsm_* and dropped at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import Databases, admin_connection, base_env

SOURCE_USERS = 400


class MigrationDatabases(Databases):
    """The migration suite's databases: fsm_* (the suite's own namespace on the shared server)."""

    prefix = "fsm_"


@pytest.fixture(autouse=True)
def no_writer_outlives_its_test() -> Iterator[None]:
    """A test that fails while its application Writer runs would leave it committing for the rest of the suite."""
    from .harness import Writer

    yield
    for writer in list(Writer.running):
        with contextlib.suppress(BaseException):  # its error belongs to the test that already failed
            writer.stop()


@pytest.fixture(scope="session")
def migration_dbs() -> Iterator[MigrationDatabases]:
    dbs = MigrationDatabases()
    yield dbs
    dbs.drop_all()


def seed_source(database: str, users: int, seed: int = 42) -> dict[str, int]:
    from feature_store.cli.generate import seed as load
    from feature_store.settings import Settings
    from feature_store.stores.postgres import PostgresPool

    pool = PostgresPool(Settings.from_env(base_env(database)).postgres, bulk=True)
    try:
        with pool.connection() as conn:
            return load(conn, users, seed, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1), workers=1,
                        reset=False)
    finally:
        pool.close()


def migration_env(source: str, target: str, prefix: str, **extra: str) -> dict[str, str]:
    """Settings of a source/target pair: the target is PostgreSQL, small chunks, quick rechecks."""
    target_env = base_env(target)
    return {**base_env(source, prefix), "FS_MIGRATION_TARGET_HOST": target_env["FS_POSTGRES_HOST"],
            "FS_MIGRATION_TARGET_PORT": target_env["FS_POSTGRES_PORT"], "FS_MIGRATION_TARGET_DATABASE": target,
            "FS_MIGRATION_TARGET_USER": target_env["FS_POSTGRES_USER"], "FS_MIGRATION_TARGET_DIALECT": "postgresql",
            "FS_MIGRATION_CHUNK_ROWS": "1000", "FS_MIGRATION_RECHECK_DELAY_S": "0.2",
            "FS_MIGRATION_ROUTING_CACHE_S": "0.1", "FS_MIGRATION_CUTOVER_QUIET_S": "0.5",
            # Redis's 10 ms read deadline is its own subject (tests/integration/test_outages.py); here a loaded
            # machine's starvation made a routing pointer "unreadable" and a read went to the wrong database.
            "FS_REDIS_SOCKET_TIMEOUT_MS": "1000", **extra}


@pytest.fixture(scope="module")
def source_db(migration_dbs: MigrationDatabases) -> str:
    """A seeded source shared by a module's tests (each test's target is new; tests may add rows to it)."""
    source = migration_dbs.create()
    seed_source(source, SOURCE_USERS)
    return source


@pytest.fixture
def pair(migration_dbs: MigrationDatabases, source_db: str, redis_prefix: str) -> dict[str, Any]:
    """The module's seeded source, an empty target, and the settings naming both (this test's Redis prefix)."""
    target = migration_dbs.create(migrated=False)
    return {"source": source_db, "target": target, "prefix": redis_prefix,
            "env": migration_env(source_db, target, redis_prefix)}


@pytest.fixture
def migration(pair: dict[str, Any]) -> Iterator[Any]:
    """MigrationServices over the pair (its own Services container: the test process's wiring is untouched)."""
    from feature_store.migration_wiring import migration_for
    from feature_store.settings import Settings
    from feature_store.wiring import Services

    base = Services(Settings.from_env(pair["env"]))
    yield migration_for(base)
    base.close()


def rows(database: str, sql: str, **params: Any) -> list[list[Any]]:
    conn = admin_connection(database)
    try:
        return conn.run(sql, **params)
    finally:
        conn.close()


def table_rows(database: str, table: str) -> set[tuple[Any, ...]]:
    """Every row of a migrated table, as comparable tuples (columns by name order)."""
    conn = admin_connection(database)
    try:
        cols = [r[0] for r in conn.run("SELECT column_name FROM information_schema.columns WHERE table_name = :t "
                                       "AND table_schema = 'public' ORDER BY column_name", t=table)]
        return {tuple(r) for r in conn.run(f"SELECT {', '.join(cols)} FROM {table}")}
    finally:
        conn.close()
