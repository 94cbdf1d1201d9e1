"""Incremental refresh on a database of its own: exactly the changed users, resumable, never backwards."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pg8000.native
import pytest
import redis

from conftest import Databases, admin_connection, base_env
from feature_store.cli.generate import seed
from feature_store.domain.catalog import CREDIT_DECISION_V1, Instant
from feature_store.domain.synthetic import user_id
from feature_store.errors import Conflict, InvalidParameter
from feature_store.settings import Settings
from feature_store.stores.ports import Tombstone
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.redis_online import KeyLayout, decode
from feature_store.wiring import services
from reference import reference_features

USERS = 200


@pytest.fixture
def source(databases: Databases, redis_prefix: str,
           use_env: Callable[[dict[str, str]], None]) -> Iterator[pg8000.native.Connection]:
    """A connection to a fresh database of 200 seeded users; services() point at it (50-user chunks)."""
    name = databases.create()
    pool = PostgresPool(Settings.from_env(base_env(name)).postgres)
    try:
        with pool.connection() as conn:
            seed(conn, USERS, 7, datetime.now(UTC).replace(microsecond=0), workers=1, reset=False)
    finally:
        pool.close()
    use_env({**base_env(name, redis_prefix), "FS_REFRESH_CHUNK_USERS": os.environ.get("FS_REFRESH_CHUNK_USERS", "50"),
             "FS_REFRESH_INCREMENTAL_OVERLAP_S": "0"})
    time.sleep(0.01)  # the seed's rows are stamped strictly before anything below
    conn = admin_connection(name)
    yield conn
    conn.close()


def change_three_users(conn: pg8000.native.Connection) -> list[str]:
    """An order, a profile update and a payment: three users, each changed through a different table."""
    conn.run("INSERT INTO transactions VALUES ('live-1', :u, 99.00, 'USD', 'm00042', 'books', 'completed', now())",
             u=user_id(5))
    conn.run("UPDATE users SET income_bracket = 'high', updated_at = now() WHERE user_id = :u", u=user_id(9))
    payer = conn.run("SELECT user_id FROM installments WHERE paid_at IS NULL AND user_id NOT IN (:a, :b) "
                     "ORDER BY user_id LIMIT 1", a=user_id(5), b=user_id(9))[0][0]
    conn.run("UPDATE installments SET paid_at = now() WHERE (plan_id, seq) IN (SELECT plan_id, seq FROM installments "
             "WHERE user_id = :u AND paid_at IS NULL ORDER BY due_date LIMIT 1)", u=payer)
    return sorted([user_id(5), user_id(9), payer])


def cached(client: redis.Redis, prefix: str, uid: str) -> Any:
    raw = client.get(KeyLayout(prefix).user(uid))
    return None if raw is None else decode(uid, raw)


def test_only_the_changed_users_are_recomputed_and_they_match_the_reference(
        source: pg8000.native.Connection, redis_client: redis.Redis, redis_prefix: str) -> None:
    refresher = services().refresher
    refresher.full("credit_decision")
    before = {u: cached(redis_client, redis_prefix, u) for u in (user_id(5), user_id(9), user_id(10))}
    changed = change_three_users(source)

    out = refresher.incremental("credit_decision")

    assert out["done"] is True and out["progress"]["done"] == 3 and out["written"] == 3
    assert out["since"] == refresher.state.materialized()["started_at"]  # type: ignore[index]
    for uid in changed:
        state = cached(redis_client, redis_prefix, uid)
        assert state is not None and not isinstance(state, Tombstone)
        at = state.computed_at + 1
        assert CREDIT_DECISION_V1.evaluate(state, Instant(at)) == reference_features(source, uid, at), uid
    assert cached(redis_client, redis_prefix, user_id(10)) == before[user_id(10)]  # untouched
    assert cached(redis_client, redis_prefix, user_id(5)).total_orders == before[user_id(5)].total_orders + 1
    assert refresher.state.since() == out["watermark"]

    again = refresher.incremental("credit_decision")

    assert again["done"] is True and again["progress"]["done"] == 0 and again["since"] == out["watermark"]
    assert again["watermark"] >= out["watermark"]


@pytest.fixture
def one_user_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FS_REFRESH_CHUNK_USERS", "1")  # read by the source fixture


def test_a_pass_stops_at_its_budget_and_the_next_call_goes_on_from_there(
        one_user_chunks: None, source: pg8000.native.Connection) -> None:
    refresher = services().refresher
    assert refresher.incremental("credit_decision")["initialized"] is True  # nothing stored yet
    since = datetime.now(UTC)
    change_three_users(source)

    first = refresher.incremental("credit_decision", since=since, max_chunks=2)
    state = refresher.state
    lock = state.lock_key("incremental")
    state.client.set(lock, "someone-else", px=60_000)
    with pytest.raises(Conflict) as refused:
        refresher.incremental("credit_decision")
    state.client.delete(lock)
    rest = refresher.incremental("credit_decision")

    assert first["done"] is False and first["progress"]["done"] == 2 and first["next"]["mode"] == "incremental"
    assert refused.value.code == "refresh_in_progress"
    assert rest["done"] is True and rest["progress"]["done"] == 3 and rest["written"] == 1
    assert rest["since"] == first["since"]
    with pytest.raises(InvalidParameter) as future:
        refresher.incremental("credit_decision", since=datetime(2999, 1, 1, tzinfo=UTC))
    assert future.value.code == "watermark_in_future"
