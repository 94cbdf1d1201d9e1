"""Prepare, backfill and verification against real PostgreSQL on both sides (tests/migration/conftest.py)."""

from __future__ import annotations

from typing import Any

from feature_store.stores.migration_replica import Image
from feature_store.stores.migration_tables import MIGRATED

from .conftest import rows, table_rows


def backfill_all(phases: Any) -> dict[str, Any]:
    for _ in range(100):
        answer = phases.backfill()
        if answer["done"]:
            return dict(answer)
    raise AssertionError("the backfill never finished")


def verify_all(phases: Any, run_id: str) -> dict[str, Any]:
    for _ in range(100):
        answer = phases.verify(run_id)
        if answer["done"]:
            return dict(answer)
    raise AssertionError("the verification never finished")


def assert_same(pair: dict[str, Any]) -> None:
    for table in MIGRATED:
        assert table_rows(pair["source"], table) == table_rows(pair["target"], table), table


def test_prepare_applies_the_target_form_and_switches_the_replication_on(pair: dict[str, Any], migration: Any) -> None:
    first = migration.phases.prepare()
    again = migration.phases.prepare()

    assert first["done"] and first["direction"] == "forward" and first["differences"] == len(first["report"]) == 17
    assert {"subject": "idx_plans_user", "cockroachdb": "CREATE INDEX idx_plans_user ON installment_plans (user_id) "
            "STORING (status)"}.items() <= next(d for d in first["report"] if d["subject"] == "idx_plans_user").items()
    assert first["applied"] and not again["applied"] and again["already_applied"] == first["applied"]
    target = pair["target"]
    assert rows(target, "SELECT relkind FROM pg_class WHERE relname = 'transactions'") == [["r"]]  # not partitioned
    keys = rows(target, "SELECT indexdef FROM pg_indexes WHERE tablename = 'transactions' ORDER BY indexname")
    assert any("(user_id, created_at, transaction_id)" in k[0] for k in keys)
    assert any("UNIQUE INDEX transactions_source_key" in k[0] for k in keys)
    assert rows(target, "SELECT direction, truth, percent FROM fs_migration_state") == [["forward", "source", 0]]
    replica = {r[0] for r in rows(target, "SELECT relname FROM pg_class WHERE relkind = 'r'")}
    assert {f"fs_replica_{t}" for t in MIGRATED} | {"fs_replication_progress", "fs_migration_chunks"} <= replica


def test_backfill_copies_every_row_and_verification_finds_both_sides_equal(pair: dict[str, Any],
                                                                           migration: Any) -> None:
    migration.phases.prepare()

    copied = backfill_all(migration.phases)
    checked = verify_all(migration.phases, "run-1")

    assert_same(pair)
    assert checked["ok"] and not checked["different"] and not checked["repaired"] and checked["duration_s"] > 0
    recorded = migration.state.read().doc["verify"]
    assert recorded["ok"] and recorded["tables"] == checked["tables"] and recorded["duration_s"] > 0
    for table in MIGRATED:
        count = rows(pair["source"], f"SELECT count(*) FROM {table}")[0][0]
        assert checked["tables"][table]["source_rows"] == checked["tables"][table]["target_rows"] == count
        assert checked["tables"][table]["source_checksum"] == checked["tables"][table]["target_checksum"]
        assert copied["tables"][table]["rows_total"] == count
    snapshot = copied["snapshot"]
    assert snapshot["replication_started_before"] is True
    assert int(snapshot["first_snapshot_after"]) >= int(
        migration.state.read().doc["replication"]["start_position"])


def test_an_interrupted_backfill_resumes_after_its_last_landed_chunk(pair: dict[str, Any], migration: Any) -> None:
    migration.phases.prepare()

    first = migration.phases.backfill(budget_s=0.001)
    chunks_after_first = rows(pair["target"], "SELECT count(*) FROM fs_migration_chunks")[0][0]
    rest = backfill_all(migration.phases)

    assert not first["done"] and first["rows"] > 0 and chunks_after_first >= 1
    assert rest["done"]
    assert_same(pair)
    # every chunk landed once: chunk numbers are unique per table, and the rows add up to the source's
    for table in MIGRATED:
        landed = rows(pair["target"], f"SELECT sum(rows_copied), count(*), count(DISTINCT chunk) FROM "
                                      f"fs_migration_chunks WHERE tbl = '{table}'")[0]
        assert landed[0] == rows(pair["source"], f"SELECT count(*) FROM {table}")[0][0]
        assert landed[1] == landed[2]


def test_the_backfill_never_overwrites_or_revives_what_the_replication_wrote(pair: dict[str, Any],
                                                                             migration: Any) -> None:
    migration.phases.prepare()
    source = pair["source"]
    rows(source, "UPDATE users SET age = 77 WHERE user_id = 'u000000001'")
    user = rows(source, "SELECT * FROM users WHERE user_id = 'u000000001'")[0]
    columns = [r[0] for r in rows(source, "SELECT column_name FROM information_schema.columns WHERE table_name = "
                                          "'users' AND table_schema = 'public' ORDER BY ordinal_position")]
    rows(source, "DELETE FROM risk_scores WHERE user_id = (SELECT min(user_id) FROM risk_scores)")
    # the replication applied both changes before the backfill reached their rows
    forward = migration.replicator._stores["forward"]
    gone = rows(pair["target"], "SELECT 1")  # target reachable
    assert gone
    deleted = rows(source, "SELECT min(user_id) FROM users WHERE user_id NOT IN (SELECT user_id FROM risk_scores)")
    forward.apply([Image("users", ("u000000001",), 10**12, dict(zip(columns, user, strict=True))),
                   Image("risk_scores", (deleted[0][0],), 10**12, None)], "forward")

    backfill_all(migration.phases)

    assert_same(pair)
    assert rows(pair["target"], "SELECT age FROM users WHERE user_id = 'u000000001'") == [[77]]


def test_a_chunk_that_differs_while_a_write_is_in_flight_is_rechecked_and_settles(pair: dict[str, Any],
                                                                                   migration: Any) -> None:
    phases = migration.phases
    phases.prepare()
    backfill_all(phases)
    rows(pair["source"], "UPDATE installments SET paid_at = now() WHERE (plan_id, seq) = "
                         "(SELECT plan_id, seq FROM installments WHERE paid_at IS NULL ORDER BY plan_id, seq LIMIT 1)")
    changed = rows(pair["source"], "SELECT plan_id, seq, user_id, due_date, amount, paid_at, updated_at FROM "
                                   "installments ORDER BY updated_at DESC LIMIT 1")[0]
    keys = ["plan_id", "seq", "user_id", "due_date", "amount", "paid_at", "updated_at"]
    delivered: list[float] = []

    def replication_lands(seconds: float) -> None:  # the change reaches the target during the first recheck wait
        if not delivered:
            migration.replicator._stores["forward"].apply(
                [Image("installments", (changed[0], changed[1]), 10**12, dict(zip(keys, changed, strict=True)))])
        delivered.append(seconds)

    phases._sleep = replication_lands

    checked = verify_all(phases, "run-2")

    assert checked["ok"] and checked["settled"] == 1 and not checked["repaired"]
    assert delivered  # it did wait for the replication
    assert_same(pair)


def test_a_recheck_waits_out_the_lag_the_replication_measured_lately(pair: dict[str, Any], migration: Any) -> None:
    phases = migration.phases
    phases.prepare()
    backfill_all(phases)
    progress = ("INSERT INTO fs_replication_progress (direction, last_applied_at, last_lag_ms) "
                "VALUES ('forward', now() - CAST(:idle AS INTERVAL), :lag) ON CONFLICT (direction) DO UPDATE "
                "SET last_applied_at = EXCLUDED.last_applied_at, last_lag_ms = EXCLUDED.last_lag_ms")
    rows(pair["target"], progress, idle="1 second", lag=1500.0)  # catching up: 1.5 s behind
    rows(pair["source"], "UPDATE users SET age = age + 1 WHERE user_id = 'u000000003'")
    changed = rows(pair["source"], "SELECT * FROM users WHERE user_id = 'u000000003'")[0]
    columns = [r[0] for r in rows(pair["source"], "SELECT column_name FROM information_schema.columns "
                                                  "WHERE table_name = 'users' ORDER BY ordinal_position")]
    waits: list[float] = []

    def replication_lands_late(seconds: float) -> None:  # 1 s after the snapshot: within the lag-following wait
        if not waits:
            migration.replicator._stores["forward"].apply(
                [Image("users", ("u000000003",), 10**12, dict(zip(columns, changed, strict=True)))])
        waits.append(seconds)

    phases._sleep = replication_lands_late

    checked = verify_all(phases, "run-lag")

    assert checked["ok"] and checked["settled"] == 1 and not checked["repaired"]
    assert waits[0] == 3.0  # twice the measured lag, not FS_MIGRATION_RECHECK_DELAY_S (0.2 here)
    assert_same(pair)
    delay = phases.config.recheck_delay_s
    rows(pair["target"], progress, idle="2 minutes", lag=1500.0)  # idle: the old lag says nothing
    assert phases._verifier(strict=False).recheck_wait_s() == delay
    rows(pair["target"], progress, idle="0 seconds", lag=600_000.0)
    assert phases._verifier(strict=False).recheck_wait_s() == 30.0  # capped
    assert phases._verifier(strict=True).recheck_wait_s() == delay  # the cutover's check: the source is quiet


def test_what_still_differs_after_the_rechecks_is_repaired_from_the_source(pair: dict[str, Any],
                                                                           migration: Any) -> None:
    phases = migration.phases
    phases.prepare()
    backfill_all(phases)
    target = pair["target"]
    rows(target, "UPDATE users SET age = 3 WHERE user_id = 'u000000005'")  # written by nobody in the source
    rows(target, "DELETE FROM transactions WHERE transaction_id = (SELECT min(transaction_id) FROM transactions)")
    rows(target, "INSERT INTO risk_scores (user_id, risk_score) VALUES ('u999999999', 0.5)")

    checked = verify_all(phases, "run-3")

    assert checked["ok"]
    assert {r["table"] for r in checked["repaired"]} == {"users", "transactions", "risk_scores"}
    assert_same(pair)
    assert rows(target, "SELECT count(*) FROM fs_migration_checks WHERE job = 'verify:run-3' AND status = 'repaired'"
                )[0][0] == 3


def test_each_table_the_backfill_finishes_is_analyzed_for_the_verification_plans(pair: dict[str, Any],
                                                                                  migration: Any) -> None:
    migration.phases.prepare()

    backfill_all(migration.phases)

    analyzed = rows(pair["target"], "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL")
    assert set(MIGRATED) <= {r[0] for r in analyzed}
