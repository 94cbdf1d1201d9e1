"""Every refresh mode against the seeded PostgreSQL database and a per-test Redis prefix."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from conftest import SEED_USERS, admin_connection, function_client
from feature_store.domain.catalog import CREDIT_DECISION_V1, CREDIT_DECISION_V2, Instant
from feature_store.domain.synthetic import user_id
from feature_store.errors import Conflict, NotFound
from feature_store.services.refresh import Refresher
from feature_store.stores.ports import Tombstone
from feature_store.stores.redis_online import KeyLayout, decode
from feature_store.wiring import services
from reference import reference_features

CHUNK = 500


@pytest.fixture
def refresher(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> Refresher:
    use_env({**env, "FS_REFRESH_CHUNK_USERS": str(CHUNK), "FS_REFRESH_VERSION_CACHE_S": "0"})
    return services().refresher


def user_keys(client: redis.Redis, prefix: str) -> dict[str, bytes]:
    layout = KeyLayout(prefix)
    keys = sorted(client.scan_iter(layout.user_pattern(), count=5000))
    values = client.mget(keys) if keys else []
    return {k.decode().rsplit(":", 1)[1]: v for k, v in zip(keys, values, strict=True)}


def test_a_full_run_materializes_every_user_exactly_as_the_reference_computes(
        refresher: Refresher, redis_client: redis.Redis, redis_prefix: str, seeded_database: dict[str, Any]) -> None:
    out = refresher.full("credit_decision")

    assert out["done"] is True and out["next"] is None
    assert out["progress"]["done"] == out["progress"]["total"] == SEED_USERS == out["written"]
    values = user_keys(redis_client, redis_prefix)
    assert sorted(values) == [user_id(n) for n in range(SEED_USERS)]
    assert redis_client.pttl(KeyLayout(redis_prefix).user(user_id(0))) > 6 * 86400 * 1000
    conn = admin_connection(seeded_database["database"])
    try:
        for uid in random.Random(5).sample(sorted(values), 60):
            state = decode(uid, values[uid])
            assert not isinstance(state, Tombstone)
            at = state.computed_at + 1
            assert CREDIT_DECISION_V1.evaluate(state, Instant(at)) == reference_features(conn, uid, at), uid
    finally:
        conn.close()
    record = refresher.state.materialized()
    assert record is not None and record["run_id"] == out["run_id"] and record["users"] == str(SEED_USERS)


def test_a_run_stops_at_its_budget_resumes_from_its_checkpoint_and_refuses_a_second_run(
        refresher: Refresher, redis_client: redis.Redis, redis_prefix: str) -> None:
    first = refresher.full("credit_decision", max_chunks=2)

    assert first["done"] is False and first["progress"]["done"] == 2 * CHUNK
    assert first["next"] == {"mode": "full", "feature_set": "credit_decision", "version": 1,
                             "run_id": first["run_id"]}
    assert len(user_keys(redis_client, redis_prefix)) == 2 * CHUNK
    with pytest.raises(Conflict) as refused:
        refresher.full("credit_decision")
    assert refused.value.code == "refresh_in_progress" and first["run_id"] in refused.value.message
    assert refresher.state.materialized() is None

    second = refresher.full("credit_decision", run_id=first["run_id"], max_chunks=1)
    last = refresher.full("credit_decision", run_id=first["run_id"])
    again = refresher.full("credit_decision", run_id=first["run_id"])

    assert second["progress"]["done"] == 3 * CHUNK and second["done"] is False
    assert last["done"] is True and last["progress"]["done"] == SEED_USERS
    assert last["written"] == SEED_USERS - 3 * CHUNK  # resumed where it stopped: nothing written twice
    assert again["done"] is True and again["written"] == 0
    assert len(user_keys(redis_client, redis_prefix)) == SEED_USERS
    assert refresher.full("credit_decision", max_chunks=1)["done"] is False  # the lock went with the run


def test_an_expired_lock_lets_a_new_run_start_and_the_old_one_is_refused(
        refresher: Refresher, redis_client: redis.Redis) -> None:
    old = refresher.full("credit_decision", max_chunks=1)
    redis_client.delete(refresher.state.lock_key("full"))  # as if it had expired

    new = refresher.full("credit_decision", max_chunks=1)

    assert new["run_id"] != old["run_id"]
    with pytest.raises(Conflict) as refused:
        refresher.full("credit_decision", run_id=old["run_id"])
    assert refused.value.code == "refresh_in_progress"
    with pytest.raises(NotFound) as unknown:
        refresher.full("credit_decision", run_id="20200101T000000Z-000000")
    assert unknown.value.code == "unknown_run"


def test_writes_are_compare_and_set_on_the_watermark(
        refresher: Refresher, redis_client: redis.Redis, redis_prefix: str) -> None:
    layout = KeyLayout(redis_prefix)
    newer = "f" * 24 + "-"
    redis_client.set(layout.user(user_id(3)), newer)
    redis_client.set(layout.user(user_id(4)), "0" * 24 + "-")

    out = refresher.full("credit_decision")

    assert out["written"] == SEED_USERS - 1
    assert redis_client.get(layout.user(user_id(3))) == newer.encode()
    assert not isinstance(decode(user_id(4), redis_client.get(layout.user(user_id(4))) or b""), Tombstone)


def test_shards_worked_by_parallel_invocations_cover_every_user_once(
        refresher: Refresher, redis_client: redis.Redis, redis_prefix: str) -> None:
    run_id = refresher.start_full("credit_decision", shards=3)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def invoke() -> None:
        try:
            results.append(refresher.full("credit_decision", run_id=run_id))
        except BaseException as exc:  # re-raised below in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=invoke) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = refresher.full("credit_decision", run_id=run_id)

    assert errors == []
    assert final["done"] is True and final["shards"] == 3 and final["shards_done"] == 3
    assert final["progress"]["done"] == SEED_USERS  # no range was done twice
    assert sum(r["written"] for r in results) == SEED_USERS
    assert len(user_keys(redis_client, redis_prefix)) == SEED_USERS


def test_every_version_shares_the_states_and_the_switch_is_one_pointer(
        refresher: Refresher, env: dict[str, str], redis_client: redis.Redis, redis_prefix: str) -> None:
    admin = services().cache_admin
    with pytest.raises(Conflict) as refused:
        admin.switch("credit_decision", 2)
    assert refused.value.code == "version_not_materialized"

    out = refresher.full("credit_decision", version=1)
    states = user_keys(redis_client, redis_prefix)

    assert out["version"] == 1 and out["done"] is True and len(states) == SEED_USERS
    read = function_client("read_features")
    uid = user_id(11)
    assert read.get(f"/api/v1/features/user/{uid}").get_json()["version"] == 1

    switched = admin.switch("credit_decision", 2)  # v1's run materialized the states v2 reads too

    assert switched["previous"] is None and switched["version"] == 2
    assert redis_client.get(KeyLayout(redis_prefix).active("credit_decision")) == b"2"
    body = read.get(f"/api/v1/features/user/{uid}").get_json()
    assert body["version"] == 2 and body["cache_hit"] is True
    assert set(body["features"]["velocity"]) == {f.name for f in CREDIT_DECISION_V2.features if f.group == "velocity"}
    pinned = read.get(f"/api/v1/features/user/{uid}?version=1").get_json()
    assert pinned["version"] == 1 and pinned["cache_hit"] is True and "amount_1h" not in pinned["features"]["velocity"]
    batch = function_client("read_features_batch").post("/api/v1/features/batch", json={"user_ids": [uid]})
    assert batch.get_json()["version"] == 2
    assert user_keys(redis_client, redis_prefix) == states  # one state per user, whatever was served
    assert admin.switch("credit_decision", 1)["previous"] == 2


def test_users_mode_writes_the_named_users_and_tombstones_the_unknown(
        refresher: Refresher, redis_client: redis.Redis, redis_prefix: str) -> None:
    out = refresher.users("credit_decision", [user_id(1), "nobody", user_id(2), user_id(1)])

    assert out["requested"] == 3 and out["written"] == 3 and out["unknown_users"] == ["nobody"]
    values = user_keys(redis_client, redis_prefix)
    assert sorted(values) == ["nobody", user_id(1), user_id(2)]
    assert isinstance(decode("nobody", values["nobody"]), Tombstone)
    assert redis_client.pttl(KeyLayout(redis_prefix).user("nobody")) <= 86400 * 1000


def test_partial_refreshes_write_the_states_every_version_reads(refresher: Refresher) -> None:
    assert refresher.users("credit_decision", [user_id(1)])["versions"] == [1, 2]
    assert refresher.users("credit_decision", [user_id(1)], version=2)["versions"] == [1, 2]
    with pytest.raises(NotFound):
        refresher.users("credit_decision", [user_id(1)], version=9)


def test_invalidate_users_and_drop_the_shared_states(
        refresher: Refresher, redis_client: redis.Redis, redis_prefix: str) -> None:
    admin = services().cache_admin
    refresher.full("credit_decision", version=2)

    dropped = admin.invalidate_users("credit_decision", [user_id(7), user_id(8), "nobody"])

    assert dropped["deleted"] == 2 and dropped["versions"] == [1, 2]
    assert user_id(7) not in user_keys(redis_client, redis_prefix)
    with pytest.raises(Conflict) as refused:
        admin.drop_version("credit_decision", 2)  # the served v1 reads the same states
    assert refused.value.code == "version_is_served"

    steps, cursor, deleted = 0, 0, 0
    while True:
        out = admin.drop_version("credit_decision", 2, cursor=cursor, force=True, max_steps=1)
        steps, deleted = steps + 1, deleted + out["deleted"]
        if out["done"]:
            break
        cursor = out["next"]["cursor"]

    assert deleted == SEED_USERS - 2 and user_keys(redis_client, redis_prefix) == {} and steps > 1
    with pytest.raises(Conflict) as not_materialized:
        admin.switch("credit_decision", 2)
    assert not_materialized.value.code == "version_not_materialized"


def test_stats_report_hit_rate_records_and_memory(env: dict[str, str],
                                                  use_env: Callable[[dict[str, str]], None]) -> None:
    use_env({**env, "FS_REFRESH_STATS_FLUSH_S": "0"})
    svc = services()
    svc.refresher.full("credit_decision", from_user=user_id(0), to_user=user_id(10))
    svc.reader.read(CREDIT_DECISION_V1, [user_id(n) for n in range(15)])  # 10 hits, 5 misses
    svc.reader.read(CREDIT_DECISION_V1, [user_id(n) for n in range(15)])  # 15 hits

    svc.reader.read(CREDIT_DECISION_V2, [user_id(n) for n in range(2)])  # 2 hits on v2

    stats = svc.cache_admin.stats("credit_decision")

    v1, v2 = stats["versions"]["1"], stats["versions"]["2"]
    assert (v1["hits"], v1["misses"], v1["hit_rate"], v1["undecodable"]) == (25, 5, round(25 / 30, 4), 0)
    assert (v2["hits"], v2["misses"]) == (2, 0)
    assert v1["materialized"] is None  # a range run is not a materialization
    assert stats["served"] == 1 and stats["pointer"] is None and stats["layout"] == 3
    assert stats["redis"]["used_memory"] > 0 and "maxmemory_policy" in stats["redis"]
