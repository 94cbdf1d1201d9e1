"""feature_store_client against the real functions and the real gRPC server: equal typed results over both
transports, errors with the server's codes, batches split at the limit, DataFrames."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pandas as pd
import pytest

from conftest import TEST_KEY
from feature_store.domain.synthetic import user_id
from feature_store.wiring import services
from feature_store_client import FeatureStoreClient, InvalidRequest, NotFound, OnlineFeatures

IDS = [user_id(n) for n in (1, 2, 3, 4, 5, 6, 7)]


@pytest.fixture
def clients(env: dict[str, str], grpc_target: str,
            functions: Callable[[dict[str, str]], tuple[str, str]]) -> Iterator[tuple[FeatureStoreClient, ...]]:
    single, batch = functions(env)
    rest = FeatureStoreClient.over_rest(single, batch_url=batch, api_key=TEST_KEY)
    grpc_client = FeatureStoreClient.over_grpc(grpc_target, api_key=TEST_KEY)
    yield rest, grpc_client
    rest.close()
    grpc_client.close()


def comparable(answer: OnlineFeatures) -> Any:
    """An answer without as_of and cache_hit (REST and gRPC run in different processes and clocks here)."""
    return [(v.user_id, v.status, v.features, v.computed_at, v.source_watermark) for v in answer.vectors], \
        (answer.feature_set, answer.version, answer.degraded, answer.counts)


def test_both_transports_return_equal_typed_vectors(clients: tuple[FeatureStoreClient, ...]) -> None:
    rest, grpc_client = clients
    ids = [*IDS, "u999999999"]
    rest.get_online_features(ids)  # cached once, so both read the same state

    over_rest, over_grpc = rest.get_online_features(ids), grpc_client.get_online_features(ids)

    assert comparable(over_rest) == comparable(over_grpc)
    assert [v.status for v in over_grpc.vectors] == ["ok"] * 7 + ["unknown_user"]
    vector = over_grpc.vectors[0]
    assert isinstance(vector.computed_at, datetime) and vector.computed_at.tzinfo is not None
    assert isinstance(vector.values()["total_orders"], int) and isinstance(vector.values()["total_spent"], float)
    assert {type(v) for v in over_rest.vectors[0].values().values()} <= {int, float, str, type(None)}


def test_a_single_id_reads_one_vector_and_a_subset(clients: tuple[FeatureStoreClient, ...]) -> None:
    for client in clients:
        answer = client.get_online_features(IDS[0], features=["orders_24h", "age"], version=2)
        assert (answer.version, len(answer.vectors)) == (2, 1)
        assert set(answer.vectors[0].values()) == {"orders_24h", "age"}


def test_server_errors_are_exceptions_with_the_server_codes(clients: tuple[FeatureStoreClient, ...]) -> None:
    for client in clients:
        with pytest.raises(NotFound) as unknown:
            client.get_online_features("u999999999")
        with pytest.raises(InvalidRequest) as bad_id:
            client.get_online_features("bad id")
        with pytest.raises(InvalidRequest) as bad_feature:
            client.get_online_features(IDS[:2], features=["credit_scroe"])
        assert (unknown.value.code, bad_id.value.code, bad_feature.value.code) == \
            ("unknown_user", "invalid_user_id", "unknown_feature")
        assert "credit_scroe" in bad_feature.value.message


def test_a_read_over_the_batch_limit_is_split_and_keeps_its_order(env: dict[str, str], grpc_target: str) -> None:
    with FeatureStoreClient.over_grpc(grpc_target, api_key=TEST_KEY, batch_max=3) as client:
        answer = client.get_online_features([*IDS, IDS[0]])

    assert [v.user_id for v in answer.vectors] == [*IDS, IDS[0]]
    assert answer.counts == {"ok": 8, "unknown_user": 0, "unavailable": 0}


def test_batch_too_large_from_the_server_is_an_invalid_request(grpc_target: str) -> None:
    with FeatureStoreClient.over_grpc(grpc_target, api_key=TEST_KEY, batch_max=5000) as client, \
            pytest.raises(InvalidRequest) as big:
        client.get_online_features([f"u{n}" for n in range(1001)])
    assert big.value.code == "batch_too_large"


def test_a_dataframe_has_a_row_per_id_and_typed_columns(clients: tuple[FeatureStoreClient, ...]) -> None:
    frame = clients[1].get_online_dataframe([*IDS[:3], "u999999999"], features=["total_orders", "risk_score",
                                                                                 "location_country"])

    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == [*IDS[:3], "u999999999"]
    assert list(frame["status"]) == ["ok", "ok", "ok", "unknown_user"]
    assert str(frame["total_orders"].dtype) == "Int64" and frame["total_orders"].isna().tolist()[-1]
    assert frame["risk_score"].dtype.kind == "f"


def test_the_version_of_a_split_read_is_pinned_to_the_first_part(grpc_target: str) -> None:
    services().reader._clock = time.time  # the served pointer may move; every part reads the first part's version
    with FeatureStoreClient.over_grpc(grpc_target, api_key=TEST_KEY, batch_max=2) as client:
        answer = client.get_online_features(IDS[:5])
    assert answer.version in (1, 2) and len(answer.vectors) == 5
