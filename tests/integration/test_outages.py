"""Outages of the source and the online store as the read path sees them, on real servers and on
fake PostgreSQL servers that fail the way a real one does while it shuts down or restarts.

The fake servers speak just enough of PostgreSQL's wire protocol (the startup packet, then an
ErrorResponse or nothing) to reproduce, on demand, what pg8000 meets during a shutdown: SQLSTATE
57P03 from connect(), 57P01 on an established session, a closed socket, silence.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from conftest import REDIS_URL, admin_connection, base_env, closed_port, function_client
from feature_store.domain.catalog import CREDIT_DECISION_V1
from feature_store.domain.state import UserState
from feature_store.errors import DependencyTimeout, DependencyUnavailable
from feature_store.services.breaker import CircuitBreaker
from feature_store.services.reader import Reader
from feature_store.settings import Settings
from feature_store.stores.dialect import POSTGRESQL
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.redis_online import KeyLayout, RedisOnlineStore
from feature_store.stores.source import SourceStore


def error_response(sqlstate: str, message: str, severity: str = "FATAL") -> bytes:
    fields = b"".join(code + text.encode() + b"\0" for code, text in
                      ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message)))
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


class FakePostgres:
    """Accepts connections, reads the startup packet and then behaves as ``answer`` says."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = int(self.server.getsockname()[1])
        self.answer = answer
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            self.held.append(client)
            try:
                client.settimeout(2)
                (length,) = struct.unpack("!i", client.recv(4))
                client.recv(length - 4)
                self.answer(client)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.held:
            s.close()
        self.server.close()


def _fatal(sqlstate: str, message: str) -> Callable[[socket.socket], None]:
    """What a server that refuses the session sends: a FATAL ErrorResponse, then it closes."""

    def answer(client: socket.socket) -> None:
        client.sendall(error_response(sqlstate, message))
        client.close()

    return answer


def _closes(client: socket.socket) -> None:
    client.close()


def _truncated(client: socket.socket) -> None:
    client.sendall(error_response("57P03", "the database system is shutting down")[:9])
    client.close()


def _silent(client: socket.socket) -> None:
    pass  # keeps the socket open and says nothing


BEHAVIOURS = {"57P03 shutting down": _fatal("57P03", "the database system is shutting down"),
              "57P03 starting up": _fatal("57P03", "the database system is starting up"),
              "57P01 admin shutdown": _fatal("57P01", "terminating connection due to administrator command"),
              "57P02 crash shutdown": _fatal("57P02", "terminating connection because of crash of another server"),
              "53300 too many clients": _fatal("53300", "sorry, too many clients already"),
              "closed at once": _closes, "truncated reply": _truncated, "silent": _silent}


@pytest.fixture(params=sorted(BEHAVIOURS))
def fake_postgres(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakePostgres]]:
    server = FakePostgres(BEHAVIOURS[request.param])
    yield request.param, server
    server.close()


def pool_on(port: int, database: str = "postgres") -> PostgresPool:
    env = {**base_env(database), "FS_POSTGRES_PORT": str(port), "FS_POSTGRES_CONNECT_TIMEOUT_S": "0.5"}
    return PostgresPool(Settings.from_env(env).postgres, generic_plans=True)


def test_every_connect_failure_is_a_dependency_outage(fake_postgres: tuple[str, FakePostgres]) -> None:
    name, server = fake_postgres
    pool = pool_on(server.port)

    with pytest.raises(DependencyUnavailable) as raised, pool.connection() as conn:
        conn.run("SELECT 1")

    assert isinstance(raised.value, DependencyTimeout) == (name == "silent"), raised.value.message
    assert raised.value.code == "dependency_unavailable"


def test_a_connect_during_shutdown_is_503_with_retry_after(
        fake_postgres: tuple[str, FakePostgres], env: dict[str, str],
        use_env: Callable[[dict[str, str]], None]) -> None:
    _, server = fake_postgres
    use_env({**env, "FS_POSTGRES_PORT": str(server.port), "FS_POSTGRES_CONNECT_TIMEOUT_S": "0.5"})

    response = function_client("read_features").get("/api/v1/features/user/u000000777")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["code"] == "dependency_unavailable"


def test_pooled_connections_killed_by_a_restart_are_replaced(seeded_database: dict[str, Any]) -> None:
    pool = pool_on(int(base_env("x")["FS_POSTGRES_PORT"]), seeded_database["database"])
    try:
        pids = []
        with pool.connection() as a, pool.connection() as b:
            pids = [a.run("SELECT pg_backend_pid()")[0][0], b.run("SELECT pg_backend_pid()")[0][0]]
        admin = admin_connection()
        try:
            for pid in pids:  # what a restart does to every session: 57P01, then the socket closes
                admin.run("SELECT pg_terminate_backend(:p, 5000)", p=pid)
        finally:
            admin.close()

        with pool.connection() as conn:
            first = conn.run("SELECT pg_backend_pid()")[0][0]
    finally:
        pool.close()

    assert first not in pids
    assert pool.replaced >= 1


def test_a_session_terminated_mid_use_is_dropped_and_unavailable(seeded_database: dict[str, Any]) -> None:
    pool = pool_on(int(base_env("x")["FS_POSTGRES_PORT"]), seeded_database["database"])
    try:
        with pytest.raises(DependencyUnavailable), pool.connection() as conn:
            pid = conn.run("SELECT pg_backend_pid()")[0][0]
            admin = admin_connection()
            admin.run("SELECT pg_terminate_backend(:p, 5000)", p=pid)
            admin.close()
            conn.run("SELECT 1")
        with pool.connection() as conn:
            assert conn.run("SELECT 1") == [[1]]
    finally:
        pool.close()


# --- the breakers --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_failures_does_not_open_a_breaker_a_sustained_run_does() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", failures=5, reset_s=5, min_failing_s=1.0, clock=clock)
    for _ in range(50):  # fifty failures within 100 ms: one scheduling hiccup
        breaker.failure()
        clock.now += 0.002
    assert breaker.state == "closed"
    breaker.success()
    for step in range(6):
        clock.now = 10 + step * 0.125
        breaker.failure()
    assert breaker.state == "closed"  # six failures, but over 0.625 s: not yet a whole second
    clock.now = 11
    breaker.failure()
    assert breaker.state == "open"


def test_a_success_in_between_restarts_the_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", failures=3, reset_s=5, min_failing_s=0.5, clock=clock)
    for _ in range(20):
        breaker.failure()
        breaker.failure()
        breaker.success()  # a starved process still sees most calls succeed
        clock.now += 0.2
    assert breaker.state == "closed"


def test_a_timeout_that_overran_its_limit_is_our_starvation_not_an_outage() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", failures=2, reset_s=5, call_timeout_s=0.010, clock=clock)
    for _ in range(10):
        breaker.timed_out(0.060)  # a 10 ms timeout noticed after 60 ms: this thread was not running
    assert breaker.state == "closed" and breaker.starved_timeouts == 10
    breaker.timed_out(0.011)
    breaker.timed_out(0.012)
    assert breaker.state == "open"


def test_starved_timeouts_count_once_nothing_has_succeeded_for_a_while() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", failures=5, reset_s=5, min_failing_s=1.0, call_timeout_s=0.010, clock=clock)
    for step in range(300):  # a hung dependency while this process is saturated: every timeout late
        clock.now = step * 0.01
        breaker.timed_out(0.060)
    assert breaker.state == "closed"  # 3 s without a success is not reached yet
    for step in range(300, 500):
        clock.now = step * 0.01
        breaker.timed_out(0.060)
    assert breaker.state == "open"


def test_a_starved_probe_frees_the_probe_without_reopening() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", failures=1, reset_s=1, call_timeout_s=0.010, clock=clock)
    breaker.failure()
    clock.now = 1
    assert breaker.allow()
    breaker.timed_out(0.5)  # late, one second into the silence: proves nothing
    assert breaker.state == "half-open" and breaker.allow()


# --- the reader: cached users while the source is down -------------------------------------------


@pytest.fixture
def cached_store(redis_prefix: str) -> RedisOnlineStore:
    store = RedisOnlineStore(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5), KeyLayout(redis_prefix), 3600, 600)
    store.put_if_newer([UserState(user_id="cached", computed_at=time.time(), watermark=7, age=33)])
    return store


def reader_with(store: RedisOnlineStore, redis_breaker: CircuitBreaker) -> Reader:
    source = SourceStore(pool_on(closed_port()), POSTGRESQL)  # the source is down
    return Reader(store, source, redis_breaker, CircuitBreaker("postgres", 1, 60))


def test_redis_breaker_open_and_source_down_reads_redis_anyway(cached_store: RedisOnlineStore) -> None:
    breaker = CircuitBreaker("redis", failures=1, reset_s=60)
    breaker.failure()  # opened by whatever earlier trouble: Redis answers now
    reader = reader_with(cached_store, breaker)

    outcome = reader.read(CREDIT_DECISION_V1, ["cached", "not-cached"])

    assert [r.status for r in outcome.results] == ["ok", "unavailable"]
    assert outcome.results[0].cache_hit and not outcome.degraded
    assert breaker.state == "closed"  # Redis answered: the forced read closed its breaker


BUSY_SCRIPT = """local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]
while true do t = redis.call('TIME'); if t[1] * 1000000 + t[2] - start > tonumber(ARGV[1]) then return 1 end end"""


def redis_busy_for(seconds: float) -> threading.Thread:
    """Redis made to answer nothing for ``seconds`` (a Lua busy loop sent from another connection): a server
    starved of CPU, as on a saturated machine. The thread is started and its script sent when this returns."""
    sent = threading.Event()
    client = redis.Redis.from_url(REDIS_URL)

    def busy() -> None:
        conn = client.connection_pool.get_connection()
        conn.send_command("EVAL", BUSY_SCRIPT, 0, int(seconds * 1_000_000))
        sent.set()
        conn.read_response(timeout=seconds + 5)
        client.connection_pool.release(conn)

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    assert sent.wait(5)
    time.sleep(0.03)  # the script's bytes reach Redis before the read's
    return thread


@pytest.mark.parametrize("last_resort_wait_s", [1.0, None])
def test_with_the_source_down_the_last_read_of_redis_waits_past_its_deadline(
        redis_prefix: str, last_resort_wait_s: float | None) -> None:
    """A reply later than the 10 ms read deadline degrades a read to the source; when the source cannot
    answer either, the reader's last read of Redis waits FS_REDIS_LAST_RESORT_TIMEOUT_MS for it instead
    of answering 503 (None: the store's deadline, the 503 this guards against)."""
    store = RedisOnlineStore(redis.Redis.from_url(REDIS_URL, socket_timeout=0.05), KeyLayout(redis_prefix), 3600, 600)
    store.put_if_newer([UserState(user_id="cached", computed_at=time.time(), watermark=7, age=33)])
    source = SourceStore(pool_on(closed_port()), POSTGRESQL)
    reader = Reader(store, source, CircuitBreaker("redis", 5, 60), CircuitBreaker("postgres", 1, 60),
                    last_resort_wait_s=last_resort_wait_s)

    busy = redis_busy_for(0.3)  # both reads (the first one, then the last resort) find Redis busy
    outcome = reader.read(CREDIT_DECISION_V1, ["cached"])
    busy.join()

    result = outcome.results[0]
    if last_resort_wait_s is None:
        assert result.status == "unavailable" and outcome.degraded_reason == "redis_timeout"
    else:
        assert (result.status, result.cache_hit, outcome.degraded) == ("ok", True, False)
        assert result.features["demographics"]["age"] == 33


def test_cached_users_are_served_while_the_source_breaker_is_open(cached_store: RedisOnlineStore) -> None:
    redis_breaker = CircuitBreaker("redis", failures=1, reset_s=60)
    reader = reader_with(cached_store, redis_breaker)
    reader.read(CREDIT_DECISION_V1, ["not-cached"])  # opens the source breaker
    redis_breaker.failure()  # and Redis's

    results = [reader.read(CREDIT_DECISION_V1, ["cached"]).results[0].status for _ in range(20)]

    assert results == ["ok"] * 20


def test_a_half_open_breaker_lets_a_last_resort_call_through_beside_the_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("postgres", failures=1, reset_s=5, clock=clock)
    breaker.failure()
    assert not breaker.allow(last_resort=True)  # open: within the reset time nobody calls
    clock.now = 5
    assert breaker.allow()  # the probe
    assert not breaker.allow() and breaker.allow(last_resort=True)
