"""CDC ingestion over the in-memory twins of its ports: recompute, tombstones, the changelog, stale writes refused."""

from __future__ import annotations

import json
import threading
import time
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


def _until(condition: Any, what: str) -> None:
    """Wait for ``condition()`` (another thread's progress); fail after 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def test_a_message_is_acknowledged_only_once_its_changelog_row_landed_and_the_next_batch_does_not_wait(
        parts: Any) -> None:
    online, source, changelog = parts
    for user in "abcd":
        source.set(user, age=30)
    ingestor = Ingestor(online, source, changelog)
    landing_started, release = threading.Event(), threading.Event()

    def hold_the_first_append(_: str) -> None:
        if not landing_started.is_set():
            landing_started.set()
            assert release.wait(10), "the first append was never released"

    changelog.fault = hold_the_first_append
    threads = [threading.Thread(target=ingestor.handle, args=(event("users", "u", 100 + i, None, user_row(u, 30)),
                                                              f"m{u}")) for i, u in enumerate("abcd")]
    threads[0].start()
    assert landing_started.wait(10)
    for t in threads[1:]:
        t.start()
    # The later messages reach Redis while the first one's row is still landing...
    _until(lambda: all(isinstance(s, UserState) for s in online.get_many(list("abcd"))), "Redis waited for BigQuery")
    # ...but none of them is acknowledged before its own row has landed.
    assert all(t.is_alive() for t in threads) and changelog.rows == []
    release.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert sorted(m for _, m in changelog.rows) == ["ma", "mb", "mc", "md"]
    assert ingestor._landing is not None and ingestor._landing.appends == 2  # the three later rows in one append


def test_a_failed_append_fails_every_message_it_carried(parts: Any) -> None:
    online, source, changelog = parts
    source.set("a", age=30)
    source.set("b", age=31)
    ingestor = Ingestor(online, source, changelog)
    landing_started, release = threading.Event(), threading.Event()
    errors: list[str] = []

    def fail_after_the_first(_: str) -> None:
        if not landing_started.is_set():
            landing_started.set()
            assert release.wait(10)
            return
        raise DependencyUnavailable("bigquery", "ConnectionError")

    def handle(user: str) -> None:
        try:
            ingestor.handle(event("users", "u", 100, None, user_row(user, 30)), f"m{user}")
        except DependencyUnavailable:
            errors.append(user)

    changelog.fault = fail_after_the_first
    first = threading.Thread(target=handle, args=("a",))
    first.start()
    assert landing_started.wait(10)
    second = threading.Thread(target=handle, args=("b",))
    second.start()
    _until(lambda: isinstance(online.get_many(["b"])[0], UserState), "b never reached Redis")
    release.set()
    first.join(10)
    second.join(10)
    assert errors == ["b"] and [m for _, m in changelog.rows] == ["ma"]
