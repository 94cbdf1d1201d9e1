"""Retries, deadlines and hedging of feature_store_client against servers that really fail: the functions and
the gRPC server with their PostgreSQL unreachable (503 / UNAVAILABLE with a retry delay of 1 s), a Redis that
never answers (a slow server), a port nothing listens on. Waits are recorded, not slept."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import TEST_KEY, closed_port
from feature_store.domain.synthetic import user_id
from feature_store_client import DeadlineExceeded, FeatureStoreClient, InvalidRequest, Unauthenticated, Unavailable
from feature_store_client.calls import CallPolicy

from .conftest import private_port


def counted(client: FeatureStoreClient) -> tuple[list[str], list[float]]:
    """Count the client's attempts (its real transport still makes them) and record its waits."""
    attempts: list[str] = []
    waits: list[float] = []
    for name in ("read_one", "read_batch"):
        real = getattr(client.transport, name)

        def attempt(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            attempts.append(_name)
            return _real(*args, **kwargs)

        setattr(client.transport, name, attempt)
    client.policy.sleep = waits.append
    return attempts, waits


@pytest.fixture
def source_down(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FS_POSTGRES_PORT": str(closed_port()), "FS_POSTGRES_CONNECT_TIMEOUT_S": "1"}


@pytest.fixture
def failing_clients(source_down: dict[str, str], use_env: Callable[[dict[str, str]], None],
                    functions: Callable[[dict[str, str]], tuple[str, str]]) -> Iterator[list[FeatureStoreClient]]:
    from feature_store.transports.grpc_server import GrpcServer

    single, batch = functions(source_down)
    use_env(source_down)
    server = GrpcServer(f"127.0.0.1:{private_port()}", threads=2).start()
    made = [FeatureStoreClient.over_rest(single, batch_url=batch, timeout_s=10, api_key=TEST_KEY),
            FeatureStoreClient.over_grpc(server.address, api_key=TEST_KEY, timeout_s=10)]
    yield made
    for client in made:
        client.close()
    server.stop(0)


def test_unavailable_is_retried_no_sooner_than_the_server_says(failing_clients: list[FeatureStoreClient]) -> None:
    for client in failing_clients:
        attempts, waits = counted(client)

        with pytest.raises(Unavailable) as failed:
            client.get_online_features(user_id(20))

        assert (failed.value.code, failed.value.retry_after_s) == ("dependency_unavailable", 1.0)
        assert attempts == ["read_one"] * 3
        assert len(waits) == 2 and min(waits) >= 1.0


def test_a_retry_that_would_pass_the_deadline_is_not_waited_for(failing_clients: list[FeatureStoreClient]) -> None:
    for client in failing_clients:
        attempts, waits = counted(client)

        with pytest.raises(Unavailable):
            client.get_online_features(user_id(21), timeout_s=3.0)  # each miss fails within ~1 s; 1 s waits

        assert waits == [] or sum(waits) < 3.0
        assert len(attempts) == len(waits) + 1


def test_4xx_is_never_retried(failing_clients: list[FeatureStoreClient]) -> None:
    # With the source down from the start no key can be resolved (503): the 4xx here need no lookup.
    rest, over_grpc = failing_clients
    for client in failing_clients:
        attempts, waits = counted(client)

        with pytest.raises(InvalidRequest):
            client.get_online_features("not a user id")
        assert (attempts, waits) == (["read_one"], [])

    rest.transport.headers.pop("X-API-Key")  # type: ignore[attr-defined]
    over_grpc.transport.metadata = ()  # type: ignore[attr-defined]
    for client in failing_clients:
        attempts, waits = counted(client)

        with pytest.raises(Unauthenticated) as failed:
            client.get_online_features(user_id(22))

        assert failed.value.code == "unauthenticated" and (attempts, waits) == (["read_one"], [])


def test_a_refused_connection_is_unavailable_and_retried() -> None:
    for client in (FeatureStoreClient.over_rest(f"http://127.0.0.1:{closed_port()}", timeout_s=5),
                   FeatureStoreClient.over_grpc(f"127.0.0.1:{closed_port()}", timeout_s=5)):
        attempts, waits = counted(client)
        with pytest.raises(Unavailable) as failed:
            client.get_online_features([user_id(1)])
        client.close()
        assert failed.value.code == "connection_failed" and len(attempts) == 3 and len(waits) == 2


@pytest.fixture
def silent_redis() -> Iterator[int]:
    """A TCP server that accepts and never answers: a Redis slower than any deadline."""
    server = socket.socket()
    server.bind(("127.0.0.1", private_port()))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for s in held:
        s.close()
    server.close()


def test_a_slow_server_meets_the_deadline(env: dict[str, str], use_env: Callable[[dict[str, str]], None],
                                          silent_redis: int,
                                          functions: Callable[[dict[str, str]], tuple[str, str]]) -> None:
    from feature_store.transports.grpc_server import GrpcServer

    slow = {**env, "FS_REDIS_URL": f"redis://127.0.0.1:{silent_redis}/0", "FS_REDIS_SOCKET_TIMEOUT_MS": "20000",
            "FS_REDIS_CONNECT_TIMEOUT_MS": "20000"}
    single, batch = functions(slow)
    use_env(slow)
    server = GrpcServer(f"127.0.0.1:{private_port()}", threads=2).start()
    try:
        for client in (FeatureStoreClient.over_rest(single, batch_url=batch, api_key=TEST_KEY),
                       FeatureStoreClient.over_grpc(server.address, api_key=TEST_KEY)):
            attempts, _ = counted(client)
            with pytest.raises(DeadlineExceeded):
                client.get_online_features([user_id(1)], timeout_s=0.5)
            client.close()
            assert attempts == ["read_batch"]
    finally:
        server.stop(0)


def test_hedging_sends_a_second_request_when_the_first_is_slow_and_takes_the_first_answer() -> None:
    release = threading.Event()
    calls: list[int] = []

    def attempt(timeout: float) -> str:
        calls.append(len(calls))
        if len(calls) == 1:
            release.wait(timeout)  # the first request hangs until the test ends
            return "slow"
        return "hedged"

    policy = CallPolicy(hedge_after_s=0.05)
    try:
        assert policy.run(attempt, 5.0) == "hedged"
        assert calls == [0, 1]
    finally:
        release.set()
        policy.close()


def test_no_hedge_when_the_first_answer_comes_in_time() -> None:
    calls: list[float] = []
    policy = CallPolicy(hedge_after_s=5.0)
    assert policy.run(lambda timeout: calls.append(timeout) or "fast", 10.0) == "fast"
    policy.close()
    assert len(calls) == 1
