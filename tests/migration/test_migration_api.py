"""run_migration through functions-framework's own app: bodies refused with their code, refusals, status,
the phases that are not long, and the reverse replication through replicate_changes after the cutover."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from producers import changefeed_message, hlc

from conftest import function_client

from .conftest import rows
from .events import event, push
from .test_migration_backfill import backfill_all, verify_all
from .test_migration_replication import USER


@pytest.fixture
def run(pair: dict[str, Any], use_env: Callable[[dict[str, str]], None]) -> Any:
    use_env(pair["env"])
    return function_client("run_migration")


def call(client: Any, body: Any) -> tuple[int, dict[str, Any]]:
    response = client.post("/", json=body)
    return response.status_code, response.get_json()


@pytest.mark.parametrize("body, where", [
    ({"phase": "teleport"}, "phase"),
    ({"phase": "shift"}, "percent"),
    ({"phase": "shift", "percent": "50"}, "percent"),  # strict: a number, not its text
    ({"phase": "shift", "percent": 150}, "percent"),
    ({"phase": "verify"}, "run_id"),
    ({"phase": "record", "run_id": "r"}, "status"),
    ({"phase": "status", "surprise": 1}, "surprise"),
    ({"phase": "verify", "run_id": "has space"}, "run_id"),
])
def test_bad_bodies_are_400_naming_the_field(run: Any, body: dict[str, Any], where: str) -> None:
    status, answer = call(run, body)

    assert status == 400 and answer["error"]["code"] == "invalid_body"
    assert where in answer["error"]["message"]


def test_a_phase_before_prepare_is_refused_by_name(run: Any) -> None:
    status, answer = call(run, {"phase": "backfill"})

    assert status == 409 and answer["error"]["code"] == "migration_not_prepared"


def test_the_short_phases_answer_what_stands(pair: dict[str, Any], run: Any) -> None:
    assert call(run, {"phase": "record", "run_id": "api-1", "status": "running"})[0] == 200
    prepared = call(run, {"phase": "prepare"})[1]
    shift_refused = call(run, {"phase": "shift", "percent": 10})
    status = call(run, {"phase": "status"})[1]
    replication = call(run, {"phase": "replication"})[1]
    abandoned = call(run, {"phase": "abandon"})[1]

    assert prepared["done"] and prepared["direction"] == "forward" and prepared["differences"] == 17
    assert shift_refused[0] == 409 and shift_refused[1]["error"]["code"] == "not_verified"
    assert status["direction"] == "forward" and status["route"]["percent"] == 0
    assert replication["forward"]["applied"] == 0 and replication["direction"] == "forward"
    assert abandoned["direction"] == "none"
    assert rows(pair["target"], "SELECT direction FROM fs_migration_state") == [["none"]]
    assert rows(pair["target"], "SELECT status FROM fs_migration_runs WHERE run_id = 'api-1'") == [["running"]]


def test_after_the_cutover_changefeed_changes_reach_the_source_and_the_sources_are_skipped(
        pair: dict[str, Any], migration: Any, use_env: Callable[[dict[str, str]], None]) -> None:
    phases = migration.phases
    phases.prepare()
    backfill_all(phases)
    assert verify_all(phases, "v")["ok"]
    phases.shift(100, hold_s=0)
    for _ in range(50):
        if phases.cutover("c")["done"]:
            break
    use_env(pair["env"])
    client = function_client("replicate_changes")
    user = {**USER, "user_id": "u-after-cutover", "signup_date": "2026-01-02"}
    wall = 1_800_000_000_000_000_000

    applied = push(client, changefeed_message("users", ["u-after-cutover"], user, updated=hlc(wall)), "cf-1")
    older = push(client, changefeed_message("users", ["u-after-cutover"], {**user, "age": 99},
                                            updated=hlc(wall - 1)), "cf-2")
    deleted = push(client, changefeed_message("users", ["u-after-cutover"], None, updated=hlc(wall + 1)), "cf-3")
    echo = push(client, event(pair["source"], "users", "c", 10**9, after=user), "dbz-1")
    no_position = push(client, changefeed_message("users", ["x"], user), "cf-4")

    assert {r.status_code for r in (applied, older, deleted, echo, no_position)} == {200}
    from feature_store.migration_wiring import migration_services

    stats = migration_services().replicator.stats.snapshot()
    assert stats["applied"] == 2 and stats["stale"] == 1
    assert stats["skipped:source_change_while_reverse"] == 1 and stats["poison:poison_no_position"] == 1
    assert rows(pair["source"], "SELECT count(*) FROM users WHERE user_id = 'u-after-cutover'") == [[0]]
    assert rows(pair["source"], "SELECT deleted FROM fs_replica_users WHERE user_id = 'u-after-cutover'") == [[True]]
