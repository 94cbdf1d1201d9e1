"""The cutover (lag zero, then the target is the truth and the replication runs backwards) and the way back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from feature_store.errors import Conflict
from feature_store.stores.migration_replica import Image
from feature_store.stores.migration_tables import MIGRATED

from .conftest import rows, table_rows
from .test_migration_backfill import backfill_all, verify_all


@pytest.fixture
def at_100(pair: dict[str, Any], migration: Any) -> Any:
    phases = migration.phases
    phases.prepare()
    backfill_all(phases)
    assert verify_all(phases, "before-shift")["ok"]
    for percent in (1, 10, 50, 100):
        phases.shift(percent, hold_s=0)
    return phases


def until_done(call: Any) -> dict[str, Any]:
    """Call a phase until it is done, a little apart, as the workflow polls."""
    for _ in range(50):
        answer = call()
        if answer["done"]:
            return dict(answer)
        time.sleep(0.2)
    raise AssertionError("never done")


def same(pair: dict[str, Any]) -> bool:
    return all(table_rows(pair["source"], t) == table_rows(pair["target"], t) for t in MIGRATED)


def test_the_cutover_needs_every_read_on_the_target(pair: dict[str, Any], migration: Any) -> None:
    phases = migration.phases
    phases.prepare()
    backfill_all(phases)
    verify_all(phases, "v")
    phases.shift(50, hold_s=0)

    with pytest.raises(Conflict) as refused:
        phases.cutover("c1")

    assert refused.value.code == "shift_incomplete"


def test_the_cutover_makes_the_target_the_truth_and_reverses_the_replication(pair: dict[str, Any],
                                                                              at_100: Any) -> None:
    answer = until_done(lambda: at_100.cutover("cut-1"))

    assert answer["truth"] == "target" and answer["direction"] == "reverse" and answer["verify"]["ok"]
    assert rows(pair["target"], "SELECT direction, truth FROM fs_migration_state") == [["reverse", "target"]]
    route = at_100.routing.read()
    assert route.truth == "target" and route.percent == 100
    assert rows(pair["source"], "SELECT count(*) FROM fs_replication_progress")  # reverse positions live there now
    assert until_done(lambda: at_100.cutover("cut-1"))["truth"] == "target"  # again: nothing to do


def test_a_source_that_keeps_changing_fails_the_cutover_by_name(pair: dict[str, Any], at_100: Any,
                                                                migration: Any) -> None:
    forward = migration.replicator._stores["forward"]
    columns = [r[0] for r in rows(pair["source"], "SELECT column_name FROM information_schema.columns WHERE "
                                                  "table_name = 'users' AND table_schema = 'public' "
                                                  "ORDER BY ordinal_position")]
    tick = iter(range(10**12, 10**13))

    def changes_keep_arriving(_: float) -> None:  # the replication applies a new change in every recheck wait
        rows(pair["source"], "UPDATE users SET age = age % 100 + 1 WHERE user_id = 'u000000001'")
        row = rows(pair["source"], "SELECT * FROM users WHERE user_id = 'u000000001'")[0]
        forward.apply([Image("users", ("u000000001",), next(tick), dict(zip(columns, row, strict=True)))], "forward")

    at_100._sleep = changes_keep_arriving
    at_100.config = at_100.config.__class__(**{**at_100.config.__dict__, "cutover_quiet_s": 0.0})

    with pytest.raises(Conflict) as refused:
        for _ in range(20):
            rows(pair["source"], "UPDATE users SET age = age % 100 + 1 WHERE user_id = 'u000000002'")
            at_100.cutover("cut-busy")

    assert refused.value.code == "replication_lag_not_zero"
    assert rows(pair["target"], "SELECT truth FROM fs_migration_state") == [["source"]]


def test_a_rollback_after_the_cutover_loses_nothing_written_to_the_target(pair: dict[str, Any], at_100: Any,
                                                                           migration: Any) -> None:
    until_done(lambda: at_100.cutover("cut-2"))
    target, source = pair["target"], pair["source"]
    # the application now writes to the target; the reverse replication brings one change back, and one
    # change it never delivers (the strict verification of the rollback finds and repairs it)
    rows(target, "INSERT INTO transactions VALUES ('t-after-cutover', 'u000000003', 42.00, 'USD', 'm00001', "
                 "'books', 'completed', now())")
    rows(target, "UPDATE users SET income_bracket = 'high' WHERE user_id = 'u000000004'")
    tx = rows(target, "SELECT transaction_id, user_id, amount, currency, merchant, category, status, created_at "
                      "FROM transactions WHERE transaction_id = 't-after-cutover'")[0]
    keys = ["transaction_id", "user_id", "amount", "currency", "merchant", "category", "status", "created_at"]
    reverse = migration.replicator._stores["reverse"]
    reverse.apply([Image("transactions", (tx[0], tx[7]), 10**25, dict(zip(keys, tx, strict=True)))], "reverse")

    answer = until_done(lambda: at_100.rollback("back-1", to_percent=50))

    assert answer["truth"] == "source" and answer["direction"] == "forward" and answer["percent"] == 50
    assert answer["verify"]["ok"] and same(pair)
    assert rows(source, "SELECT income_bracket FROM users WHERE user_id = 'u000000004'") == [["high"]]
    assert rows(source, "SELECT count(*) FROM transactions WHERE transaction_id = 't-after-cutover'") == [[1]]
    route = at_100.routing.read()
    assert route.truth == "source" and route.percent == 50
