"""transports/grpc_wire.py writes exactly the bytes the generated classes write, for any vector."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.domain.catalog import CREDIT_DECISION_V1, CREDIT_DECISION_V2
from feature_store.services.reader import ReadOutcome, VectorResult
from feature_store.transports import grpc_wire
from feature_store_client.v1 import feature_store_pb2 as pb

values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
epochs = st.floats(0, 4_102_444_800, allow_nan=False)  # 1970 .. 2100


def expected_value(v: Any) -> pb.Value:
    if v is None:
        return pb.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(v, bool):
        return pb.Value(bool_value=v)
    if isinstance(v, int):
        return pb.Value(int64_value=v)
    if isinstance(v, float):
        return pb.Value(double_value=v)
    return pb.Value(string_value=v)


def rest_ms(epoch: float) -> int:
    """Milliseconds as the REST edge's ISO string states the instant."""
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return round(datetime.fromisoformat(text).timestamp() * 1000)


@settings(max_examples=300, deadline=None)
@given(user=st.text(min_size=1, max_size=64), status=st.sampled_from(["ok", "unknown_user", "unavailable"]),
       feature_values=st.lists(values, min_size=0, max_size=30), computed=st.one_of(st.none(), epochs),
       watermark=st.one_of(st.none(), st.text(max_size=30)), hit=st.booleans())
def test_a_user_vector_is_the_generated_classes_bytes(user: str, status: str, feature_values: list[Any],
                                                      computed: float | None, watermark: str | None,
                                                      hit: bool) -> None:
    features = {"g": {f"f{i}": v for i, v in enumerate(feature_values)}} if status == "ok" else None
    result = VectorResult(user, status, features, computed, None, hit)  # type: ignore[arg-type]

    written = grpc_wire.user_vector(result, watermark)

    expected = pb.UserVector(user_id=user, status=grpc_wire.STATUS[status], cache_hit=hit,
                             values=[expected_value(v) for v in feature_values] if features else [])
    if computed is not None:
        expected.computed_at.FromMilliseconds(rest_ms(computed))
    if watermark is not None:
        expected.source_watermark = watermark
    assert written == expected.SerializeToString(deterministic=True)


@settings(max_examples=100, deadline=None)
@given(as_of=epochs, reason=st.sampled_from([None, "redis_timeout", "redis_unavailable"]),
       names=st.one_of(st.none(), st.sets(st.sampled_from(CREDIT_DECISION_V2.names), min_size=1)),
       counts=st.tuples(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000)),
       took=st.floats(0, 1e4, allow_nan=False))
def test_a_batch_response_is_the_generated_classes_bytes(as_of: float, reason: str | None, names: set[str] | None,
                                                         counts: tuple[int, int, int], took: float) -> None:
    fs = CREDIT_DECISION_V2
    selection = fs.select(names)
    vectors = [grpc_wire.user_vector(VectorResult("u1", "unknown_user"), None)]

    written = grpc_wire.batch_response(grpc_wire.envelope(fs, ReadOutcome([], as_of, reason), selection), vectors,
                                       dict(zip(("ok", "unknown_user", "unavailable"), counts, strict=True)), took)

    expected = pb.BatchGetUserFeaturesResponse(
        feature_set=fs.name, version=fs.version, degraded=reason is not None, degraded_reason=reason or "",
        features=[pb.FeatureRef(group=g, name=f.name) for g, members in selection.groups for f in members],
        results=[pb.UserVector(user_id="u1", status=pb.VECTOR_STATUS_UNKNOWN_USER)],
        counts=pb.Counts(ok=counts[0], unknown_user=counts[1], unavailable=counts[2]), response_time_ms=took)
    expected.as_of.FromMilliseconds(rest_ms(as_of))
    assert written == expected.SerializeToString(deterministic=True)


def test_a_single_response_decodes_with_every_feature_in_catalog_order() -> None:
    fs = CREDIT_DECISION_V1
    selection = fs.select(None)
    features = {g: {f.name: f.default for f in members} for g, members in selection.groups}
    result = VectorResult("u7", "ok", features, 1_700_000_000.1234, 5, True)

    data = grpc_wire.single_response(grpc_wire.envelope(fs, ReadOutcome([result], 1_700_000_001.0), selection),
                                     grpc_wire.user_vector(result, "0/5"), 1.5)

    decoded = pb.GetUserFeaturesResponse.FromString(data)
    assert [(r.group, r.name) for r in decoded.features] == [(f.group, f.name) for f in fs.features]
    assert len(decoded.vector.values) == len(fs.features) == 26
    assert decoded.vector.computed_at.ToMilliseconds() == 1_700_000_000_123
    assert (decoded.vector.source_watermark, decoded.vector.cache_hit, decoded.response_time_ms) == ("0/5", True, 1.5)


def test_instants_are_truncated_to_the_millisecond_as_rest_states_them() -> None:
    for epoch in (0.0, 0.0005, 0.9995, 0.9999996, 1_700_000_000.9999999, 1_796_190_684.8054996, math.pi * 1e9):
        assert grpc_wire.epoch_ms(epoch) == rest_ms(epoch), epoch
