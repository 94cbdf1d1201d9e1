"""The refresh and hit-rate keys, pinned byte for byte (docs/redis-keys.md)."""

from __future__ import annotations

import fnmatch

import redis

from feature_store.stores.redis_online import KeyLayout
from feature_store.stores.redis_refresh import RefreshState


def test_operational_keys_are_exactly_as_documented() -> None:
    layout = KeyLayout("fs")
    state = RefreshState(redis.Redis(), layout, 60)  # builds keys only: never connects

    keys = [layout.stats("credit_decision", 2), layout.materialized, state.lock_key("full"),
            state.lock_key("incremental"), state.run_key("20261123T120000Z-a1b2c3"),
            state.lease_key("20261123T120000Z-a1b2c3", 3), state.last_key("full"), state.since_key]

    assert keys == [
        "fs:credit_decision:v2:stats", "fs:s3:materialized",
        "fs:s3:refresh:lock:full", "fs:s3:refresh:lock:incremental",
        "fs:s3:refresh:run:20261123T120000Z-a1b2c3",
        "fs:s3:refresh:lease:20261123T120000Z-a1b2c3:3", "fs:s3:refresh:last:full",
        "fs:s3:refresh:since",
    ]
    # Dropping a layout scans the state pattern: it must never match bookkeeping.
    assert not [k for k in keys if fnmatch.fnmatchcase(k, layout.user_pattern())]
