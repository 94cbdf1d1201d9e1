"""A full Redis degrades to misses, not errors: a private redis-server with a tiny maxmemory.

With ``volatile-lru`` (docs/capacity.md) every key we write has a TTL, so a full Redis evicts old
vectors to take new ones: a refresh larger than memory completes and reads answer from PostgreSQL
for what was evicted, not degraded. With ``noeviction`` writes fail: the refresh reports the outage,
and reads still answer because the read path's write-back swallows write failures.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from conftest import SEED_USERS, admin_connection, base_env, closed_port
from feature_store.domain.catalog import CREDIT_DECISION_V1
from feature_store.domain.synthetic import user_id
from feature_store.errors import DependencyUnavailable
from feature_store.stores.redis_online import KeyLayout
from feature_store.wiring import services
from reference import reference_features

# Room for roughly 1,500 states beside what an idle Redis and its clients use; the 3,000 seeded users
# need about twice that (every version shares them), so materializing them must evict.
HEADROOM = 768 * 1024
# Small chunks: a chunk's pipeline sits in Redis's client query buffer, which counts as used memory
# and cannot be evicted (a 5,000-user chunk is ~1.5 MB, nothing beside production's gigabytes).
SMALL_CHUNKS = {"FS_REFRESH_CHUNK_USERS": "100", "FS_REFRESH_WRITE_BATCH": "50", "FS_REDIS_SOCKET_TIMEOUT_MS": "1000"}


def stored(client: redis.Redis) -> set[str]:
    return {k.decode().rsplit(":", 1)[1] for k in client.scan_iter(KeyLayout("tmem").user_pattern(), count=1000)}


@pytest.fixture
def small_redis() -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server of this test alone on a free loopback port, stopped by its pid afterwards."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed (apt-get install redis-server)"
    port = closed_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--maxmemory-policy", "volatile-lru"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + HEADROOM)
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_full_redis_with_volatile_lru_serves_misses_not_errors(
        small_redis: tuple[str, redis.Redis], seeded_database: dict[str, Any],
        use_env: Callable[[dict[str, str]], None]) -> None:
    url, client = small_redis
    use_env({**base_env(seeded_database["database"], "tmem"), "FS_REDIS_URL": url, **SMALL_CHUNKS})
    svc = services()

    out = svc.refresher.full("credit_decision")

    assert out["done"] and out["progress"]["done"] == SEED_USERS
    assert int(client.info("stats")["evicted_keys"]) > 0
    cached = stored(client)
    assert 0 < len(cached) < SEED_USERS
    assert svc.refresher.state.materialized() is not None  # no TTL: never evicted

    evicted = sorted({user_id(n) for n in range(SEED_USERS)} - cached)[:100]
    asked = sorted(cached)[:100] + evicted
    outcome = svc.reader.read(CREDIT_DECISION_V1, asked)

    assert not outcome.degraded and {r.status for r in outcome.results} == {"ok"}
    hits = {r.user_id for r in outcome.results if r.cache_hit}
    # Eviction goes on while client buffers come and go in so small a Redis (how many of the cached
    # hundred are evicted meanwhile depends on timing): an evicted user is never a hit, a cached one can be.
    assert hits <= set(asked[:100]) and hits
    assert len(set(evicted) & stored(client)) >= 50  # misses were written back: eviction made room
    conn = admin_connection(seeded_database["database"])
    try:
        for r in outcome.results[::10]:
            assert r.features == reference_features(conn, r.user_id, outcome.as_of), r.user_id
    finally:
        conn.close()


def test_with_noeviction_a_full_redis_fails_refreshes_but_reads_still_answer(
        small_redis: tuple[str, redis.Redis], seeded_database: dict[str, Any],
        use_env: Callable[[dict[str, str]], None]) -> None:
    url, client = small_redis
    use_env({**base_env(seeded_database["database"], "tmem"), "FS_REDIS_URL": url, **SMALL_CHUNKS})
    svc = services()
    svc.refresher.users("credit_decision", [user_id(n) for n in range(100)])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 1024)

    with pytest.raises(DependencyUnavailable) as refused:
        svc.refresher.full("credit_decision")
    outcome = svc.reader.read(CREDIT_DECISION_V1, [user_id(n) for n in range(50, 250)])

    assert "maxmemory" in refused.value.message
    assert {r.status for r in outcome.results} == {"ok"} and not outcome.degraded
    assert sum(r.cache_hit for r in outcome.results) == 50  # u50..u99 were cached; the rest came from the source
