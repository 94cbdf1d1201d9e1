"""The traffic shift through read_features served by functions-framework: routing by stable hash, the guard
rolling back by itself on errors and on a vector mismatch, a rollback from 50 %, bulk refresh routing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from conftest import REDIS_URL, closed_port, function_client
from feature_store.domain.migration_hash import to_target
from feature_store.migration_wiring import routed_bulk
from feature_store.stores.postgres_bulk import BulkSource
from feature_store.stores.redis_online import decode
from feature_store.wiring import Services

from .conftest import migration_env, rows
from .test_migration_backfill import backfill_all, verify_all

USERS = [f"u{n:09d}" for n in range(400)]
MOVED = [u for u in USERS if to_target(u, 50)]
STAYED = [u for u in USERS if not to_target(u, 50)]


@pytest.fixture
def at_50(pair: dict[str, Any], migration: Any) -> Iterator[Any]:
    phases = migration.phases
    phases.prepare()
    backfill_all(phases)
    assert verify_all(phases, "before-shift")["ok"]
    phases.shift(50, hold_s=0)
    yield phases


def age(client: Any, user_id: str) -> int:
    response = client.get(f"/api/v1/features/user/{user_id}")
    assert response.status_code == 200, response.get_json()
    return int(response.get_json()["features"]["demographics"]["age"])


def test_reads_of_users_under_the_percentage_go_to_the_target(pair: dict[str, Any], at_50: Any,
                                                              use_env: Callable[[dict[str, str]], None]) -> None:
    moved, stayed = MOVED[0], STAYED[0]
    rows(pair["target"], f"UPDATE users SET age = 111 WHERE user_id IN ('{moved}', '{stayed}')")
    use_env({**pair["env"], "FS_MIGRATION_SHADOW_SAMPLE": "0"})
    client = function_client("read_features")

    assert age(client, moved) == 111
    assert age(client, stayed) == rows(pair["source"], f"SELECT age FROM users WHERE user_id = '{stayed}'")[0][0]


def test_a_failing_target_trips_the_guard_and_no_read_fails(pair: dict[str, Any], at_50: Any,
                                                            use_env: Callable[[dict[str, str]], None]) -> None:
    use_env(migration_env(pair["source"], pair["target"], pair["prefix"], FS_MIGRATION_TARGET_PORT=str(closed_port()),
                          FS_MIGRATION_GUARD_MIN_READS="5", FS_MIGRATION_SHADOW_SAMPLE="0",
                          FS_POSTGRES_CONNECT_TIMEOUT_S="0.5"))
    client = function_client("read_features")

    ages = [age(client, u) for u in MOVED[:12]]  # every one answered, from the source
    time.sleep(1.1)  # the guard flushes its counts at most once a second
    age(client, MOVED[12])
    held = at_50.shifter.hold(60, budget_s=2)

    assert len(ages) == 12
    assert held["tripped"] and held["reason"].startswith("error_rate") and held["percent"] == 0
    assert at_50.routing.read().percent == 0


def test_a_vector_that_differs_between_the_databases_trips_the_guard(pair: dict[str, Any], at_50: Any,
                                                                     use_env: Callable[[dict[str, str]], None]) -> None:
    moved = MOVED[1]
    rows(pair["target"], f"UPDATE users SET age = age + 5 WHERE user_id = '{moved}'")  # the replication never did
    use_env({**pair["env"], "FS_MIGRATION_SHADOW_SAMPLE": "1", "FS_MIGRATION_RECHECK_ATTEMPTS": "1"})
    client = function_client("read_features")

    age(client, moved)
    deadline = time.monotonic() + 20
    while not at_50.routing.read().tripped and time.monotonic() < deadline:
        time.sleep(0.1)

    route = at_50.routing.read()
    assert route.tripped and route.reason.startswith("vector_mismatch") and route.percent == 0


def test_a_rollback_from_50_percent_drops_the_vectors_of_the_users_going_back(
        pair: dict[str, Any], at_50: Any, use_env: Callable[[dict[str, str]], None]) -> None:
    use_env({**pair["env"], "FS_MIGRATION_SHADOW_SAMPLE": "0"})
    client = function_client("read_features")
    for user_id in MOVED[:5] + STAYED[:5]:
        age(client, user_id)
    cached = redis.Redis.from_url(REDIS_URL)
    keys = {u: [k for k in cached.scan_iter(f"{pair['prefix']}:*:u:{u}")] for u in MOVED[:5] + STAYED[:5]}

    answer = at_50.rollback("rb-50", to_percent=0)

    assert answer["percent"] == 0 and answer["dropped_vectors"] >= 5
    assert all(not cached.exists(*keys[u]) for u in MOVED[:5])  # recomputed from the source on the next read
    assert all(cached.exists(*keys[u]) for u in STAYED[:5])
    assert at_50.routing.read().percent == 0


def test_bulk_refresh_reads_each_user_from_its_database(pair: dict[str, Any], at_50: Any) -> None:
    from feature_store.settings import Settings

    moved, stayed = MOVED[2], STAYED[2]
    rows(pair["target"], f"UPDATE users SET age = 122 WHERE user_id IN ('{moved}', '{stayed}')")
    base = Services(Settings.from_env(pair["env"]))
    bulk = routed_bulk(base, BulkSource(base.bulk_postgres, base.dialect))

    vectors = {v.user_id: v.value for v in bulk.vectors_in_range("u", None)}
    by_ids = bulk.vectors_for([moved, stayed, "u-nobody"])

    assert set(vectors) == set(USERS)
    ages = {u: getattr(decode(u, vectors[u]), "age", None) for u in (moved, stayed)}
    assert ages[moved] == 122 and ages[stayed] != 122
    assert {v.user_id for v in by_ids.vectors} == {moved, stayed} and by_ids.missing == ["u-nobody"]
