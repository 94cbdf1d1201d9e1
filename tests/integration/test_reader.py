"""The reader service and the Redis store over real PostgreSQL and Redis, with a controllable clock."""

from __future__ import annotations

import time
from typing import Any

import redis

from conftest import REDIS_URL, Databases, admin_connection, base_env
from feature_store.domain.catalog import CREDIT_DECISION_V1
from feature_store.domain.state import UserState
from feature_store.services.breaker import CircuitBreaker
from feature_store.services.reader import Reader
from feature_store.settings import Settings
from feature_store.stores.dialect import POSTGRESQL
from feature_store.stores.ports import Tombstone
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.redis_online import KeyLayout, RedisOnlineStore
from feature_store.stores.source import SourceStore


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_reader(database: str, prefix: str, clock: Clock) -> tuple[Reader, RedisOnlineStore, PostgresPool]:
    pool = PostgresPool(Settings.from_env(base_env(database)).postgres, generic_plans=True)
    store = RedisOnlineStore(redis.Redis.from_url(REDIS_URL), KeyLayout(prefix), 3600, 600)
    reader = Reader(store, SourceStore(pool, POSTGRESQL), CircuitBreaker("redis", 5, 5),
                    CircuitBreaker("postgres", 5, 5), clock=clock)
    return reader, store, pool


def test_cached_velocity_moves_with_the_clock_without_any_job(databases: Databases, redis_prefix: str) -> None:
    name = databases.create()
    conn = admin_connection(name)
    conn.run("INSERT INTO users (user_id, signup_date) VALUES ('alice', CURRENT_DATE - 30)")
    conn.run("INSERT INTO transactions VALUES ('t1', 'alice', 120.00, 'USD', 'm1', 'books', 'completed', "
             "now() - INTERVAL '59 minutes')")
    conn.close()
    clock = Clock(time.time())
    reader, _, pool = make_reader(name, redis_prefix, clock)
    try:
        first = reader.read(CREDIT_DECISION_V1, ["alice"]).results[0]
        clock.now += 61
        later = reader.read(CREDIT_DECISION_V1, ["alice"]).results[0]
        clock.now += 23 * 3600
        next_day = reader.read(CREDIT_DECISION_V1, ["alice"]).results[0]
    finally:
        pool.close()
    assert first.cache_hit is False and later.cache_hit is True and next_day.cache_hit is True
    assert first.features is not None and later.features is not None and next_day.features is not None
    assert (first.features["velocity"]["orders_1h"], first.features["velocity"]["orders_24h"]) == (1, 1)
    assert (later.features["velocity"]["orders_1h"], later.features["velocity"]["orders_24h"]) == (0, 1)
    assert (next_day.features["velocity"]["orders_24h"], next_day.features["velocity"]["orders_7d"]) == (0, 1)
    assert next_day.features["behavior"]["last_order_days"] == 1


def test_compare_and_set_keeps_the_newest_watermark(redis_prefix: str, redis_client: redis.Redis) -> None:
    store = RedisOnlineStore(redis_client, KeyLayout(redis_prefix), 3600, 600)
    old = UserState(user_id="bob", computed_at=1.0, watermark=100, age=30)
    new = UserState(user_id="bob", computed_at=2.0, watermark=200, age=31)

    assert store.put_if_newer([new]) == 1
    assert store.put_if_newer([old]) == 0
    assert store.get_many(["bob"]) == [new]
    assert store.put_if_newer([UserState(user_id="bob", computed_at=3.0, watermark=200, age=32)]) == 1
    assert store.put_if_newer([Tombstone("bob", 150)]) == 0
    assert store.put_if_newer([Tombstone("bob", 250)]) == 1
    assert store.get_many(["bob", "nobody"]) == [Tombstone("bob", 250), None]
    assert 0 < redis_client.pttl(f"{redis_prefix}:s3:u:bob") <= 600_000


def test_writes_reload_their_script_after_redis_forgot_it(redis_prefix: str, redis_client: redis.Redis) -> None:
    # Scripts are sent by SHA (one round trip); a Redis restart or SCRIPT FLUSH forgets them.
    store = RedisOnlineStore(redis_client, KeyLayout(redis_prefix), 3600, 600)
    redis_client.script_flush()
    states = [UserState(user_id=f"s{i}", computed_at=1.0, watermark=10 + i) for i in range(3)]

    assert store.put_if_newer(states) == 3
    assert redis_client.script_exists(store._put.sha) == [True]
    assert store.get_many(["s0", "s1", "s2"]) == states
    assert store.put_if_newer([UserState(user_id="s1", computed_at=0.5, watermark=5)]) == 0


def test_a_cached_tombstone_answers_unknown_user_without_the_source(
        seeded_database: dict[str, Any], redis_prefix: str) -> None:
    reader, store, pool = make_reader(seeded_database["database"], redis_prefix, Clock(time.time()))
    try:
        store.put_if_newer([Tombstone("u000000001", 2**70)])
        result = reader.read(CREDIT_DECISION_V1, ["u000000001"]).results[0]
    finally:
        pool.close()
    assert (result.status, result.cache_hit) == ("unknown_user", True)


def test_breaker_opens_after_failures_and_probes_after_the_reset() -> None:
    clock = Clock(0.0)
    breaker = CircuitBreaker("x", failures=2, reset_s=10, clock=clock)
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow() and breaker.state == "open"
    clock.now = 10
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 20
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_reads_survive_the_server_closing_idle_connections(redis_prefix: str, redis_client: redis.Redis) -> None:
    name = f"{redis_prefix}-idle"
    store = RedisOnlineStore(redis.Redis.from_url(REDIS_URL, client_name=name),
                             KeyLayout(redis_prefix), 3600, 600)
    state = UserState(user_id="carol", computed_at=1.0, watermark=5, age=40)
    store.put_if_newer([state])
    assert store.get_many(["carol"]) == [state]

    ours = [c["id"] for c in redis_client.client_list() if c.get("name") == name]
    for client_id in ours:
        redis_client.client_kill_filter(_id=client_id)

    assert ours
    assert store.get_many(["carol"]) == [state]  # the stale connection is replaced, once, silently
