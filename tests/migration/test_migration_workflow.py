"""workflows/migration.yaml end to end: workflows-emulator -> run_migration, replicate_changes, ingest_changes and
read_features under functions-framework -> two real PostgreSQL databases and Redis, with the application writing
all along (``fs-generate live``'s code on the source, plain statements on the target after the cutover).

The change stream is the local one: emulators/cdc_relay.py on the source (one slot per subscription, as a topic
with two push subscriptions delivers to each), emulators/changefeed_relay.py on the target after the cutover.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conftest import AUTH_HEADERS, REDIS_URL, base_env, drop_prefix
from feature_store.domain.catalog import CATALOG, Instant
from feature_store.settings import Settings
from feature_store.stores.dialect import POSTGRESQL
from feature_store.stores.migration_chunks import checksum
from feature_store.stores.migration_tables import MIGRATED, load_spec
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.source import SourceStore

from .conftest import MigrationDatabases, migration_env, rows, seed_source, table_rows
from .harness import EMULATOR, Stack, Writer, succeeded, wait_until

pytestmark = [pytest.mark.workflows, pytest.mark.slow]

USERS = 200


def extra_env() -> dict[str, str]:
    return {"FS_CDC_CHANGELOG_ENABLED": "false", "FS_MIGRATION_CHUNK_ROWS": "500",
            "FS_MIGRATION_STEP_BUDGET_S": "2", "FS_MIGRATION_GUARD_P95_MS": "2000",
            "FS_MIGRATION_SHADOW_SAMPLE": "0.2", "FS_MIGRATION_GUARD_MIN_READS": "20"}


@pytest.fixture(scope="module")
def source(migration_dbs: MigrationDatabases) -> str:
    level = rows("postgres", "SELECT current_setting('wal_level')")[0][0]
    if level != "logical":
        pytest.fail(f"PostgreSQL runs with wal_level = {level}; the change relays need logical")
    if not EMULATOR.exists():
        pytest.fail("workflows-emulator is not installed: run `make install` (emulators/install.sh)")
    database = migration_dbs.create()
    seed_source(database, USERS)
    return database


@pytest.fixture(scope="module")
def stack(source: str, migration_dbs: MigrationDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    target = migration_dbs.create(migrated=False)
    prefix = "mg" + secrets.token_hex(4)
    running = Stack(migration_env(source, target, prefix, **extra_env()), tmp_path_factory.mktemp("migration"))
    running.source, running.target, running.prefix = source, target, prefix  # type: ignore[attr-defined]
    try:
        running.function("run_migration", FS_LOG_LEVEL="INFO")  # its access log names every refusal's code
        for name in ("replicate_changes", "ingest_changes", "read_features"):
            running.function(name)
        slot = secrets.token_hex(3)
        running.relay("ingest_relay", source, f"fsm_ingest_{slot}", ["ingest_changes"])
        running.relay("replicate_relay", source, f"fsm_repl_{slot}", ["replicate_changes"])
        yield running
    finally:
        running.close()
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)


class Reader:
    """A client of read_features reading random users all along; counts the answers by status."""

    def __init__(self, url: str) -> None:
        self.url, self.statuses = url, Counter[int]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                read = urllib.request.Request(f"{self.url}api/v1/features/user/u{n % USERS:09d}", headers=AUTH_HEADERS)
                with urllib.request.urlopen(read, timeout=30) as r:
                    self.statuses[r.status] += 1
            except urllib.error.HTTPError as exc:
                self.statuses[exc.code] += 1
            self._stop.wait(0.02)

    def stop(self) -> Counter[int]:
        self._stop.set()
        self._thread.join(30)
        return self.statuses


def state(stack: Stack) -> list[Any]:
    return rows(stack.target, "SELECT direction, truth, percent FROM fs_migration_state")[0]  # type: ignore[attr-defined]


def equal(stack: Stack) -> bool:
    return all(table_rows(stack.source, t) == table_rows(stack.target, t) for t in MIGRATED)  # type: ignore[attr-defined]


def applied(stack: Stack) -> int:
    found = rows(stack.target, "SELECT applied FROM fs_replication_progress WHERE direction = 'forward'")  # type: ignore[attr-defined]
    return int(found[0][0]) if found else 0


def test_the_whole_migration_under_live_writes_then_the_cutover_and_back(stack: Stack) -> None:
    source, target = stack.source, stack.target  # type: ignore[attr-defined]
    writer = Writer(source)

    copied = succeeded(stack.workflow(run_id="mig-1", percents=[], cutover="no", budget_s=1))

    assert copied["steps"]["backfill"]["done"] and copied["steps"]["verify"]["ok"]
    assert state(stack)[:2] == ["forward", "source"]

    # the replication function goes down while the application writes, comes back, and catches up
    stack.processes["replicate_changes"].kill()
    before = applied(stack)
    time.sleep(2)
    stack.function("replicate_changes")
    wait_until(lambda: applied(stack) > before, "the replication resuming", 60)

    reader = Reader(stack.url("read_features"))
    shifted = succeeded(stack.workflow(run_id="mig-2", percents=[1, 10, 50, 100], hold_s=1, cutover="no",
                                       budget_s=1))
    statuses = reader.stop()

    steps = shifted["steps"]
    assert steps["verify"]["ok"]
    assert [s["percent"] for s in steps["shift"]] == [1, 10, 50, 100] and all(s["done"] for s in steps["shift"])
    assert set(statuses) == {200} and sum(statuses.values()) > 50  # zero non-2xx reads through the shift
    route = redis.Redis.from_url(REDIS_URL).hgetall(f"{stack.prefix}:migration:route")  # type: ignore[attr-defined]
    assert route[b"percent"] == b"100" and route[b"tripped"] == b"0"
    commits = writer.stop()  # the application moves its writes to the target
    wait_until(lambda: equal(stack), "the replication catching up", 120)
    assert commits > 20

    cut = succeeded(stack.workflow(action="cutover", run_id="mig-1-cutover", budget_s=5))
    assert cut["steps"]["cutover"]["truth"] == "target" and state(stack)[:2] == ["reverse", "target"]

    # the application now writes to the target; the changefeed brings every change back to the source
    stack.relay("changefeed", target, f"fsm_cf_{secrets.token_hex(3)}", ["replicate_changes", "ingest_changes"],
                changefeed=True, cursor="cutover")
    on_target = Writer(target, source=False)
    time.sleep(3)
    written = on_target.stop()
    wait_until(lambda: equal(stack), "the reverse replication catching up", 120)
    assert written > 10
    assert rows(source, "SELECT count(*) FROM transactions WHERE transaction_id LIKE 'app-%'")[0][0] == written

    back = succeeded(stack.workflow(action="rollback", run_id="mig-1-back", to_percent=0, budget_s=5))
    assert back["steps"]["rollback"]["truth"] == "source" and state(stack)[:2] == ["forward", "source"]

    assert_same_checksums_and_vectors(source, target)
    runs = {r[0]: r[1] for r in rows(target, "SELECT run_id, status FROM fs_migration_runs")}
    assert runs == {"mig-1": "succeeded", "mig-2": "succeeded", "mig-1-cutover": "succeeded",
                    "mig-1-back": "succeeded"}


def assert_same_checksums_and_vectors(source: str, target: str) -> None:
    pools = [PostgresPool(Settings.from_env(base_env(db)).postgres) for db in (source, target)]
    try:
        for table in MIGRATED:
            with pools[0].connection() as conn:
                spec = load_spec(conn, table)
            sums = [checksum(pool, POSTGRESQL, spec, None, None) for pool in pools]
            assert sums[0] == sums[1], table
        users = [r[0] for r in rows(source, "SELECT user_id FROM users ORDER BY user_id")]
        states = [SourceStore(pool, POSTGRESQL).snapshot_states(users)[1] for pool in pools]
        at = Instant(time.time())
        for user in users:
            vectors = [[fs.evaluate(s[user], at) for fs in CATALOG.values()] for s in states]
            assert vectors[0] == vectors[1], user
    finally:
        for pool in pools:
            pool.close()


def test_a_rollback_from_50_percent_by_the_workflow(stack: Stack) -> None:
    succeeded(stack.workflow(run_id="mig-4", percents=[50], hold_s=0, cutover="no", budget_s=5))
    assert float(state(stack)[2]) == 50

    back = succeeded(stack.workflow(action="rollback", run_id="mig-4-back", to_percent=0))

    assert back["steps"]["rollback"]["percent"] == 0 and float(state(stack)[2]) == 0
    route = redis.Redis.from_url(REDIS_URL).hgetall(f"{stack.prefix}:migration:route")  # type: ignore[attr-defined]
    assert route[b"percent"] == b"0" and route[b"truth"] == b"source"


def test_a_refused_phase_fails_the_run_by_name(stack: Stack) -> None:
    failed = stack.workflow(action="cutover", run_id="mig-3")  # reads are not all on the target

    assert failed.returncode != 0
    assert "migration_failed" in failed.stderr and "failed at phase cutover" in failed.stderr
    assert "shift_incomplete" in failed.stderr
    record = rows(stack.target, "SELECT status, error FROM fs_migration_runs WHERE run_id = 'mig-3'")  # type: ignore[attr-defined]
    assert record[0][0] == "failed" and "shift_incomplete" in record[0][1]


def test_a_backfill_killed_midway_resumes_where_it_stopped(source: str, migration_dbs: MigrationDatabases,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    target = migration_dbs.create(migrated=False)
    prefix = "mk" + secrets.token_hex(4)
    killed = Stack(migration_env(source, target, prefix, **{**extra_env(), "FS_MIGRATION_CHUNK_ROWS": "100"}),
                   tmp_path_factory.mktemp("killed"))
    try:
        killed.function("run_migration")
        running = killed.workflow_in_background(run_id="kill-1", percents=[], cutover="no", budget_s=60)

        def some_chunks() -> bool:
            found = rows(target, "SELECT count(*) FROM pg_class WHERE relname = 'fs_migration_chunks'")[0][0]
            return bool(found) and rows(target, "SELECT count(*) FROM fs_migration_chunks")[0][0] >= 3

        wait_until(lambda: some_chunks() or running.poll() is not None, "three chunks landed", 120)
        assert running.poll() is None, f"the workflow ended before the kill: {running.communicate()[1][-3000:]}"
        killed.processes["run_migration"].kill()  # mid-backfill, no cleanup
        landed, tables_done = rows(target, "SELECT count(*), count(*) FILTER (WHERE last_key IS NULL) "
                                           "FROM fs_migration_chunks")[0]
        _, err = running.communicate(timeout=300)
        # Cloud Workflows would retry the reset connection and then fail the run by name; workflows-emulator
        # lets a reset escape its try/except, so this run just ends with the error.
        assert running.returncode != 0 and ("Connection aborted" in err or "failed at phase backfill" in err)
        assert landed >= 3 and tables_done < len(MIGRATED)  # killed in the middle of the backfill
        killed.function("run_migration")

        resumed = succeeded(killed.workflow(run_id="kill-1", percents=[], cutover="no", budget_s=60))

        assert resumed["steps"]["verify"]["ok"]
        chunks = rows(target, "SELECT tbl, count(*), count(DISTINCT chunk), sum(rows_copied) FROM fs_migration_chunks "
                              "GROUP BY tbl")
        assert all(n == distinct for _, n, distinct, _ in chunks)
        assert sum(n for _, n, _, _ in chunks) > landed
        for table, _, _, copied in chunks:
            assert int(copied) == rows(source, f"SELECT count(*) FROM {table}")[0][0], table
        assert json.loads(json.dumps(resumed))["run_id"] == "kill-1"
    finally:
        killed.close()
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)

