"""A cached value that cannot be decoded is a miss: recomputed, overwritten and counted, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import redis

from conftest import admin_connection, function_client
from feature_store.domain.synthetic import user_id
from feature_store.stores.redis_online import KeyLayout
from reference import reference_features

LAYOUT_1 = ("00000000000000016b374d848"[1:] + '[1,1.5,[30,"DE",null,null,null],[0,0.0,null,null],[],'
            '[null,null,null,null,null],[0,0,0,[],[]]]').encode()
GARBAGE = [
    LAYOUT_1,                              # a value of the previous layout, mid-deploy
    b"ffffffffffffffffffffffff[2,1]",     # the right layout with the wrong length, under a huge watermark
    b"\xff\xfe not even text",             # a corrupted key
    b"zzzzzzzzzzzzzzzzzzzzzzzz-",          # no watermark at all
]


@pytest.fixture
def served(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> dict[str, str]:
    use_env({**env, "FS_REFRESH_STATS_FLUSH_S": "0"})
    return env


def test_single_and_batch_reads_recompute_undecodable_values_and_overwrite_them(
        served: dict[str, str], redis_client: redis.Redis, redis_prefix: str) -> None:
    layout = KeyLayout(redis_prefix)
    ids = [user_id(n) for n in range(40, 40 + len(GARBAGE))]
    for uid, raw in zip(ids, GARBAGE, strict=True):
        redis_client.set(layout.user(uid), raw)

    single = function_client("read_features").get(f"/api/v1/features/user/{ids[0]}")
    batch = function_client("read_features_batch").post("/api/v1/features/batch", json={"user_ids": ids})

    assert single.status_code == 200 and single.get_json()["cache_hit"] is False
    body = batch.get_json()
    assert batch.status_code == 200 and body["counts"] == {"ok": len(ids), "unknown_user": 0, "unavailable": 0}
    assert [r["cache_hit"] for r in body["results"]] == [True] + [False] * (len(ids) - 1)  # ids[0] was rewritten
    again = function_client("read_features").get(f"/api/v1/features/user/{ids[1]}").get_json()
    assert again["cache_hit"] is True  # overwritten by the batch, whatever watermark the garbage claimed
    for uid in ids:
        raw = redis_client.get(layout.user(uid))
        assert raw is not None and raw[24] == 3, uid  # the binary body of layout 3
    stats = redis_client.hgetall(layout.stats("credit_decision", 1))
    assert int(stats[b"undecodable"]) == len(ids)  # ids[0] once (single), the other three in the batch


def test_a_recomputed_value_equals_the_reference(
        served: dict[str, str], redis_client: redis.Redis, redis_prefix: str, seeded_database: dict[str, Any]) -> None:
    uid = user_id(77)
    redis_client.set(KeyLayout(redis_prefix).user(uid), LAYOUT_1)

    body = function_client("read_features").get(f"/api/v1/features/user/{uid}").get_json()

    conn = admin_connection(seeded_database["database"])
    try:
        assert body["features"] == reference_features(conn, uid, datetime.fromisoformat(body["as_of"]).timestamp())
    finally:
        conn.close()
