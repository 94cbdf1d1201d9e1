"""Offline landing of CDC against the BigQuery emulator: changelog rows, dedup on redelivery, outages."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from test_ingest import SourceHistory, fresh

from conftest import Databases, admin_connection, base_env, closed_port
from feature_store.domain.changes import parse_change
from feature_store.domain.state import UserState
from feature_store.errors import DependencyUnavailable
from feature_store.stores.bigquery_changelog import BigQueryChangelog
from feature_store.stores.dialect import POSTGRESQL

pytest_plugins = ["bq_fixture"]
pytestmark = pytest.mark.bigquery


@pytest.fixture(scope="module")
def dataset(bigquery_emulator: Any) -> Iterator[str]:
    name = f"cdc_{secrets.token_hex(4)}"
    client = bigquery_emulator.client()
    BigQueryChangelog(client, name, POSTGRESQL, 30).create_tables()
    yield name
    client.delete_dataset(name, delete_contents=True, not_found_ok=True)


@pytest.fixture(scope="module")
def cdc_database() -> Iterator[str]:
    dbs = Databases()
    try:
        yield dbs.create()
    finally:
        dbs.drop_all()


@pytest.fixture
def history(cdc_database: str) -> Iterator[SourceHistory]:
    conn = admin_connection(cdc_database)
    yield SourceHistory(conn)
    conn.close()


@pytest.fixture
def bq_env(cdc_database: str, redis_prefix: str, bigquery_emulator: Any, dataset: str) -> dict[str, str]:
    return {**base_env(cdc_database, redis_prefix), "FS_BIGQUERY_API_ENDPOINT": bigquery_emulator.api_endpoint,
            "FS_BIGQUERY_PROJECT": bigquery_emulator.project, "FS_BIGQUERY_DATASET": dataset,
            "FS_BIGQUERY_TIMEOUT_S": "10"}


def rows(client: Any, sql: str) -> list[dict[str, Any]]:
    return [dict(r.items()) for r in client.query(sql).result()]


def test_every_change_lands_once_per_change_whatever_the_redeliveries(
        history: SourceHistory, bq_env: dict[str, str], use_env: Callable[[dict[str, str]], None],
        bigquery_emulator: Any, dataset: str) -> None:
    from feature_store.wiring import services

    use_env(bq_env)
    uid, tid = fresh("u"), fresh("t")
    events = history.add_user(uid, 45) + history.add_order(tid, uid, Decimal("12.34"), "completed", 60)
    events += history.delete_order(tid)
    ingestor = services().ingestor
    for i, data in enumerate(events + events[1:2]):  # the insert of the order is delivered twice
        ingestor.handle(data, f"msg-{i}")
    client = bigquery_emulator.client()
    landed = rows(client, f"SELECT change_op, lsn, row_key, user_id, amount, status, message_id "
                          f"FROM `{dataset}.changelog_transactions_dedup` WHERE user_id = '{uid}' ORDER BY lsn")
    insert, delete = (parse_change(e) for e in events[1:])
    assert insert is not None and delete is not None
    assert [(r["change_op"], int(r["lsn"], 16), r["row_key"]) for r in landed] == [
        ("insert", insert.lsn, insert.row_key), ("delete", delete.lsn, delete.row_key)]
    assert landed[0]["amount"] == Decimal("12.34") and landed[1]["status"] == "completed"
    raw = rows(client, f"SELECT count(*) AS n FROM `{dataset}.changelog_transactions` WHERE user_id = '{uid}'")
    assert raw[0]["n"] in (2, 3)  # 3 where insertId dedup is not implemented (the emulator)
    users = rows(client, f"SELECT change_op, age, signup_date FROM `{dataset}.changelog_users_dedup` "
                         f"WHERE user_id = '{uid}'")
    assert [(u["change_op"], u["age"], u["signup_date"].isoformat()) for u in users] == [("insert", 45, "2024-01-01")]


def test_bigquery_outage_raises_after_refreshing_redis_and_the_retry_lands_once(
        history: SourceHistory, bq_env: dict[str, str], use_env: Callable[[dict[str, str]], None],
        bigquery_emulator: Any, dataset: str) -> None:
    from feature_store.wiring import services

    uid = fresh("u")
    events = history.add_user(uid, 52)
    use_env({**bq_env, "FS_BIGQUERY_API_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "FS_BIGQUERY_TIMEOUT_S": "1"})
    with pytest.raises(DependencyUnavailable) as raised:
        services().ingestor.handle(events[0], "m-down")
    assert raised.value.dependency == "bigquery"
    # Redis is written first (freshness does not wait on the offline store); it is already correct.
    assert isinstance(services().online.get_many([uid])[0], UserState)
    use_env(bq_env)  # BigQuery is back: Pub/Sub redelivers
    services().ingestor.handle(events[0], "m-down")
    landed = rows(bigquery_emulator.client(),
                  f"SELECT message_id FROM `{dataset}.changelog_users_dedup` WHERE user_id = '{uid}'")
    assert landed == [{"message_id": "m-down"}]
