"""The refresh and hit-rate keys, pinned byte for byte (docs/redis-keys.md)."""

from __future__ import annotations

import fnmatch

import redis

from feature_store.stores.redis_online import KeyLayout
from feature_store.stores.redis_refresh import RefreshState, stats_key


def test_operational_keys_are_exactly_as_documented() -> None:
    layout = KeyLayout("fs", "credit_decision", 2)
    state = RefreshState(redis.Redis(), layout, 60)  # builds keys only: never connects

    keys = [stats_key("fs", "credit_decision", 2), state.stats_key, state.materialized_key,
            state.lock_key("full"), state.lock_key("incremental"), state.run_key("20261123T120000Z-a1b2c3"),
            state.lease_key("20261123T120000Z-a1b2c3", 3), state.last_key("full"), state.since_key]

    assert keys == [
        "fs:credit_decision:v2:stats", "fs:credit_decision:v2:stats", "fs:credit_decision:v2:materialized",
        "fs:credit_decision:v2:refresh:lock:full", "fs:credit_decision:v2:refresh:lock:incremental",
        "fs:credit_decision:v2:refresh:run:20261123T120000Z-a1b2c3",
        "fs:credit_decision:v2:refresh:lease:20261123T120000Z-a1b2c3:3", "fs:credit_decision:v2:refresh:last:full",
        "fs:credit_decision:v2:refresh:since",
    ]
    # Dropping a version scans the vector pattern: it must never match bookkeeping.
    assert not [k for k in keys if fnmatch.fnmatchcase(k, layout.user_pattern())]
