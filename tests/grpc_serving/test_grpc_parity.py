"""REST and gRPC answer the same users at the same instant with equal vectors, statuses and errors.

Both transports run in this process over one ``services()``: the functions through functions-framework's
app (``function_client``), gRPC through a real server on a private port and a real channel. The reader's
clock is held at one instant, so time windows end at the same moment for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import break_postgres, closed_port, function_client
from feature_store.domain.synthetic import user_id
from feature_store.wiring import services
from feature_store_client.v1 import feature_store_pb2 as pb

from .conftest import call, keyed_channel, private_port

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATUS = {1: "ok", 2: "unknown_user", 3: "unavailable"}
KNOWN = [user_id(n) for n in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)]
UNKNOWN = "u999999999"


def typed(value: Any) -> Any:
    """``value`` with every leaf paired with its type, so 1 and 1.0 differ."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def iso(ts: Any) -> str:
    return (EPOCH + timedelta(milliseconds=ts.ToMilliseconds())).isoformat(timespec="milliseconds")


def as_rest_vector(v: Any, refs: Any) -> dict[str, Any]:
    """A UserVector in the shape REST gives one (a batch result, or the vector part of a single read)."""
    out: dict[str, Any] = {"user_id": v.user_id, "status": STATUS[v.status]}
    if out["status"] == "ok":
        features: dict[str, dict[str, Any]] = {}
        for ref, value in zip(refs, v.values, strict=True):
            kind = value.WhichOneof("kind")
            features.setdefault(ref.group, {})[ref.name] = None if kind == "null_value" else getattr(value, kind)
        out.update(features=features, computed_at=iso(v.computed_at) if v.HasField("computed_at") else None,
                   source_watermark=v.source_watermark if v.HasField("source_watermark") else None,
                   cache_hit=v.cache_hit)
    return out


def as_rest_envelope(r: Any) -> dict[str, Any]:
    body = {"feature_set": r.feature_set, "version": r.version, "as_of": iso(r.as_of), "degraded": r.degraded}
    if r.degraded_reason:
        body["degraded_reason"] = r.degraded_reason
    return body


def rest_single(r: Any) -> dict[str, Any]:
    vector = as_rest_vector(r.vector, r.features)
    del vector["status"]
    return {"user_id": vector.pop("user_id"), **as_rest_envelope(r), **vector}


def rest_batch(r: Any) -> dict[str, Any]:
    return {**as_rest_envelope(r), "results": [as_rest_vector(v, r.features) for v in r.results],
            "counts": {"ok": r.counts.ok, "unknown_user": r.counts.unknown_user, "unavailable": r.counts.unavailable}}


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def without_timing(body: dict[str, Any]) -> dict[str, Any]:
    """A REST body without what differs per request by design: its timing and its request id (gRPC's is metadata)."""
    return {k: v for k, v in body.items() if k not in ("response_time_ms", "request_id")}


def grpc_error(exc: grpc.RpcError) -> tuple[str, str, str, float | None]:
    """(gRPC code, ErrorInfo reason, message, RetryInfo seconds) of a failed call."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "the status carries no details"
    reason, retry = "", None
    for detail in status.details:
        info, delay = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            assert info.domain == "featurestore.v1"
            reason = info.reason
        elif detail.Unpack(delay):
            retry = delay.retry_delay.seconds + delay.retry_delay.nanos / 1e9
    return exc.code().name, reason, exc.details(), retry  # type: ignore[attr-defined]


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """A Redis timeout far above the production 10 ms: parity compares a REST and a gRPC read of the same
    cached vector, and on a loaded machine one of them could time out, fall back and differ in freshness
    (the fallback has its own tests)."""
    return {**env, "FS_REDIS_SOCKET_TIMEOUT_MS": "1000"}


@pytest.fixture
def frozen(grpc_target: str) -> float:
    """One instant for every read of the test (the reader's clock, shared by both transports)."""
    instant = time.time()
    services().reader._clock = lambda: instant
    return instant


@pytest.fixture
def rest(grpc_target: str) -> tuple[Any, Any]:
    return function_client("read_features"), function_client("read_features_batch")


def test_single_reads_are_equal_field_by_field(channel: grpc.Channel, rest: tuple[Any, Any], frozen: float) -> None:
    single, batch = rest
    assert batch.post("/api/v1/features/batch", json={"user_ids": KNOWN}).status_code == 200  # cached first

    for uid in KNOWN:
        for query, request in [("", pb.GetUserFeaturesRequest(user_id=uid)),
                               ("?features=orders_1h,age,on_time_rate,risk_score,favorite_category",
                                pb.GetUserFeaturesRequest(user_id=uid, features=["orders_1h", "age", "on_time_rate",
                                                                                  "risk_score", "favorite_category"])),
                               ("?version=2", pb.GetUserFeaturesRequest(user_id=uid, version=2))]:
            answer = single.get(f"/api/v1/features/user/{uid}{query}")
            assert answer.status_code == 200
            expected = without_timing(answer.get_json())

            got = rest_single(call(channel, "GetUserFeatures", request))

            assert typed(got) == typed(expected)
            assert got["cache_hit"] is True and len(got["features"]) >= 1


def test_batches_are_equal_with_every_status_duplicates_and_misses(channel: grpc.Channel, rest: tuple[Any, Any],
                                                                   frozen: float) -> None:
    _, batch = rest
    ids = [*KNOWN[:5], UNKNOWN, KNOWN[0], user_id(144)]
    batch.post("/api/v1/features/batch", json={"user_ids": ids})  # user 144 and the rest cached by REST

    for body, request in [
        ({"user_ids": ids}, pb.BatchGetUserFeaturesRequest(user_ids=ids)),
        ({"user_ids": ids, "features": ["amount_7d", "age"], "version": 2},
         pb.BatchGetUserFeaturesRequest(user_ids=ids, features=["amount_7d", "age"], version=2)),
        ({"user_ids": [UNKNOWN]}, pb.BatchGetUserFeaturesRequest(user_ids=[UNKNOWN])),
    ]:
        answer = batch.post("/api/v1/features/batch", json=body)
        assert answer.status_code == 200
        expected = without_timing(answer.get_json())

        got = rest_batch(call(channel, "BatchGetUserFeatures", request))

        assert typed(got) == typed(expected)
    assert [r["status"] for r in got["results"]] == ["unknown_user"]


def test_a_batch_of_a_hundred_fresh_users_is_equal_after_both_read_it(channel: grpc.Channel, rest: tuple[Any, Any],
                                                                      frozen: float) -> None:
    _, batch = rest
    ids = [user_id(n) for n in range(1000, 1100)]
    first = rest_batch(call(channel, "BatchGetUserFeatures", pb.BatchGetUserFeaturesRequest(user_ids=ids)))

    answer = batch.post("/api/v1/features/batch", json={"user_ids": ids}).get_json()
    second = rest_batch(call(channel, "BatchGetUserFeatures", pb.BatchGetUserFeaturesRequest(user_ids=ids)))

    assert [r["cache_hit"] for r in first["results"]] == [False] * 100  # gRPC read them first, from the source
    assert typed(second) == typed(without_timing(answer))
    assert [r["features"] for r in first["results"]] == [r["features"] for r in second["results"]]


BAD_SINGLE = [
    ("/api/v1/features/user/" + "a" * 65, pb.GetUserFeaturesRequest(user_id="a" * 65)),
    ("/api/v1/features/user/abc%01def", pb.GetUserFeaturesRequest(user_id="abc\x01def")),
    ("/api/v1/features/user/1%27%3B%20DROP%20TABLE%20users%3B--",
     pb.GetUserFeaturesRequest(user_id="1'; DROP TABLE users;--")),
    ("/api/v1/features/user/", pb.GetUserFeaturesRequest(user_id="")),
    (f"/api/v1/features/user/{UNKNOWN}", pb.GetUserFeaturesRequest(user_id=UNKNOWN)),
    (f"/api/v1/features/user/{KNOWN[0]}?features=age,credit_scroe",
     pb.GetUserFeaturesRequest(user_id=KNOWN[0], features=["age", "credit_scroe"])),
    (f"/api/v1/features/user/{KNOWN[0]}?version=0", pb.GetUserFeaturesRequest(user_id=KNOWN[0], version=0)),
    (f"/api/v1/features/user/{KNOWN[0]}?version=99", pb.GetUserFeaturesRequest(user_id=KNOWN[0], version=99)),
    (f"/api/v1/features/user/{KNOWN[0]}?feature_set=nope", pb.GetUserFeaturesRequest(user_id=KNOWN[0],
                                                                                      feature_set="nope")),
]
BAD_BATCH = [
    {"user_ids": []},
    {"user_ids": ["ok1", "bad id"]},
    {"user_ids": [f"u{n}" for n in range(1001)]},
    {"user_ids": [KNOWN[0]], "features": ["Not_Snake"]},
    {"user_ids": [KNOWN[0]], "features": ["credit_scroe"]},
    {"user_ids": [KNOWN[0]], "version": 0},
    {"user_ids": [KNOWN[0]], "version": 7},
    {"user_ids": [KNOWN[0]], "feature_set": "nope"},
]
GRPC_CODE = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE"}


@pytest.mark.parametrize(("path", "request_"), BAD_SINGLE)
def test_single_errors_have_the_same_code_and_sentence(channel: grpc.Channel, rest: tuple[Any, Any], path: str,
                                                       request_: Any) -> None:
    answer = rest[0].get(path)
    error = answer.get_json()["error"]

    with pytest.raises(grpc.RpcError) as failed:
        call(channel, "GetUserFeatures", request_)

    code, reason, message, retry = grpc_error(failed.value)
    assert (code, reason, message, retry) == (GRPC_CODE[answer.status_code], error["code"], error["message"], None)


@pytest.mark.parametrize("body", BAD_BATCH)
def test_batch_errors_have_the_same_code_and_sentence(channel: grpc.Channel, rest: tuple[Any, Any],
                                                      body: dict[str, Any]) -> None:
    answer = rest[1].post("/api/v1/features/batch", json=body)
    error = answer.get_json()["error"]

    with pytest.raises(grpc.RpcError) as failed:
        call(channel, "BatchGetUserFeatures", pb.BatchGetUserFeaturesRequest(**body))

    code, reason, message, _ = grpc_error(failed.value)
    assert (code, reason, message) == (GRPC_CODE[answer.status_code], error["code"], error["message"])


@pytest.fixture
def source_down(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> Iterator[str]:
    """A server over the same Redis whose PostgreSQL is unreachable (user 4 cached before it went away)."""
    from feature_store.transports.grpc_server import GrpcServer

    use_env({**env, "FS_AUTH_CACHE_S": "0"})  # credentials come from the last good copy below
    assert function_client("read_features").get(f"/api/v1/features/user/{user_id(4)}").status_code == 200
    break_postgres()
    server = GrpcServer(f"127.0.0.1:{private_port()}", threads=2).start()
    yield server.address
    server.stop(0)


def test_source_down_is_unavailable_with_the_retry_delay_and_batch_statuses_match(source_down: str) -> None:
    rest_single_answer = function_client("read_features").get(f"/api/v1/features/user/{user_id(6)}")
    rest_batch_answer = function_client("read_features_batch").post(
        "/api/v1/features/batch", json={"user_ids": [user_id(4), user_id(6)]}).get_json()

    with keyed_channel(source_down) as ch:
        with pytest.raises(grpc.RpcError) as failed:
            call(ch, "GetUserFeatures", pb.GetUserFeaturesRequest(user_id=user_id(6)))
        batch = rest_batch(call(ch, "BatchGetUserFeatures",
                                pb.BatchGetUserFeaturesRequest(user_ids=[user_id(4), user_id(6)])))

    error = rest_single_answer.get_json()["error"]
    assert (rest_single_answer.status_code, rest_single_answer.headers["Retry-After"]) == (503, "1")
    assert grpc_error(failed.value) == ("UNAVAILABLE", error["code"], error["message"], 1.0)
    assert [r["status"] for r in batch["results"]] == [r["status"] for r in rest_batch_answer["results"]] \
        == ["ok", "unavailable"]
    assert batch["counts"] == rest_batch_answer["counts"] == {"ok": 1, "unknown_user": 0, "unavailable": 1}
    assert typed(batch["results"][0]["features"]) != typed(None)


def test_redis_down_both_answer_degraded_from_the_source(env: dict[str, str],
                                                         use_env: Callable[[dict[str, str]], None]) -> None:
    from feature_store.transports.grpc_server import GrpcServer

    use_env({**env, "FS_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"})
    instant = time.time()
    services().reader._clock = lambda: instant
    server = GrpcServer(f"127.0.0.1:{private_port()}", threads=2).start()
    try:
        expected = without_timing(function_client("read_features").get(f"/api/v1/features/user/{user_id(9)}")
                                  .get_json())
        with keyed_channel(server.address) as ch:
            got = rest_single(call(ch, "GetUserFeatures", pb.GetUserFeaturesRequest(user_id=user_id(9))))
    finally:
        server.stop(0)

    # Each read took its own snapshot of the source, so only when it was read (computed_at) and the WAL
    # position then (any database of the cluster may write in between) can differ, and only forwards.
    assert got.pop("computed_at") >= expected.pop("computed_at")
    assert lsn(got.pop("source_watermark")) >= lsn(expected.pop("source_watermark"))
    assert typed(got) == typed(expected)
    assert (got["degraded"], got["degraded_reason"], got["cache_hit"]) == (True, "redis_unavailable", False)
