"""The ingest_changes function through functions-framework's own app: every push shape, poison, transient."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from conftest import closed_port, function_client
from feature_store.domain.state import UserState

TOPIC = "//pubsub.googleapis.com/projects/local-project/topics/cdc-changes"
TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


def change(user_id: str, lsn: int = 1000) -> bytes:
    """A Debezium snapshot-read event of a users row, without the schema part."""
    return json.dumps({
        "before": None,
        "after": {"user_id": user_id, "age": 30, "signup_date": 19000, "verification_status": "verified"},
        "source": {"version": "2.7.3.Final", "connector": "postgresql", "name": "fs", "ts_ms": 1_793_000_000_000,
                   "snapshot": "true", "db": "feature_store", "schema": "public", "table": "users", "txId": 5,
                   "lsn": lsn, "xmin": None},
        "op": "r", "ts_ms": 1_793_000_000_100}).encode()


def push_body(data: bytes, message_id: str) -> dict[str, Any]:
    return {"message": {"data": base64.b64encode(data).decode(), "messageId": message_id,
                        "publishTime": "2026-11-02T10:00:00Z", "attributes": {}},
            "subscription": "projects/local-project/subscriptions/cdc-changes-push"}


def post(shape: str, data: bytes, message_id: str) -> Any:
    client = function_client("ingest_changes")
    body = push_body(data, message_id)
    if shape == "raw":
        return client.post("/", json=body)
    event = CloudEvent({"type": TYPE, "source": TOPIC, "id": message_id}, body)
    headers, payload = to_binary(event) if shape == "binary" else to_structured(event)
    return client.post("/", headers=headers, data=payload)


@pytest.fixture
def cdc_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FS_CDC_CHANGELOG_ENABLED": "false"}


@pytest.mark.parametrize("shape", ["binary", "structured", "raw"])
def test_every_push_shape_refreshes_the_user(shape: str, cdc_env: dict[str, str],
                                             use_env: Callable[[dict[str, str]], None]) -> None:
    from feature_store.wiring import services

    use_env(cdc_env)
    user = "u000000007"
    response = post(shape, change(user), "m-1")
    assert response.status_code == 200, response.get_data(as_text=True)
    entry = services().online.get_many([user])[0]
    recomputed = services().source.states_for([user])[user]
    assert isinstance(entry, UserState)
    assert entry.total_orders == recomputed.total_orders and entry.age == recomputed.age
    assert services().ingestor.stats.snapshot()["applied"] == 1


@pytest.mark.parametrize(("data", "code"), [
    (b"this is not json", "poison_not_json"),
    (b'{"op": "c", "source": {"table": "audit_log", "lsn": 1, "ts_ms": 1}, "after": {}}', "poison_unknown_table"),
    (json.dumps({"op": "c", "source": {"table": "users", "lsn": 1, "ts_ms": 1},
                 "after": {"user_id": "u1", "age": -4}}).encode(), "poison_invalid_value"),
])
def test_poison_is_logged_counted_and_acknowledged(data: bytes, code: str, cdc_env: dict[str, str],
                                                   use_env: Callable[[dict[str, str]], None],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from feature_store.wiring import services

    use_env(cdc_env)
    ingestor = services().ingestor
    logging.getLogger().addHandler(caplog.handler)  # logs.configure() replaced the root handlers
    response = post("binary", data, "poison-42")
    assert response.status_code == 200
    assert ingestor.stats.snapshot() == {f"poison:{code}": 1}
    record = next(r for r in caplog.records if r.getMessage() == "poison message acknowledged")
    assert record.fields["message_id"] == "poison-42" and record.fields["error_code"] == code  # type: ignore[attr-defined]


def test_an_event_that_is_not_a_pubsub_message_is_poison(cdc_env: dict[str, str],
                                                         use_env: Callable[[dict[str, str]], None]) -> None:
    from feature_store.wiring import services

    use_env(cdc_env)
    event = CloudEvent({"type": TYPE, "source": TOPIC, "id": "x-1"}, {"unexpected": True})
    headers, payload = to_binary(event)
    assert function_client("ingest_changes").post("/", headers=headers, data=payload).status_code == 200
    assert services().ingestor.stats.snapshot() == {"poison:poison_not_pubsub": 1}


def test_a_debezium_tombstone_is_acknowledged_quietly(cdc_env: dict[str, str],
                                                       use_env: Callable[[dict[str, str]], None]) -> None:
    from feature_store.wiring import services

    use_env(cdc_env)
    assert post("binary", b"null", "t-1").status_code == 200
    assert services().ingestor.stats.snapshot() == {"tombstones": 1}


@pytest.mark.parametrize("broken", ["FS_REDIS_URL", "FS_POSTGRES_PORT"])
def test_a_transient_fault_answers_500_so_pubsub_redelivers(broken: str, cdc_env: dict[str, str],
                                                            use_env: Callable[[dict[str, str]], None]) -> None:
    port = closed_port()
    use_env({**cdc_env, broken: f"redis://127.0.0.1:{port}/0" if broken == "FS_REDIS_URL" else str(port)})
    response = post("binary", change("u000000008"), "m-2")
    assert response.status_code == 500
