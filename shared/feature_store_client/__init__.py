"""feature_store_client: the Python client of the BNPL feature store.

    from feature_store_client import FeatureStoreClient

    with FeatureStoreClient.over_rest("http://127.0.0.1:8081", batch_url="http://127.0.0.1:8082") as fs:
        vector = fs.get_online_features("u000000042").vectors[0]
        frame = fs.get_online_features(["u000000001", "u000000002"], features=["orders_24h"]).to_dataframe()

    FeatureStoreClient.over_grpc("127.0.0.1:50051")  # the same reads over gRPC (extra: grpc)

    # A point-in-time training set (run_etl's URL; labels: a DataFrame or (user_id, decision_time, label) rows)
    training = FeatureStoreClient.over_rest(read_url, etl_url="http://127.0.0.1:8085").get_historical_features(labels)

It depends on urllib3 alone (grpcio and protobuf for gRPC, pandas for DataFrames are extras) and on
nothing of the server. Errors carry the server's stable codes (feature_store_client/errors.py).
"""

from __future__ import annotations

from feature_store_client.client import FeatureStoreClient
from feature_store_client.errors import (
    DeadlineExceeded,
    FeatureStoreClientError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from feature_store_client.results import FeatureVector, HistoricalFeatures, OnlineFeatures

__all__ = [
    "DeadlineExceeded",
    "FeatureStoreClient",
    "FeatureStoreClientError",
    "FeatureVector",
    "HistoricalFeatures",
    "InvalidRequest",
    "NotFound",
    "OnlineFeatures",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
]
