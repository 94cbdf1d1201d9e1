"""Decision receipts end to end: real functions, PostgreSQL, Redis and the BigQuery emulator.

Reads are audited into the emulator's audit_reads (the local sink, standing in for the production
topic's BigQuery subscription); the ETL exports the source; read_receipt then recomputes each served
vector from the offline store and must match its digest. A read made after the export is not yet
landed offline; a record altered afterwards (the instant it claims) recomputes to another digest.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from conftest import ROOT, Databases, base_env, function_client
from feature_store.cli.generate import seed
from feature_store.domain.audit import new_request_id
from feature_store.domain.synthetic import user_id
from feature_store.services.etl import Etl
from feature_store.settings import Settings
from feature_store.stores.bigquery_audit import AuditTrail
from feature_store.stores.bigquery_offline import OfflineStore
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.postgres_export import ExportSource

from .conftest import wait_for

pytest_plugins = ["bq_fixture"]
pytestmark = [pytest.mark.bigquery, pytest.mark.slow]

USERS = 30
OPENAPI = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
RECEIPT = Draft202012Validator({"$ref": "#/components/schemas/ReceiptAnswer", "components": OPENAPI["components"]})


@pytest.fixture(scope="module")
def stack(databases: Databases, bigquery_emulator: Any) -> Iterator[dict[str, Any]]:
    database = databases.create()
    settings = Settings.from_env(base_env(database))
    pool = PostgresPool(settings.postgres)
    offline = OfflineStore(bigquery_emulator.client(), f"rcpt_{secrets.token_hex(4)}", api_timeout_s=30,
                           job_timeout_s=600)
    try:
        with pool.connection() as conn:
            seed(conn, USERS, 19, datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5), workers=1,
                 reset=False)
        offline.ensure_schema()
        yield {"database": database, "offline": offline, "pool": pool, "settings": settings,
               "emulator": bigquery_emulator}
    finally:
        pool.close()
        offline.client.delete_dataset(offline.dataset, delete_contents=True, not_found_ok=True)


@pytest.fixture
def audited(stack: dict[str, Any], redis_prefix: str, use_env: Callable[[dict[str, str]], None]) -> AuditTrail:
    emulator = stack["emulator"]
    use_env({**base_env(stack["database"], redis_prefix), "FS_AUDIT_SINK": "bigquery",
             "FS_BIGQUERY_PROJECT": emulator.project, "FS_BIGQUERY_API_ENDPOINT": emulator.api_endpoint,
             "FS_BIGQUERY_DATASET": stack["offline"].dataset, "FS_AUDIT_LINGER_S": "0.001"})
    return AuditTrail(stack["offline"])


def export(stack: dict[str, Any]) -> None:
    etl = Etl(ExportSource(stack["pool"]), stack["offline"], stack["settings"].etl)
    while not etl.export(f"rcpt-{secrets.token_hex(3)}")["done"]:
        pass


def receipt(request_id: str) -> tuple[int, dict[str, Any]]:
    answer = function_client("read_receipt").get(f"/api/v1/receipts/{request_id}")
    return answer.status_code, answer.get_json()


def test_a_receipt_replays_every_served_vector_to_its_digest_and_an_altered_record_does_not(
        stack: dict[str, Any], audited: AuditTrail) -> None:
    batch = function_client("read_features_batch").post(
        "/api/v1/features/batch", json={"user_ids": [user_id(n) for n in (1, 2, 3, 5, 8)] + ["nobody-here"]},
        headers={"X-Purpose": "credit_decision"}).get_json()
    single = function_client("read_features").get(f"/api/v1/features/user/{user_id(13)}?features=orders_7d,age")
    single_body = single.get_json()
    wait_for(lambda: len(audited.rows(batch["request_id"])) == 6 and audited.rows(single_body["request_id"]))
    export(stack)

    status, body = receipt(batch["request_id"])

    assert status == 200, body
    assert not list(RECEIPT.iter_errors(body))
    got = body["receipt"]
    assert got["matches"] is True and got["record"]["purpose"] == "credit_decision"
    assert [v["user_id"] for v in got["vectors"]] == [r["user_id"] for r in batch["results"]]
    for vector, served in zip(got["vectors"], batch["results"], strict=True):
        if served["status"] == "ok":
            assert (vector["matches"], vector["reason"]) == (True, None), vector
            assert vector["recomputed_digest"] == vector["digest"]
            assert vector["recomputed_features"] == served["features"]
        else:
            assert (vector["matches"], vector["reason"]) == (None, "not_served")
    status, one = receipt(single_body["request_id"])
    assert status == 200 and one["receipt"]["matches"] is True
    assert one["receipt"]["vectors"][0]["recomputed_features"] == single_body["features"]

    # The same record, altered: it now claims the read evaluated features two days later.
    rows = audited.rows(batch["request_id"])
    forged_id = new_request_id(int(datetime.now(UTC).timestamp() * 1000), os.urandom(10))
    forged = []
    for row in rows:
        row = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
        as_of = datetime.fromisoformat(row["as_of"]) + timedelta(days=2)
        forged.append({**row, "request_id": forged_id, "as_of": as_of.isoformat(),
                       "served_at": datetime.now(UTC).isoformat()})
    client = stack["offline"].client
    table = f"{client.project}.{stack['offline'].dataset}.audit_reads"
    assert client.insert_rows_json(table, forged) == []

    status, altered = receipt(forged_id)

    assert status == 200
    served_ok = [v for v in altered["receipt"]["vectors"] if v["status"] == "ok"]
    assert altered["receipt"]["matches"] is False
    assert all((v["matches"], v["reason"]) == (False, "digest_differs") for v in served_ok), served_ok


def test_a_read_newer_than_the_last_export_is_not_yet_landed(stack: dict[str, Any], audited: AuditTrail) -> None:
    export(stack)
    later = function_client("read_features").get(f"/api/v1/features/user/{user_id(21)}").get_json()
    wait_for(lambda: audited.rows(later["request_id"]))

    status, body = receipt(later["request_id"])

    assert status == 200
    [vector] = body["receipt"]["vectors"]
    assert (vector["matches"], vector["reason"]) == (None, "offline_not_yet_landed")
    assert body["receipt"]["matches"] is False


@pytest.mark.parametrize(("request_id", "status", "code"), [
    ("not-a-ulid", 400, "invalid_request_id"), ("01HF7YAT0060RK4CSM6MV3EE1s", 400, "invalid_request_id"),
    ("01HF7YAT0060RK4CSM6MV3EE1S", 404, "receipt_not_found")])
def test_unknown_and_malformed_request_ids(stack: dict[str, Any], audited: AuditTrail, request_id: str, status: int,
                                           code: str) -> None:
    got, body = receipt(request_id)

    assert (got, body["error"]["code"]) == (status, code) and body["request_id"] != request_id
