"""emulators/stack.py's gRPC server, started and stopped by its own helpers on a private port (`make up` uses
the same code on 127.0.0.1:50051)."""

from __future__ import annotations

import sys

from conftest import ROOT
from feature_store.domain.synthetic import user_id
from feature_store_client.v1 import feature_store_pb2

from .conftest import call, keyed_channel, private_port
from .test_grpc_server import check

sys.path.insert(0, str(ROOT / "emulators"))
import stack


def test_the_stack_starts_grpc_on_the_port_it_is_given_and_stops_it(env: dict[str, str]) -> None:
    started: list[dict[str, object]] = []
    port = private_port()
    try:
        target = stack.start_grpc(env, started, port=port, workers=1)
        with keyed_channel(target) as ch:
            assert check(ch, "featurestore.v1.FeatureStore") == "SERVING"
            answer = call(ch, "GetUserFeatures", feature_store_pb2.GetUserFeaturesRequest(user_id=user_id(2)))
    finally:
        for item in started:
            stack.stop(item)

    assert target == f"127.0.0.1:{port}" and started[0]["name"] == "grpc"
    assert answer.vector.user_id == user_id(2) and len(answer.vector.values) >= 26
    assert not stack.alive(int(str(started[0]["pid"])))
