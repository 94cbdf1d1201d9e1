"""A full refresh from BigQuery's mirrors (the emulator): the same features as PostgreSQL, and a warm-up only.

A database of 120 users is exported by run_etl's own export into a dataset of this module, then
materialized from BigQuery; every value must finish into the features PostgreSQL's state gives,
and no vector computed from PostgreSQL may be replaced (watermark 0 never wins a compare-and-set).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from conftest import Databases, base_env
from feature_store.cli.generate import seed
from feature_store.domain.catalog import CREDIT_DECISION_V2, Instant
from feature_store.domain.synthetic import user_id
from feature_store.errors import Conflict
from feature_store.services.etl import Etl
from feature_store.settings import Settings
from feature_store.stores.bigquery_bulk import BigQueryBulkSource
from feature_store.stores.bigquery_offline import OfflineStore
from feature_store.stores.dialect import POSTGRESQL
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.postgres_export import ExportSource
from feature_store.stores.redis_online import KeyLayout, decode
from feature_store.stores.source import SourceStore
from feature_store.wiring import services

pytest_plugins = ["bq_fixture"]
pytestmark = pytest.mark.bigquery

USERS = 120


@pytest.fixture(scope="module")
def exported(databases: Databases, bigquery_emulator: Any) -> Iterator[dict[str, Any]]:
    name = databases.create()
    settings = Settings.from_env(base_env(name))
    pool = PostgresPool(settings.postgres)
    client = bigquery_emulator.client()
    offline = OfflineStore(client, f"rfsh_{secrets.token_hex(4)}", api_timeout_s=30, job_timeout_s=600)
    try:
        with pool.connection() as conn:
            seed(conn, USERS, 11, datetime.now(UTC).replace(microsecond=0), workers=1, reset=False)
        etl = Etl(ExportSource(pool), offline, settings.etl)
        while not etl.export("refresh-bq")["done"]:
            pass
        states = SourceStore(pool, POSTGRESQL).states_for([user_id(n) for n in range(USERS)])
        yield {"database": name, "dataset": offline.dataset, "emulator": bigquery_emulator, "states": states,
               "offline": offline}
    finally:
        pool.close()
        client.delete_dataset(offline.dataset, delete_contents=True, not_found_ok=True)


@pytest.fixture
def refresher_env(exported: dict[str, Any], redis_prefix: str, use_env: Callable[[dict[str, str]], None]) -> None:
    emulator = exported["emulator"]
    use_env({**base_env(exported["database"], redis_prefix), "FS_REFRESH_CHUNK_USERS": "50",
             "FS_BIGQUERY_PROJECT": emulator.project, "FS_BIGQUERY_DATASET": exported["dataset"],
             "FS_BIGQUERY_API_ENDPOINT": emulator.api_endpoint})


def test_a_warm_up_from_bigquery_gives_postgres_features_and_never_replaces_postgres_vectors(
        exported: dict[str, Any], refresher_env: None, redis_client: redis.Redis, redis_prefix: str) -> None:
    refresher = services().refresher
    from_postgres = [user_id(n) for n in range(0, USERS, 10)]
    refresher.users("credit_decision", from_postgres, version=2)

    out = refresher.full("credit_decision", version=2, source="bigquery")

    assert out["done"] is True and out["progress"]["done"] == USERS
    assert out["written"] == USERS - len(from_postgres)  # watermark 0 lands only where nothing is cached
    layout = KeyLayout(redis_prefix)
    ids = [user_id(n) for n in range(USERS)]
    entries = {u: decode(u, raw) for u, raw in zip(ids, redis_client.mget([layout.user(u) for u in ids]),
                                                   strict=True) if raw is not None}
    assert sorted(entries) == ids
    assert {u for u, e in entries.items() if e.watermark > 0} == set(from_postgres)
    for uid in ids:
        pg, cached = exported["states"][uid], entries[uid]
        at = Instant(max(pg.computed_at, cached.computed_at) + 1)
        assert CREDIT_DECISION_V2.evaluate(cached, at) == CREDIT_DECISION_V2.evaluate(pg, at), uid
    record = refresher.state.materialized()
    assert record is not None and record["source"] == "bigquery"


@pytest.mark.parametrize("with_schema", [True, False], ids=["schema-without-exports", "no-dataset-at-all"])
def test_a_dataset_never_exported_is_refused(exported: dict[str, Any], with_schema: bool) -> None:
    empty = OfflineStore(exported["offline"].client, f"rfsh_{secrets.token_hex(4)}", api_timeout_s=30)
    try:
        if with_schema:
            empty.ensure_schema()
        with pytest.raises(Conflict) as refused:
            BigQueryBulkSource(empty).mirrored_to()
    finally:
        empty.client.delete_dataset(empty.dataset, delete_contents=True, not_found_ok=True)
    assert refused.value.code == "bigquery_not_exported" and refused.value.status == 409
