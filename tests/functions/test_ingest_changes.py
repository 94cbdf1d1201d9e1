"""The ingest_changes function through functions-framework's own app, against real PostgreSQL and Redis.

Every class of message a real producer sends (tests/producers.py builds each from its producer's
documentation) is pushed in the three shapes Pub/Sub push takes: binary CloudEvent, structured
CloudEvent, raw push body. For a row change, the source is changed with SQL first and the cached
state must then equal the independent recomputation of tests/reference.py; for everything else,
the status and the counts by kind. Only our dependencies' outages may answer 5xx.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from conftest import Databases, admin_connection, base_env, closed_port, function_client
from feature_store.domain.catalog import CREDIT_DECISION_V1, Instant
from feature_store.domain.state import UserState
from feature_store.stores.redis_online import Tombstone
from reference import reference_features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from producers import (
    changefeed_message,
    changefeed_resolved,
    debezium_change,
    debezium_heartbeat,
    debezium_logical_message,
    debezium_transaction,
    hlc,
    push,
    push_body,
)

SHAPES = ["binary", "structured", "raw"]
NOW = datetime.now(UTC).replace(microsecond=0)
_lsn = itertools.count(0x1_0000_0000)


@pytest.fixture(scope="module")
def cdc_database(databases: Databases) -> str:
    """A migrated database of this module alone: its rows never reach the seeded one others count."""
    return databases.create()


# Redis timeouts that a loaded 2-core machine does not trip (the read path's default is 10 ms).
PATIENT = {"FS_CDC_CHANGELOG_ENABLED": "false", "FS_REDIS_SOCKET_TIMEOUT_MS": "2000",
           "FS_CDC_REDIS_TIMEOUT_MS": "10000"}


@pytest.fixture
def cdc_env(cdc_database: str, redis_prefix: str) -> dict[str, str]:
    return {**base_env(cdc_database, redis_prefix), **PATIENT}


@pytest.fixture
def app(cdc_env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> Any:
    use_env(cdc_env)
    return function_client("ingest_changes")


@pytest.fixture
def source(cdc_env: dict[str, str]) -> Iterator[pg8000.native.Connection]:
    conn = admin_connection(cdc_env["FS_POSTGRES_DATABASE"])
    yield conn
    conn.close()


def stats() -> dict[str, int]:
    from feature_store.wiring import services

    return services().ingestor.stats.snapshot()


def fresh_user(conn: pg8000.native.Connection, age: int = 30) -> dict[str, Any]:
    """A new users row."""
    uid = f"u-ing-{secrets.token_hex(6)}"
    return row(conn, "INSERT INTO users (user_id, age, location_country, signup_date, verification_status, "
                     "created_at, updated_at) VALUES (:u, :a, 'DE', :d, 'verified', :t, :t) RETURNING *",
               u=uid, a=age, d=(NOW - timedelta(days=400)).date(), t=NOW - timedelta(days=400))


def new_order(conn: pg8000.native.Connection, uid: str, amount: str, minutes_ago: int = 30) -> dict[str, Any]:
    return row(conn, "INSERT INTO transactions VALUES (:t, :u, :a, 'USD', 'm-1', 'books', 'completed', :c) "
                     "RETURNING *", t=f"t-{secrets.token_hex(6)}", u=uid, a=Decimal(amount),
               c=NOW - timedelta(minutes=minutes_ago))


def row(conn: pg8000.native.Connection, sql: str, **params: Any) -> dict[str, Any]:
    rows = conn.run(sql, **params)
    return dict(zip([c["name"] for c in conn.columns], rows[0], strict=True))


def assert_converged(conn: pg8000.native.Connection, uid: str) -> None:
    """The cached entry of ``uid`` equals tests/reference.py's recomputation from the source's rows."""
    from feature_store.wiring import services

    entry = services().online.get_many([uid])[0]
    at = time.time()
    expected = reference_features(conn, uid, at)
    if expected is None:
        assert isinstance(entry, Tombstone), f"{uid} is gone from the source but the cache holds {entry!r}"
        return
    assert isinstance(entry, UserState), f"{uid}: expected a cached state, found {entry!r}"
    assert CREDIT_DECISION_V1.evaluate(entry, Instant(at)) == expected


def deliver(app: Any, shape: str, data: bytes | None, attributes: dict[str, str] | None = None) -> None:
    response = push(app, shape, data, f"m-{next(_lsn)}", attributes)
    assert response.status_code == 200, response.get_data(as_text=True)


# --- Debezium row changes ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_schema", [False, True])
def test_debezium_inserts_refresh_the_user(shape: str, with_schema: bool, app: Any,
                                           source: pg8000.native.Connection) -> None:
    user = fresh_user(source)
    order = new_order(source, user["user_id"], "42.50")
    deliver(app, shape, debezium_change("users", "c", None, user, lsn=next(_lsn), with_schema=with_schema))
    deliver(app, shape, debezium_change("transactions", "c", None, order, lsn=next(_lsn), with_schema=with_schema))
    assert stats() == {"applied": 2, "batches": 2, "users": 2}
    assert_converged(source, user["user_id"])


@pytest.mark.parametrize("shape", SHAPES)
def test_an_infinite_timestamp_does_not_stop_the_change(shape: str, app: Any,
                                                         source: pg8000.native.Connection) -> None:
    user = fresh_user(source)
    deliver(app, shape, debezium_change("users", "c", None, user, lsn=next(_lsn)))
    changed = row(source, "UPDATE users SET age = 45, updated_at = 'infinity' WHERE user_id = :u "
                          "RETURNING user_id, age, location_country, signup_date, verification_status, "
                          "income_bracket, created_at", u=user["user_id"])
    # Debezium writes a TIMESTAMPTZ infinity as the text "infinity" (PostgresValueConverter).
    deliver(app, shape, debezium_change("users", "u", user, {**changed, "updated_at": "infinity"}, lsn=next(_lsn)))
    assert stats()["applied"] == 2 and stats()["raw_values"] == 1
    assert_converged(source, user["user_id"])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("connector_mode", ["string", "double"])
def test_a_decimal_mode_unlike_the_setting_still_applies(shape: str, connector_mode: str, app: Any,
                                                         source: pg8000.native.Connection) -> None:
    # FS_CDC_DECIMAL_HANDLING_MODE is precise (the default); the connector writes string or double, no schema.
    user = fresh_user(source)
    order = new_order(source, user["user_id"], "1250")
    deliver(app, shape, debezium_change("transactions", "c", None, order, lsn=next(_lsn), decimals=connector_mode))
    assert stats()["applied"] == 1
    assert_converged(source, user["user_id"])


@pytest.mark.parametrize("shape", SHAPES)
def test_deletes_and_moves(shape: str, app: Any, source: pg8000.native.Connection) -> None:
    a, b = fresh_user(source), fresh_user(source)
    order = new_order(source, a["user_id"], "10.00")
    moved = row(source, "UPDATE transactions SET user_id = :b WHERE transaction_id = :t RETURNING *",
                b=b["user_id"], t=order["transaction_id"])
    deliver(app, shape, debezium_change("transactions", "u", order, moved, lsn=next(_lsn)))
    source.run("DELETE FROM users WHERE user_id = :u", u=a["user_id"])
    deliver(app, shape, debezium_change("users", "d", a, None, lsn=next(_lsn)))
    assert stats()["applied"] == 2
    assert_converged(source, a["user_id"])
    assert_converged(source, b["user_id"])


@pytest.mark.parametrize("shape", SHAPES)
def test_a_delete_naming_no_user_is_acknowledged_and_counted(shape: str, app: Any) -> None:
    # REPLICA IDENTITY DEFAULT: Debezium's before holds the key only; a changefeed without diff: Key only.
    deliver(app, shape, debezium_change("installment_plans", "d", {"plan_id": "p-gone"}, None, lsn=next(_lsn)))
    deliver(app, shape, changefeed_message("installments", ["p-gone", 2], None))
    assert stats() == {"applied": 2, "batches": 2, "users": 0, "unattributed": 2}


# --- the messages around row changes -------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_tombstones_with_null_data_or_no_data_field(shape: str, app: Any) -> None:
    deliver(app, shape, b"null")
    deliver(app, shape, None, {"key": '{"user_id": "u1"}'})  # attributes only: the push has no data field
    assert stats() == {"tombstones": 2}


@pytest.mark.parametrize("shape", SHAPES)
def test_heartbeats_are_acknowledged_quietly(shape: str, app: Any, caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger().addHandler(caplog.handler)  # logs.configure() replaced the root handlers
    deliver(app, shape, debezium_heartbeat(1_793_000_000_000))
    deliver(app, shape, debezium_heartbeat(1_793_000_000_000, with_schema=True))
    deliver(app, shape, debezium_logical_message(1_793_000_000_000, next(_lsn)))
    assert stats() == {"heartbeats": 3}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("shape", SHAPES)
def test_transaction_metadata_is_acknowledged_and_its_changes_applied(shape: str, app: Any,
                                                                       source: pg8000.native.Connection) -> None:
    user = fresh_user(source)
    order = new_order(source, user["user_id"], "7.25")
    tx_id = f"{next(_lsn)}:{next(_lsn)}"
    deliver(app, shape, debezium_transaction("BEGIN", tx_id, 1_793_000_000_000, with_schema=True))
    deliver(app, shape, debezium_change("transactions", "c", None, order, lsn=next(_lsn),
                                        transaction={"id": tx_id, "total_order": 1, "data_collection_order": 1}))
    deliver(app, shape, debezium_transaction("END", tx_id, 1_793_000_000_001, {"transactions": 1}))
    assert stats() == {"transactions": 2, "applied": 1, "batches": 1, "users": 1}
    assert_converged(source, user["user_id"])


# --- CockroachDB changefeeds ---------------------------------------------------------------------

def tx_key(order: dict[str, Any]) -> list[Any]:
    return [order["user_id"], order["created_at"], order["transaction_id"]]  # CockroachDB's key order


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", ["wrapped", "wrapped+diff+updated", "bare", "lowercase"])
def test_changefeed_row_messages_refresh_the_user(shape: str, variant: str, app: Any,
                                                  source: pg8000.native.Connection) -> None:
    user = fresh_user(source)
    order = new_order(source, user["user_id"], "19.99")
    options: dict[str, Any] = {
        "wrapped": {}, "wrapped+diff+updated": {"diff": True, "updated": hlc(time.time_ns())},
        "bare": {"envelope": "bare", "updated": hlc(time.time_ns())}, "lowercase": {"capitalized": False},
    }[variant]
    deliver(app, shape, changefeed_message("users", [user["user_id"]], user, **options))
    deliver(app, shape, changefeed_message("transactions", tx_key(order), order, **options))
    assert stats()["applied"] == 2
    assert_converged(source, user["user_id"])


@pytest.mark.parametrize("shape", SHAPES)
def test_a_changefeed_delete_without_diff_refreshes_the_user_of_its_key(shape: str, app: Any,
                                                                          source: pg8000.native.Connection) -> None:
    user = fresh_user(source)
    order = new_order(source, user["user_id"], "55.00")
    deliver(app, shape, changefeed_message("transactions", tx_key(order), order))
    source.run("DELETE FROM transactions WHERE transaction_id = :t", t=order["transaction_id"])
    deliver(app, shape, changefeed_message("transactions", tx_key(order), None, updated=hlc(time.time_ns())))
    assert stats()["applied"] == 2
    assert_converged(source, user["user_id"])


@pytest.mark.parametrize("shape", SHAPES)
def test_one_topic_for_every_table_names_it_in_the_table_name_attribute(shape: str, app: Any,
                                                                         source: pg8000.native.Connection) -> None:
    user = fresh_user(source)
    deliver(app, shape, changefeed_message("cdc-changes", [user["user_id"]], user), {"TABLE_NAME": "users"})
    assert stats()["applied"] == 1
    assert_converged(source, user["user_id"])


@pytest.mark.parametrize("shape", SHAPES)
def test_resolved_timestamps_are_acknowledged_quietly(shape: str, app: Any) -> None:
    deliver(app, shape, changefeed_resolved(hlc(time.time_ns())))
    deliver(app, shape, changefeed_resolved(hlc(time.time_ns()), envelope="bare"))
    assert stats() == {"resolved": 2}


# --- poison --------------------------------------------------------------------------------------

SECRET_USER = "u-secret-7731"


def _with_secret(**changes: Any) -> bytes:
    body = json.loads(debezium_change("transactions", "c", None, {
        "transaction_id": "t-secret", "user_id": SECRET_USER, "amount": Decimal("987.65"), "currency": "USD",
        "merchant": "merchant-secret", "category": "books", "status": "completed", "created_at": NOW}, lsn=77))
    body["after"].update(changes)
    return json.dumps(body).encode()


def _schema_with_a_list_for_a_name() -> bytes:
    body = json.loads(debezium_change("users", "c", None, {"user_id": SECRET_USER}, lsn=1, with_schema=True))
    body["schema"]["fields"][1]["fields"][0]["field"] = ["user_id"]
    return json.dumps(body).encode()


@pytest.mark.parametrize(("data", "code"), [
    (b"this is not json", "poison_not_json"),
    (b"[" * 100_000 + b"]" * 100_000, "poison_too_deep"),  # RecursionError in json.loads before
    (_with_secret(amount={"scale": 2}), "poison_invalid_value"),  # a decimal struct missing its value: KeyError
    (_schema_with_a_list_for_a_name(), "poison_not_debezium"),  # a field name of the wrong type: TypeError
    (_with_secret(created_at="yesterday", merchant=None), "poison_invalid_value"),
    (json.dumps({"op": "t", "source": {"table": "users", "lsn": 1, "ts_ms": 1}}).encode(), "poison_unsupported_op"),
    (b'{"op": "c", "source": {"table": "audit_log", "lsn": 1, "ts_ms": 1}, "after": {}}', "poison_unknown_table"),
    (changefeed_message("cdc-changes", [SECRET_USER], {"user_id": SECRET_USER}), "poison_unknown_table"),
])
@pytest.mark.parametrize("shape", SHAPES)
def test_poison_is_logged_once_counted_and_acknowledged(data: bytes, code: str, shape: str, app: Any,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger().addHandler(caplog.handler)
    response = push(app, shape, data, "poison-42")
    assert response.status_code == 200
    assert stats() == {f"poison:{code}": 1}
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].exc_info is None
    assert records[0].getMessage() == "poison message acknowledged"
    fields = records[0].fields  # type: ignore[attr-defined]
    assert fields["message_id"] == "poison-42" and fields["error_code"] == code
    logged = json.dumps(fields) + records[0].getMessage()
    for secret in (SECRET_USER, "merchant-secret", "987.65", "yesterday"):
        assert secret not in logged


@pytest.mark.parametrize("shape", SHAPES)
def test_an_event_that_is_not_a_pubsub_message_is_poison(shape: str, app: Any) -> None:
    if shape == "raw":
        response = app.post("/", json={"unexpected": True})
    else:
        from cloudevents.conversion import to_binary, to_structured
        from cloudevents.http import CloudEvent

        event = CloudEvent({"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "s", "id": "x-1"},
                           {"unexpected": True})
        headers, payload = to_binary(event) if shape == "binary" else to_structured(event)
        response = app.post("/", headers=headers, data=payload)
    assert response.status_code == 200
    assert stats() == {"poison:poison_not_pubsub": 1}


# --- our own dependencies ------------------------------------------------------------------------

@pytest.mark.parametrize("broken", ["FS_REDIS_URL", "FS_POSTGRES_PORT"])
@pytest.mark.parametrize("shape", SHAPES)
def test_a_dependency_outage_answers_500_so_pubsub_redelivers(broken: str, shape: str, cdc_env: dict[str, str],
                                                              use_env: Callable[[dict[str, str]], None]) -> None:
    port = closed_port()
    use_env({**cdc_env, broken: f"redis://127.0.0.1:{port}/0" if broken == "FS_REDIS_URL" else str(port)})
    user = {"user_id": "u000000008", "signup_date": NOW.date(), "verification_status": "verified"}
    data = debezium_change("users", "r", None, user, lsn=1)
    assert push(function_client("ingest_changes"), shape, data, "m-2").status_code == 500


def legacy_push(app: Any, data: bytes, message_id: str) -> Any:
    """A raw push body naming its id only as message_id (the form of Pub/Sub's older push example),
    which functions-framework does not convert: the function's error handler applies it."""
    body = push_body(data, message_id)
    del body["message"]["messageId"]
    return app.post("/", json=body)


def test_a_raw_push_the_framework_cannot_convert_is_applied(app: Any, source: pg8000.native.Connection) -> None:
    user = fresh_user(source)
    assert legacy_push(app, debezium_change("users", "c", None, user, lsn=next(_lsn)), "m-legacy").status_code == 200
    assert stats()["applied"] == 1
    assert_converged(source, user["user_id"])


def test_an_outage_behind_the_error_handler_answers_500_and_logs_no_content(
        cdc_env: dict[str, str], use_env: Callable[[dict[str, str]], None], caplog: pytest.LogCaptureFixture) -> None:
    use_env({**cdc_env, "FS_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"})
    logging.getLogger().addHandler(caplog.handler)
    data = debezium_change("users", "r", None, {"user_id": SECRET_USER, "signup_date": NOW.date(),
                                                "verification_status": "verified"}, lsn=1)
    assert legacy_push(function_client("ingest_changes"), data, "m-3").status_code == 500
    assert caplog.records and SECRET_USER not in caplog.text and base64.b64encode(data).decode()[:40] not in caplog.text
