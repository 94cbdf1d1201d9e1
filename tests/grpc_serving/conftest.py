"""A real gRPC server (transports/grpc_server.py) on a private port, over the test's seeded database and
Redis prefix, and a real channel to it. The server shares this process's ``services()`` with the
functions that ``function_client`` serves, so REST and gRPC read through the very same reader."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

PRIVATE_PORTS = range(18500, 18600)  # this work's private range on the shared machine


def private_port() -> int:
    """A free loopback port of the private range."""
    for port in PRIVATE_PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18500-18599")


@pytest.fixture
def grpc_target(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> Iterator[str]:
    """``host:port`` of a server started on the test's environment (which ``use_env`` made current)."""
    from feature_store.transports.grpc_server import GrpcServer

    use_env(env)
    server = GrpcServer(f"127.0.0.1:{private_port()}", threads=4).start()
    yield server.address
    server.stop(0)


class WithKey(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds ``x-api-key`` metadata to every call (the test suite's client: tests/conftest.py)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), ("x-api-key", self.key)]
        return continuation(details._replace(metadata=metadata), request)


@contextmanager
def keyed_channel(target: str, key: str | None = None) -> Iterator[grpc.Channel]:
    """A channel whose calls carry an API key (default: the test suite's)."""
    from conftest import TEST_KEY

    with grpc.insecure_channel(target) as ch:
        yield grpc.intercept_channel(ch, WithKey(key or TEST_KEY))


@pytest.fixture
def channel(grpc_target: str) -> Iterator[grpc.Channel]:
    with keyed_channel(grpc_target) as ch:
        yield ch


@pytest.fixture
def bare_channel(grpc_target: str) -> Iterator[grpc.Channel]:
    """A channel without credentials."""
    with grpc.insecure_channel(grpc_target) as ch:
        yield ch


def call(channel: grpc.Channel, method: str, request: Any, timeout: float = 10.0) -> Any:
    """One unary call of featurestore.v1 through the channel, decoded by the generated classes."""
    from feature_store_client.v1 import METHODS

    m = METHODS[method]
    stub = channel.unary_unary(m.path, request_serializer=m.request.SerializeToString,
                               response_deserializer=m.response.FromString)
    return stub(request, timeout=timeout)
