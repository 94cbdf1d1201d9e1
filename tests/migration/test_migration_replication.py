"""replicate_changes through functions-framework's own app: Debezium events applied to the target by position."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from conftest import closed_port, function_client

from .conftest import migration_env, rows
from .events import event, push

USER = {"user_id": "u-repl-1", "age": 30, "location_country": "DE", "signup_date": "2026-01-02",
        "verification_status": "verified", "income_bracket": "mid", "created_at": "2026-01-02 10:00:00+00",
        "updated_at": "2026-01-02 10:00:00+00"}


@pytest.fixture
def replicate(pair: dict[str, Any], migration: Any, use_env: Callable[[dict[str, str]], None]) -> Iterator[Any]:
    migration.phases.prepare()
    use_env(pair["env"])
    yield function_client("replicate_changes")


def stats() -> dict[str, int]:
    from feature_store.migration_wiring import migration_services

    return migration_services().replicator.stats.snapshot()


def user(pair: dict[str, Any], user_id: str = "u-repl-1") -> list[list[Any]]:
    return rows(pair["target"], f"SELECT age, income_bracket, updated_at FROM users WHERE user_id = '{user_id}'")


def test_inserts_updates_and_deletes_reach_the_target(pair: dict[str, Any], replicate: Any) -> None:
    src = pair["source"]
    changed = {**USER, "age": 31, "updated_at": "2026-03-04 05:06:07.123456+00"}

    answers = [push(replicate, event(src, "users", "c", 1000, after=USER), "m1"),
               push(replicate, event(src, "users", "u", 1100, before=USER, after=changed), "m2")]
    after_update = user(pair)
    answers.append(push(replicate, event(src, "users", "d", 1200, before=changed), "m3"))

    assert [a.status_code for a in answers] == [200, 200, 200]
    # the trigger of 0004 leaves the replicated updated_at as the source wrote it
    assert after_update == [[31, "mid", datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)]]
    assert user(pair) == []
    assert rows(pair["target"], "SELECT position, deleted FROM fs_replica_users WHERE user_id = 'u-repl-1'") == [
        [Decimal(1200), True]]
    progress = rows(pair["target"], "SELECT applied, stale, batches, last_lag_ms IS NOT NULL FROM "
                                    "fs_replication_progress WHERE direction = 'forward'")
    assert progress == [[3, 0, 3, True]]


def test_duplicates_redeliveries_and_reordering_change_nothing(pair: dict[str, Any], replicate: Any) -> None:
    src = pair["source"]
    newer = {**USER, "age": 40}
    older = {**USER, "age": 35}

    push(replicate, event(src, "users", "u", 2000, before=USER, after=newer), "a")
    push(replicate, event(src, "users", "u", 1500, before=USER, after=older), "b")  # arrives late
    push(replicate, event(src, "users", "u", 2000, before=USER, after=newer), "a")  # redelivered
    first = user(pair)
    push(replicate, event(src, "users", "d", 2500, before=newer), "c")
    push(replicate, event(src, "users", "c", 1000, after=USER), "d")  # the insert, very late: stays deleted

    assert first[0][0] == 40
    assert user(pair) == []
    assert stats()["applied"] == 2 and stats()["stale"] == 3


def test_a_changed_primary_key_moves_the_row(pair: dict[str, Any], replicate: Any) -> None:
    src = pair["source"]
    plan = {"plan_id": "p-old", "user_id": "u-repl-1", "transaction_id": "t1", "principal": "100.00",
            "n_installments": 4, "status": "active", "created_at": "2026-01-02 10:00:00+00",
            "updated_at": "2026-01-02 10:00:00+00"}
    push(replicate, event(src, "installment_plans", "c", 100, after=plan), "1")

    push(replicate, event(src, "installment_plans", "u", 200, before=plan, after={**plan, "plan_id": "p-new"}), "2")

    assert rows(pair["target"], "SELECT plan_id, principal FROM installment_plans WHERE user_id = 'u-repl-1'") == [
        ["p-new", Decimal("100.00")]]


def test_nothing_is_applied_before_the_target_is_prepared_and_the_state_is_read_fresh(
        pair: dict[str, Any], migration: Any, use_env: Callable[[dict[str, str]], None]) -> None:
    use_env(pair["env"])
    client = function_client("replicate_changes")

    skipped = push(client, event(pair["source"], "users", "c", 1000, after=USER), "early")
    migration.phases.prepare()  # no wait: the skip path re-reads the state
    applied = push(client, event(pair["source"], "users", "c", 1001, after=USER), "later")

    assert skipped.status_code == applied.status_code == 200
    assert stats()["skipped:source_change_while_none"] == 1 and stats()["applied"] == 1
    assert user(pair)[0][0] == 30


def test_poison_is_acknowledged_and_counted(pair: dict[str, Any], replicate: Any) -> None:
    not_json = push(replicate, b"{not json", "p1")
    unknown = push(replicate, event(pair["source"], "users", "c", 1, after=USER).replace(b'"users"', b'"ghosts"'), "p2")

    assert not_json.status_code == unknown.status_code == 200
    assert stats()["poison:poison_not_json"] == 1 and stats()["poison:poison_unknown_table"] == 1


def test_an_unreachable_target_is_retried_by_pubsub(pair: dict[str, Any], migration: Any,
                                                    use_env: Callable[[dict[str, str]], None]) -> None:
    migration.phases.prepare()
    use_env(migration_env(pair["source"], pair["target"], pair["prefix"], FS_MIGRATION_TARGET_PORT=str(closed_port()),
                          FS_POSTGRES_CONNECT_TIMEOUT_S="0.5"))
    client = function_client("replicate_changes")

    answer = push(client, event(pair["source"], "users", "c", 1000, after=USER), "x")

    assert answer.status_code == 500  # Pub/Sub redelivers it
