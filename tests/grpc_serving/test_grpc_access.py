"""Who may read, over gRPC: UNAUTHENTICATED, PERMISSION_DENIED and RESOURCE_EXHAUSTED (with RetryInfo), the
same stable codes as REST in ErrorInfo; and the Python client's exceptions carrying them over both transports."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest

from feature_store.domain.synthetic import user_id
from feature_store_client import FeatureStoreClient, PermissionDenied, RateLimited, Unauthenticated
from feature_store_client.v1 import feature_store_pb2 as pb

from .conftest import call, keyed_channel
from .test_grpc_parity import grpc_error


def new_key(capfd: pytest.CaptureFixture[str], name: str, *options: str) -> str:
    from feature_store.cli import keys

    client = f"{name}-{time.monotonic_ns() % 10**9}"
    given = {"--groups": "all", "--feature-sets": "all", **dict(zip(options[::2], options[1::2], strict=True))}
    assert keys.main(["clients", "create", client, *[a for kv in given.items() for a in kv]]) == 0
    capfd.readouterr()
    assert keys.main(["keys", "create", client]) == 0
    return str(json.loads(capfd.readouterr().out)["key"])


def failure(target: str, key: str | None, method: str, request: Any,
            metadata: tuple[tuple[str, str], ...] = ()) -> tuple[str, str, str, float | None]:
    with grpc.insecure_channel(target) if key is None else keyed_channel(target, key) as ch, \
            pytest.raises(grpc.RpcError) as failed:
        m = ch.unary_unary(f"/featurestore.v1.FeatureStore/{method}",
                           request_serializer=type(request).SerializeToString,
                           response_deserializer=lambda b: b)
        m(request, timeout=10, metadata=metadata)
    return grpc_error(failed.value)


def test_no_credentials_is_unauthenticated(grpc_target: str) -> None:
    for method, request in (("GetUserFeatures", pb.GetUserFeaturesRequest(user_id=user_id(1))),
                            ("BatchGetUserFeatures", pb.BatchGetUserFeaturesRequest(user_ids=[user_id(1)]))):
        code, reason, _, _ = failure(grpc_target, None, method, request)
        assert (code, reason) == ("UNAUTHENTICATED", "unauthenticated")


def test_a_bad_key_or_bearer_is_unauthenticated_and_bearer_metadata_carries_a_key(
        grpc_target: str, capfd: pytest.CaptureFixture[str]) -> None:
    request = pb.GetUserFeaturesRequest(user_id=user_id(1))
    assert failure(grpc_target, "fsk_unknownkey12_" + "x" * 43, "GetUserFeatures", request)[:2] == \
        ("UNAUTHENTICATED", "invalid_credentials")
    key = new_key(capfd, "bearer")
    with grpc.insecure_channel(grpc_target) as ch:
        stub = ch.unary_unary("/featurestore.v1.FeatureStore/GetUserFeatures",
                              request_serializer=pb.GetUserFeaturesRequest.SerializeToString,
                              response_deserializer=pb.GetUserFeaturesResponse.FromString)
        answer = stub(request, timeout=10, metadata=(("authorization", f"Bearer {key}"),))
    assert answer.vector.user_id == user_id(1)


def test_out_of_scope_is_permission_denied_naming_the_features(grpc_target: str,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    key = new_key(capfd, "scoped", "--groups", "velocity", "--feature-sets", "credit_decision:1")

    code, reason, message, _ = failure(grpc_target, key, "GetUserFeatures",
                                       pb.GetUserFeaturesRequest(user_id=user_id(1), features=["age", "orders_24h"]))
    version = failure(grpc_target, key, "BatchGetUserFeatures",
                      pb.BatchGetUserFeaturesRequest(user_ids=[user_id(1)], version=2))
    with keyed_channel(grpc_target, key) as ch:
        served = call(ch, "GetUserFeatures", pb.GetUserFeaturesRequest(user_id=user_id(1), version=1))

    assert (code, reason) == ("PERMISSION_DENIED", "feature_out_of_scope") and "age" in message
    assert version[:2] == ("PERMISSION_DENIED", "feature_set_out_of_scope")
    assert {f.group for f in served.features} == {"velocity"}  # all features: only those in scope are served


def test_over_the_rate_is_resource_exhausted_with_retry_info(grpc_target: str,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    key = new_key(capfd, "slow", "--rate", "0.1", "--burst", "2", "--batch-max", "2")
    with keyed_channel(grpc_target, key) as ch:
        for n in range(2):
            call(ch, "GetUserFeatures", pb.GetUserFeaturesRequest(user_id=user_id(n)))

    code, reason, _, retry = failure(grpc_target, key, "BatchGetUserFeatures",
                                     pb.BatchGetUserFeaturesRequest(user_ids=[user_id(5)]))

    assert (code, reason) == ("RESOURCE_EXHAUSTED", "rate_limited") and retry is not None and 1 <= retry <= 10


def test_the_client_raises_the_servers_codes_and_never_retries_them(
        grpc_target: str, capfd: pytest.CaptureFixture[str]) -> None:
    scoped = new_key(capfd, "client-scoped", "--groups", "velocity", "--rate", "0.1", "--burst", "200",
                     "--batch-max", "200")
    with FeatureStoreClient.over_grpc(grpc_target) as anonymous, pytest.raises(Unauthenticated) as no_key:
        anonymous.get_online_features(user_id(1))
    with FeatureStoreClient.over_grpc(grpc_target, api_key=scoped) as client:
        with pytest.raises(PermissionDenied) as denied:
            client.get_online_features(user_id(1), features=["age", "income_bracket", "orders_24h"])
        answer = client.get_online_features(user_id(1))
        client.get_online_features([user_id(n) for n in range(100, 300)][:199])
        attempts = []
        real = client.transport.read_one

        def counted(*args: Any, **kwargs: Any) -> Any:
            attempts.append(1)
            return real(*args, **kwargs)

        client.transport.read_one = counted  # type: ignore[method-assign]
        with pytest.raises(RateLimited) as limited:
            client.get_online_features(user_id(2))

    assert no_key.value.code == "unauthenticated"
    assert denied.value.code == "feature_out_of_scope" and denied.value.features == ["age", "income_bracket"]
    assert set(answer.vectors[0].features) == {"velocity"}
    assert limited.value.code == "rate_limited" and limited.value.retry_after_s and attempts == [1]
