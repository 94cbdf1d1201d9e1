"""CDC ingestion over the in-memory twins of its ports: recompute, tombstones, the changelog, stale writes refused."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from feature_store.domain.state import UserState
from feature_store.errors import DependencyUnavailable
from feature_store.services.ingest import Ingestor
from feature_store.stores.memory import MemoryChangelog, MemoryOnlineStore, MemorySource
from feature_store.stores.ports import Tombstone


def event(table: str, op: str, lsn: int, before: dict[str, Any] | None, after: dict[str, Any] | None) -> bytes:
    """A Debezium change event as its JSON converter writes it without schemas."""
    return json.dumps({"before": before, "after": after, "op": op, "ts_ms": 1_790_000_000_100,
                       "source": {"connector": "postgresql", "db": "fs", "schema": "public", "table": table,
                                  "lsn": lsn, "ts_ms": 1_790_000_000_000, "txId": 9}}).encode()


def user_row(user_id: str, age: int) -> dict[str, Any]:
    return {"user_id": user_id, "age": age, "signup_date": 19000, "verification_status": "verified"}


def order_row(user_id: str) -> dict[str, Any]:
    return {"transaction_id": "t1", "user_id": user_id, "amount": "AQ==", "merchant": "m1", "category": "books",
            "status": "completed", "created_at": "2026-12-01T10:00:00Z"}


@pytest.fixture
def parts() -> tuple[MemoryOnlineStore, MemorySource, MemoryChangelog]:
    return MemoryOnlineStore(), MemorySource(), MemoryChangelog()


def test_a_change_recomputes_its_user_from_the_source_and_lands_in_the_changelog(parts: Any) -> None:
    online, source, changelog = parts
    mark = source.set("a", age=30)
    ingestor = Ingestor(online, source, changelog)

    outcome = ingestor.handle(event("users", "c", 100, None, user_row("a", 30)), "m1")

    assert outcome == "applied"
    cached = online.get_many(["a"])[0]
    assert isinstance(cached, UserState) and cached.age == 30 and cached.watermark >= mark
    assert [(c.table, m) for c, m in changelog.rows] == [("users", "m1")]
    assert ingestor.stats.snapshot()["applied"] == 1


def test_a_user_the_source_no_longer_has_gets_a_tombstone_at_the_snapshot_watermark(parts: Any) -> None:
    online, source, changelog = parts
    source.set("a", age=30)
    ingestor = Ingestor(online, source, changelog)
    ingestor.handle(event("users", "c", 100, None, user_row("a", 30)), "m1")
    mark = source.delete("a")

    ingestor.handle(event("users", "d", 200, user_row("a", 30), None), "m2")

    assert online.get_many(["a"]) == [Tombstone("a", mark)]


def test_a_row_moved_to_another_user_recomputes_both(parts: Any) -> None:
    online, source, changelog = parts
    source.set("a", age=1)
    source.set("b", age=2)

    Ingestor(online, source, changelog).handle(event("transactions", "u", 300, order_row("a"), order_row("b")), "m")

    assert sorted(s.user_id for s in online.get_many(["a", "b"]) if isinstance(s, UserState)) == ["a", "b"]


def test_the_online_store_is_written_before_a_changelog_failure_raises(parts: Any) -> None:
    online, source, changelog = parts
    source.set("a", age=30)

    def down(_: str) -> None:
        raise DependencyUnavailable("bigquery", "ConnectionError")

    changelog.fault = down
    with pytest.raises(DependencyUnavailable):
        Ingestor(online, source, changelog).handle(event("users", "c", 100, None, user_row("a", 30)), "m1")

    assert isinstance(online.get_many(["a"])[0], UserState)  # freshness never waits on the offline store


def test_two_batches_in_flight_the_stale_snapshot_is_refused(parts: Any) -> None:
    online, source, _ = parts
    source.set("a", age=30)
    ingestor = Ingestor(online, source, None, max_inflight=2)
    first_snapshot_taken, second_written = threading.Event(), threading.Event()
    snapshots = iter(range(2))

    def hold_the_first(_: str) -> None:
        if next(snapshots) == 0:  # the first batch waits between its snapshot and its write
            first_snapshot_taken.set()
            assert second_written.wait(10), "the second batch never wrote"

    source.pause = hold_the_first
    stale = threading.Thread(target=ingestor.handle, args=(event("users", "u", 100, None, user_row("a", 30)), "m1"))
    stale.start()
    assert first_snapshot_taken.wait(10)
    source.set("a", age=31)  # committed after the first snapshot
    ingestor.handle(event("users", "u", 200, None, user_row("a", 31)), "m2")
    second_written.set()
    stale.join(10)
    assert not stale.is_alive()

    cached = online.get_many(["a"])[0]
    assert isinstance(cached, UserState) and cached.age == 31
    assert online.refused == 1  # the first batch's older snapshot lost the compare-and-set
