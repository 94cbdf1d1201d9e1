"""The incremental export PostgreSQL -> BigQuery (services/etl.py) against real PostgreSQL and the emulator.

Each test seeds a small database of its own and exports it into a dataset of its own; the mirror is
compared with the source row by row, so a lost, duplicated or stale row fails the comparison.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pg8000.native
import pytest

from conftest import Databases, admin_connection, base_env, function_client
from feature_store.cli.generate import seed
from feature_store.errors import OfflineQueryFailed
from feature_store.services.etl import Etl, parse_watermark
from feature_store.settings import Settings
from feature_store.stores.bigquery_mirror import MIRRORED
from feature_store.stores.bigquery_offline import OfflineStore
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.postgres_export import ExportSource

pytest_plugins = ["bq_fixture"]
pytestmark = pytest.mark.bigquery

USERS = 150
AS_OF = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture
def source(databases: Databases) -> str:
    name = databases.create()
    pool = PostgresPool(Settings.from_env(base_env(name)).postgres, bulk=True)
    try:
        with pool.connection() as conn:
            seed(conn, USERS, 7, AS_OF, workers=1, reset=False)
    finally:
        pool.close()
    return name


@pytest.fixture
def offline(bigquery_emulator: Any) -> Iterator[OfflineStore]:
    client = bigquery_emulator.client()
    store = OfflineStore(client, f"etl_{secrets.token_hex(4)}", api_timeout_s=30, job_timeout_s=300)
    store.ensure_schema()
    yield store
    client.delete_dataset(store.dataset, delete_contents=True, not_found_ok=True)


@pytest.fixture
def make_etl(source: str, offline: OfflineStore) -> Iterator[Callable[..., Etl]]:
    pools: list[PostgresPool] = []

    def make(**overrides: Any) -> Etl:
        settings = Settings.from_env(base_env(source))
        pools.append(PostgresPool(settings.postgres))
        etl_settings = settings.etl.model_copy(update={"chunk_rows": 700, "batch_rows": 4000, **overrides})
        return Etl(ExportSource(pools[-1]), offline, etl_settings)

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def db(source: str) -> Iterator[pg8000.native.Connection]:
    conn = admin_connection(source)
    conn.run("SET TIME ZONE 'UTC'")
    yield conn
    conn.close()


def pg_rows(conn: pg8000.native.Connection, table: str) -> list[tuple[Any, ...]]:
    columns = [c for c, _ in next(t for t in MIRRORED if t.name == table).columns]
    return [tuple(r) for r in conn.run(f"SELECT {', '.join(columns)} FROM {table}")]


def bq_rows(offline: OfflineStore, table: str) -> list[tuple[Any, ...]]:
    columns = [c for c, _ in next(t for t in MIRRORED if t.name == table).columns]
    return [tuple(r[c] for c in columns) for r in offline.run(f"SELECT {', '.join(columns)} FROM "
                                                              f"{offline.table(table)}")]


def assert_mirrored(conn: pg8000.native.Connection, offline: OfflineStore) -> None:
    for table in MIRRORED:
        source, mirror = pg_rows(conn, table.name), bq_rows(offline, table.name)
        assert len(mirror) == len(source), f"{table.name}: {len(mirror)} rows in BigQuery, {len(source)} in PostgreSQL"
        # CHAR(2) comes back as text of two characters in both; NUMERIC compares by value.
        assert set(mirror) == set(source), f"{table.name}: the mirror differs from the source"


def test_export_mirrors_every_table_page_by_page_and_a_rerun_adds_nothing(
        make_etl: Callable[..., Etl], offline: OfflineStore, db: pg8000.native.Connection) -> None:
    etl = make_etl(step_budget_s=0.001)  # every call stops after its first batch: the workflow's loop
    calls, answer = 0, {"done": False}
    while not answer["done"]:
        answer = etl.export("run-1")
        calls += 1
        assert calls < 40, "the export never finished"

    assert calls > 3
    assert_mirrored(db, offline)
    marks = offline.watermarks()
    for table in MIRRORED:
        newest = db.run(f"SELECT max({table.cursor}) FROM {table.name}")[0][0]
        assert parse_watermark(marks[table.name]) == newest, table.name
    record = offline.run_record("run-1")
    assert record is not None and record["steps"]["export"]["calls"] == calls
    assert record["steps"]["export"]["materialize"] == {"mode": "full"}

    again = make_etl().export("run-2")

    assert again["done"] and again["rows"] > 0  # the overlap window is read again...
    assert_mirrored(db, offline)  # ...and merged without a duplicate
    assert offline.watermarks() == marks


def test_changes_and_late_commits_within_the_overlap_arrive_on_the_next_run(
        make_etl: Callable[..., Etl], offline: OfflineStore, db: pg8000.native.Connection) -> None:
    etl = make_etl(overlap_s=600)
    assert etl.export("run-1")["done"]
    mark = parse_watermark(offline.watermarks()["transactions"])
    db.run("INSERT INTO transactions VALUES ('t-new', 'u000000001', 12.34, 'USD', 'm00001', 'books', 'completed', "
           "now())")
    # Committed now, stamped before the watermark: a long transaction that committed late.
    db.run("INSERT INTO transactions VALUES ('t-late', 'u000000002', 5.00, 'USD', 'm00002', 'toys', 'pending', :t)",
           t=mark - timedelta(seconds=120))
    db.run("INSERT INTO transactions VALUES ('t-too-late', 'u000000003', 7.00, 'USD', 'm00003', 'toys', 'pending', :t)",
           t=mark - timedelta(seconds=3600))
    db.run("UPDATE users SET verification_status = 'rejected' WHERE user_id = 'u000000004'")
    db.run("UPDATE installments SET paid_at = now() WHERE (plan_id, seq) IN "
           "(SELECT plan_id, seq FROM installments WHERE paid_at IS NULL LIMIT 3)")
    db.run("UPDATE installment_plans SET status = 'completed' WHERE plan_id IN "
           "(SELECT plan_id FROM installment_plans WHERE status = 'active' LIMIT 2)")
    db.run("UPDATE risk_scores SET risk_score = 0.5, calculated_at = now() WHERE user_id = 'u000000005'")

    answer = etl.export("run-2")

    assert answer["done"]
    mirrored = {r[0] for r in bq_rows(offline, "transactions")}
    assert {"t-new", "t-late"} <= mirrored
    # Older than the overlap window: the documented limit of a timestamp watermark.
    assert "t-too-late" not in mirrored
    db.run("DELETE FROM transactions WHERE transaction_id = 't-too-late'")
    assert_mirrored(db, offline)
    assert answer["materialize"] == {"mode": "full"}  # no run has succeeded yet


def test_a_failed_step_leaves_its_watermark_and_a_rerun_completes_without_duplicates(
        make_etl: Callable[..., Etl], offline: OfflineStore, db: pg8000.native.Connection) -> None:
    etl = make_etl()
    assert etl.export("run-1")["done"]
    before = offline.watermarks()
    db.run("INSERT INTO transactions VALUES ('t-after', 'u000000001', 1.00, 'USD', 'm00001', 'books', 'completed', "
           "now())")
    db.run("UPDATE users SET age = 99 WHERE user_id = 'u000000006'")  # the trigger moves updated_at
    # The mirror refuses the transactions batch (its MERGE names a column the table no longer has).
    offline.run(f"ALTER TABLE {offline.table('transactions')} RENAME COLUMN merchant TO merchant_hidden")
    try:
        with pytest.raises(OfflineQueryFailed):
            make_etl().export("run-2")
        failed = offline.watermarks()
    finally:
        offline.run(f"ALTER TABLE {offline.table('transactions')} RENAME COLUMN merchant_hidden TO merchant")

    assert failed["transactions"] == before["transactions"]
    assert failed["users"] > before["users"]  # the tables before it completed and keep their progress
    assert "t-after" not in {r[0] for r in bq_rows(offline, "transactions")}

    assert make_etl().export("run-2")["done"]

    assert_mirrored(db, offline)
    assert offline.watermarks()["transactions"] > before["transactions"]


def test_the_next_run_materializes_what_changed_since_the_last_good_run_began(
        make_etl: Callable[..., Etl], offline: OfflineStore) -> None:
    etl = make_etl(overlap_s=300)
    first = etl.export("run-1")
    etl.record("run-1", "succeeded", {"snapshot": {"rows": 1}})
    upper = offline.run_record("run-1")["steps"]["export"]["upper"]  # type: ignore[index]

    second = etl.export("run-2")

    assert first["materialize"] == {"mode": "full"}
    since = parse_watermark(second["materialize"]["since"])
    assert second["materialize"]["mode"] == "incremental"
    assert since == parse_watermark(upper) - timedelta(seconds=300)
    assert etl.export("run-2")["materialize"] == second["materialize"]  # fixed for the whole run
    record = offline.run_record("run-1")
    assert record is not None and record["status"] == "succeeded" and record["finished_at"] is not None
    assert record["rows_loaded"] == first["rows"] and record["steps"]["snapshot"] == {"rows": 1}


def test_run_etl_answers_bad_input_with_a_4xx_and_exports_over_http(
        source: str, offline: OfflineStore, bigquery_emulator: Any, redis_prefix: str,
        use_env: Callable[[dict[str, str]], None]) -> None:
    use_env({**base_env(source, redis_prefix), "FS_BIGQUERY_API_ENDPOINT": bigquery_emulator.api_endpoint,
             "FS_BIGQUERY_PROJECT": bigquery_emulator.project, "FS_BIGQUERY_DATASET": offline.dataset})
    client = function_client("run_etl")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()

    cases = [
        ({"step": "load"}, 400, "invalid_body"),
        ({"step": "record", "run_id": "r1"}, 400, "invalid_body"),
        ({"step": "snapshot"}, 400, "invalid_body"),
        ({"step": "export", "run_id": "no spaces allowed"}, 400, "invalid_body"),
        ({"step": "export", "extra": 1}, 400, "invalid_body"),
        ({"step": "snapshot", "run_id": "r1", "date": tomorrow}, 400, "invalid_parameter"),
    ]
    for body, status, code in cases:
        answer = client.post("/", json=body)
        assert answer.status_code == status, body
        assert answer.get_json()["error"]["code"] == code, body
    assert client.get("/").status_code == 405
    assert client.post("/", data="{not json", content_type="application/json").status_code == 400

    exported = client.post("/", json={"step": "export", "run_id": "http-run"})

    assert exported.status_code == 200
    assert exported.get_json()["done"] is True
    assert exported.get_json()["tables"]["users"]["rows"] == USERS


def test_an_unreachable_bigquery_is_a_503_the_workflow_retries_and_bad_sql_is_permanent(
        source: str, offline: OfflineStore, bigquery_emulator: Any, redis_prefix: str,
        use_env: Callable[[dict[str, str]], None]) -> None:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from conftest import closed_port
    from feature_store.errors import DependencyUnavailable

    endpoint = f"http://127.0.0.1:{closed_port()}"
    down = OfflineStore(bigquery.Client(project="p", credentials=AnonymousCredentials(),
                                        client_options=ClientOptions(api_endpoint=endpoint)), "d", api_timeout_s=2)
    with pytest.raises(DependencyUnavailable):
        down.run("SELECT 1")
    with pytest.raises(OfflineQueryFailed):
        offline.run("SELECT no_such_column FROM " + offline.table("users"))

    use_env({**base_env(source, redis_prefix), "FS_BIGQUERY_API_ENDPOINT": endpoint, "FS_BIGQUERY_PROJECT": "p",
             "FS_BIGQUERY_DATASET": "d", "FS_BIGQUERY_TIMEOUT_S": "2"})
    answer = function_client("run_etl").post("/", json={"step": "export"})

    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "dependency_unavailable" and answer.headers["Retry-After"]
