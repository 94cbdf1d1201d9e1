"""The server around the service: health checking, reflection, bad bytes, unexpected errors, fs-grpc itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from feature_store.domain.synthetic import user_id
from feature_store.wiring import services
from feature_store_client.v1 import METHODS, feature_store_pb2

from .conftest import call, keyed_channel, private_port
from .test_grpc_parity import grpc_error


def check(channel: grpc.Channel, service: str) -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(
        stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status))


def test_health_is_serving_for_the_server_and_the_service(channel: grpc.Channel) -> None:
    assert check(channel, "") == "SERVING"
    assert check(channel, "featurestore.v1.FeatureStore") == "SERVING"
    with pytest.raises(grpc.RpcError) as unknown:
        check(channel, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_reflection_lists_the_services_and_serves_the_proto(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = list(stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="featurestore.v1.FeatureStore"),
    ]), timeout=5))

    services_listed = {s.name for s in answers[0].list_services_response.service}
    assert {"featurestore.v1.FeatureStore", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services_listed
    files = answers[1].file_descriptor_response.file_descriptor_proto
    assert any(b"featurestore/v1/feature_store.proto" in f for f in files)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bytes_that_are_not_the_message_are_invalid_argument(channel: grpc.Channel, method: str) -> None:
    raw = channel.unary_unary(METHODS[method].path, request_serializer=None, response_deserializer=None)

    with pytest.raises(grpc.RpcError) as failed:
        raw(b"\x0a\xff\xff\xff\xff\x0fnot a message", timeout=5)

    code, reason, message, _ = grpc_error(failed.value)
    assert (code, reason) == ("INVALID_ARGUMENT", "invalid_body")
    assert message == f"the request is not a valid {METHODS[method].request.DESCRIPTOR.full_name} message"


def test_an_unexpected_error_is_internal_with_a_generic_sentence(channel: grpc.Channel,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug with a secret in it")

    monkeypatch.setattr(services().reader, "read", broken)

    with pytest.raises(grpc.RpcError) as failed:
        call(channel, "GetUserFeatures", feature_store_pb2.GetUserFeaturesRequest(user_id=user_id(1)))

    assert failed.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert failed.value.details() == "the server failed to answer; the error is logged"  # type: ignore[attr-defined]


def wait_serving(target: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "fs-grpc exited"
        try:
            with keyed_channel(target) as ch:
                if check(ch, "") == "SERVING":
                    return
        except grpc.RpcError:
            time.sleep(0.2)
    raise AssertionError(f"fs-grpc did not serve {target} within {seconds} s")


def test_fs_grpc_serves_with_two_workers_and_stops_on_sigterm(env: dict[str, str]) -> None:
    target = f"127.0.0.1:{private_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "feature_store.transports.grpc_server", "--address", target,
                             "--workers", "2", "--threads", "2", "--grace", "1"],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_serving(target, proc)
        with keyed_channel(target) as ch:
            answer = call(ch, "BatchGetUserFeatures",
                          feature_store_pb2.BatchGetUserFeaturesRequest(user_ids=[user_id(1), "u999999999"]))
        assert (answer.counts.ok, answer.counts.unknown_user) == (1, 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0


def test_fs_grpc_refuses_bad_settings_with_exit_2(env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "feature_store.transports.grpc_server", "--address",
                           f"127.0.0.1:{private_port()}"], env={**os.environ, **env, "FS_REDIS_URL": "http://nope"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "FS_REDIS_URL" in done.stderr and "Traceback" not in done.stderr
