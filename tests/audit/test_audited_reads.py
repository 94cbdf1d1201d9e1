"""Reads through the functions' own apps and the gRPC server, audited through the production sink's wire.

Every answer carries its request id (header and body, errors too); each read leaves one audit row per
user whose digest anyone holding the response can recompute; the caller's X-Request-Id is kept aside
and X-Purpose is checked; logs carry no raw user id and no feature value.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from pubsub_standin import PubSubStandIn

from conftest import TEST_CLIENT, TEST_KEY, function_client
from feature_store.domain.audit import is_request_id, vector_digest
from feature_store.domain.synthetic import user_id

from .conftest import audit_env, wait_for


@pytest.fixture
def audited(env: dict[str, str], standin: PubSubStandIn, use_env: Callable[[dict[str, str]], None]) -> dict[str, str]:
    merged = {**env, **audit_env(standin)}
    use_env(merged)
    return merged


def rows_of(standin: PubSubStandIn, request_id: str, count: int) -> list[dict[str, Any]]:
    wait_for(lambda: sum(r["request_id"] == request_id for r in standin.rows()) >= count)
    rows = sorted((r for r in standin.rows() if r["request_id"] == request_id), key=lambda r: r["position"])
    assert len(rows) == count
    return rows


def test_a_single_read_answers_its_request_id_and_leaves_one_row_whose_digest_the_caller_can_recompute(
        audited: dict[str, str], standin: PubSubStandIn) -> None:
    app = function_client("read_features")

    answer = app.get(f"/api/v1/features/user/{user_id(7)}?features=orders_1h,risk_score",
                     headers={"X-Request-Id": "caller-trace-000123", "X-Purpose": "credit_decision checkout"})

    body = answer.get_json()
    assert answer.status_code == 200 and is_request_id(body["request_id"])
    assert answer.headers["X-Request-Id"] == body["request_id"]
    [row] = rows_of(standin, body["request_id"], 1)
    assert row["client_request_id"] == "caller-trace-000123" and row["purpose"] == "credit_decision checkout"
    assert (row["user_id"], row["status"], row["kind"], row["transport"]) == (user_id(7), "ok", "single", "rest")
    assert row["feature_names"] == ["risk_score", "orders_1h"] and row["client_id"] == TEST_CLIENT
    assert row["source_watermark"] == body["source_watermark"] and row["computed_at_served"] == body["computed_at"]
    assert row["digest"] == vector_digest(body["features"], body["source_watermark"], body["computed_at"])
    assert row["cache_hit"] is body["cache_hit"]


def test_a_batch_read_is_one_record_of_one_row_per_user_in_request_order(
        audited: dict[str, str], standin: PubSubStandIn) -> None:
    app = function_client("read_features_batch")
    ids = [user_id(1), "nobody-here", user_id(2), user_id(1)]

    answer = app.post("/api/v1/features/batch", json={"user_ids": ids}, headers={"X-Request-Id": "no"})

    body = answer.get_json()
    assert answer.status_code == 200 and answer.headers["X-Request-Id"] == body["request_id"]
    rows = rows_of(standin, body["request_id"], 4)
    assert [r["user_id"] for r in rows] == ids and {r["batch_size"] for r in rows} == {4}
    assert [r["status"] for r in rows] == ["ok", "unknown_user", "ok", "ok"]
    assert rows[0]["client_request_id"] is None, "a malformed caller id is not recorded"
    for row, result in zip(rows, body["results"], strict=True):
        expected = (vector_digest(result["features"], result["source_watermark"], result["computed_at"])
                    if result["status"] == "ok" else None)
        assert row["digest"] == expected


def test_errors_carry_a_request_id_and_an_unknown_user_is_audited(
        audited: dict[str, str], standin: PubSubStandIn) -> None:
    app = function_client("read_features")

    unknown = app.get("/api/v1/features/user/nobody-here")
    bad_purpose = app.get(f"/api/v1/features/user/{user_id(3)}", headers={"X-Purpose": "x" * 129})
    bad_feature = app.get(f"/api/v1/features/user/{user_id(3)}?features=nope")

    for answer, status, code in ((unknown, 404, "unknown_user"), (bad_purpose, 400, "invalid_purpose"),
                                 (bad_feature, 400, "unknown_feature")):
        body = answer.get_json()
        assert (answer.status_code, body["error"]["code"]) == (status, code)
        assert is_request_id(body["request_id"]) and answer.headers["X-Request-Id"] == body["request_id"]
    [row] = rows_of(standin, unknown.get_json()["request_id"], 1)
    assert (row["status"], row["digest"]) == ("unknown_user", None)
    standin_ids = {r["request_id"] for r in standin.rows()}
    assert bad_purpose.get_json()["request_id"] not in standin_ids, "nothing was read, nothing is recorded"


def test_grpc_answers_carry_the_request_id_in_trailing_metadata_and_are_audited(
        audited: dict[str, str], standin: PubSubStandIn) -> None:
    import grpc

    from feature_store.transports.grpc_server import GrpcServer
    from feature_store_client.v1 import METHODS, feature_store_pb2

    server = GrpcServer("127.0.0.1:0", threads=2).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            m = METHODS["GetUserFeatures"]
            stub = channel.unary_unary(m.path, request_serializer=m.request.SerializeToString,
                                       response_deserializer=m.response.FromString)
            answer, call = stub.with_call(feature_store_pb2.GetUserFeaturesRequest(user_id=user_id(5)), timeout=10,
                                          metadata=(("x-purpose", "dispute"), ("x-api-key", TEST_KEY)))
            ok_id = dict(call.trailing_metadata())["x-request-id"]
            with pytest.raises(grpc.RpcError) as failed:
                stub(feature_store_pb2.GetUserFeaturesRequest(user_id="nobody-here"), timeout=10,
                     metadata=(("x-api-key", TEST_KEY),))
            failed_id = dict(failed.value.trailing_metadata())["x-request-id"]
    finally:
        server.stop(0)

    assert is_request_id(ok_id) and is_request_id(failed_id) and ok_id != failed_id
    [row] = rows_of(standin, ok_id, 1)
    assert (row["transport"], row["purpose"], row["status"]) == ("grpc", "dispute", "ok")
    # The row's served instant and digest are those of what gRPC answered (its text made on the sender thread).
    from datetime import datetime

    from feature_store.domain.audit import vector_digest
    from feature_store_client.grpc_transport import _vector

    served = _vector(answer.vector, [(f.group, f.name) for f in answer.features])
    assert datetime.fromisoformat(row["computed_at_served"]) == served.computed_at
    assert row["digest"] == vector_digest(served.features or {}, served.source_watermark, row["computed_at_served"])
    [missing] = rows_of(standin, failed_id, 1)
    assert missing["status"] == "unknown_user"


def test_logs_carry_no_raw_user_id_and_no_feature_value(
        audited: dict[str, str], standin: PubSubStandIn, use_env: Callable[[dict[str, str]], None],
        caplog: pytest.LogCaptureFixture) -> None:
    from decimal import Decimal

    from producers import debezium_change, push

    from feature_store.logs import CloudJsonFormatter
    from feature_store.wiring import services

    use_env({**audited, "FS_LOG_LEVEL": "DEBUG", "FS_CDC_CHANGELOG_ENABLED": "false"})
    single, batch = function_client("read_features"), function_client("read_features_batch")
    ingest = function_client("ingest_changes")
    services()  # configures logging (it replaces the root's handlers): capture after it
    logging.getLogger().addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    uid, secret_user = user_id(11), "u-secret-5519"
    poison = json.loads(debezium_change("transactions", "c", None, {
        "transaction_id": "t-secret-1", "user_id": secret_user, "amount": Decimal("876.54"), "currency": "USD",
        "merchant": "merchant-secret-2", "category": "books", "status": "completed",
        "created_at": "2025-12-01T10:00:00+00:00"}, lsn=91))
    poison["after"]["created_at"] = "not-a-time-secret"

    served = single.get(f"/api/v1/features/user/{uid}").get_json()
    batch.post("/api/v1/features/batch", json={"user_ids": [uid, user_id(12), "nobody-here-9"]})
    single.get("/api/v1/features/user/nobody-here-8")
    single.get(f"/api/v1/features/user/{uid}?features=nope")
    batch.post("/api/v1/features/batch", json={"user_ids": [uid], "features": ["nope"]})
    assert push(ingest, "raw", json.dumps(poison).encode(), "poison-77").status_code == 200
    wait_for(lambda: len(standin.rows()) >= 5)
    formatter = CloudJsonFormatter()
    text = "\n".join(formatter.format(r) for r in caplog.records)

    assert '"httpRequest"' in text and "poison message acknowledged" in text, "the lines were captured"
    for secret in (uid, user_id(12), "nobody-here-9", "nobody-here-8", secret_user, "merchant-secret-2", "876.54",
                   "not-a-time-secret", "t-secret-1"):
        assert secret not in text, secret
    values = _distinctive_values(served["features"])
    assert values, "the vector has values worth looking for"
    for value in values:
        # A whole token: a latency of "0.082989s" is not the feature value 0.082 leaking.
        assert not re.search(rf"(?<![\d.]){re.escape(value)}(?!\d)", text), value


def _distinctive_values(features: dict[str, dict[str, Any]]) -> list[str]:
    """Feature values as they would appear in a JSON log line, skipping ones too short to mean anything."""
    out = []
    for group in features.values():
        for value in group.values():
            shown = json.dumps(value)
            if (isinstance(value, str) and len(value) >= 4) or (isinstance(value, float) and len(shown) >= 5):
                out.append(shown)
    return out
