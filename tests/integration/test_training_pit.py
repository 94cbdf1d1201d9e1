"""Point-in-time training sets (services/training.py) against an independent recomputation from PostgreSQL.

``reference_asof`` below recomputes a user's credit_decision features as of an instant straight from
the raw source rows, in plain Python, without the catalog, the state or the SQL under test (an as-of
variant of tests/reference.py, with the rules docs/offline.md states for what current-state rows
cannot tell about the past). Label rows are sampled around the events that move features: an
order's own instant, one microsecond before it, a due date's last moment, before signup.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from conftest import admin_connection, base_env
from feature_store.cli.training import main as fs_training
from feature_store.domain.catalog import CATALOG
from feature_store.errors import InvalidLabels
from feature_store.services.etl import Etl
from feature_store.services.training import TrainingSets
from feature_store.settings import Settings
from feature_store.stores.bigquery_features import literal
from feature_store.stores.bigquery_offline import OfflineStore
from feature_store.stores.bigquery_training import TrainingStore
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.postgres_export import ExportSource
from feature_store_client import FeatureStoreClient, InvalidRequest
from served import Served

pytest_plugins = ["bq_fixture"]
pytestmark = pytest.mark.bigquery

DAY = 86400
EPOCH = date(1970, 1, 1)
VERSIONS = sorted(v for (name, v) in CATALOG if name == "credit_decision")


def _epoch(t: datetime) -> float:
    return t.timestamp()


def _money(x: Decimal | float) -> float:
    return round(float(x), 2)


def reference_asof(conn: pg8000.native.Connection, user_id: str, at: datetime) -> dict[str, Any]:
    """Every credit_decision feature (v1 and v2) of ``user_id`` at ``at``, from rows at or before ``at``."""
    t = _epoch(at)
    today = math.floor(t / DAY)
    (age, country, verification, income, signup, created, updated), = conn.run(
        "SELECT age, location_country, verification_status, income_bracket, signup_date, created_at, updated_at "
        "FROM users WHERE user_id = :u", u=user_id)
    known = updated <= at  # a user row changed after the instant tells nothing about it then
    txs = [r for r in conn.run("SELECT amount, merchant, category, status, created_at FROM transactions "
                               "WHERE user_id = :u", u=user_id) if r[4] <= at]
    completed = [r for r in txs if r[3] == "completed"]
    spent = sum((r[0] for r in completed), Decimal(0))
    counts: dict[str, int] = {}
    for r in completed:
        counts[r[2]] = counts.get(r[2], 0) + 1

    def window(seconds: int) -> list[Any]:
        return [r for r in txs if r[3] in ("completed", "pending") and t - seconds < _epoch(r[4]) <= t]

    risk = [r for r in conn.run("SELECT risk_score, fraud_probability, payment_delays, device_trust_score, "
                                "credit_utilization, calculated_at FROM risk_scores WHERE user_id = :u", u=user_id)
            if r[5] <= at]
    plans = {p: (status, p_created, p_updated) for p, status, p_created, p_updated in conn.run(
        "SELECT plan_id, status, created_at, updated_at FROM installment_plans WHERE user_id = :u", u=user_id)}
    existing = {p for p, (_, p_created, _) in plans.items() if p_created <= at}
    # A plan changed after the instant was active then: active is the only status that changes.
    open_plans = sum(1 for p in existing if plans[p][2] > at or plans[p][0] == "active")
    inst = [(due, amount, paid if paid is not None and paid <= at else None) for plan, due, amount, paid in
            conn.run("SELECT plan_id, due_date, amount, paid_at FROM installments WHERE user_id = :u", u=user_id)
            if plan in existing]
    unpaid = [i for i in inst if i[2] is None]
    overdue = [today - (i[0] - EPOCH).days for i in unpaid if (i[0] - EPOCH).days < today]
    paid = [i for i in inst if i[2] is not None]
    on_time = sum(1 for i in paid if i[2].astimezone(UTC).date() <= i[0])
    late = [i for i in paid if i[2].astimezone(UTC).date() > i[0]]
    fell_due = len(paid) + len(overdue)
    r = risk[0] if risk else None
    week = window(7 * DAY)
    return {
        "age": age if known else None,
        "location_country": (country.strip() or None) if known and country else None,
        "verification_status": verification if known else "pending",
        "income_bracket": income if known else None,
        "days_since_signup": max(0, today - (signup - EPOCH).days) if created <= at else 0,
        "total_orders": len(completed),
        "avg_order_value": round(float(spent) / len(completed), 2) if completed else 0.0,
        "total_spent": _money(spent),
        "last_order_days": (max(0, math.floor((t - max(_epoch(c[4]) for c in completed)) / DAY))
                            if completed else None),
        "favorite_category": min(counts, key=lambda c: (-counts[c], c)) if counts else None,
        "risk_score": None if r is None else float(r[0]),
        "fraud_probability": None if r is None else float(r[1]),
        "payment_delays": 0 if r is None else r[2],
        "device_trust_score": None if r is None else float(r[3]),
        "credit_utilization": None if r is None else float(r[4]),
        "outstanding_balance": _money(sum((i[1] for i in unpaid), Decimal(0))),
        "open_plans": open_plans,
        "max_days_past_due": max(overdue, default=0),
        "late_payments_90d": sum(1 for i in late if t - 90 * DAY < _epoch(i[2]) <= t),
        "on_time_rate": round(on_time / fell_due, 3) if fell_due else None,
        "orders_1h": len(window(3600)),
        "orders_24h": len(window(DAY)),
        "orders_7d": len(week),
        "amount_24h": _money(sum((w[0] for w in window(DAY)), Decimal(0))),
        "amount_7d": _money(sum((w[0] for w in week), Decimal(0))),
        "distinct_merchants_7d": len({w[1] for w in week}),
        # credit_decision v2
        "amount_1h": _money(sum((w[0] for w in window(3600)), Decimal(0))),
        "avg_order_value_7d": round(int(sum((w[0] for w in week), Decimal(0)) * 100) / (100 * len(week)), 2)
                              if week else 0.0,
    }


@pytest.fixture(scope="module")
def exported(seeded_database: dict[str, Any], bigquery_emulator: Any) -> Iterator[OfflineStore]:
    """The session's seeded database exported into a dataset of this module (read-only afterwards)."""
    client = bigquery_emulator.client()
    offline = OfflineStore(client, f"pit_{secrets.token_hex(4)}", api_timeout_s=30, job_timeout_s=600)
    settings = Settings.from_env(base_env(seeded_database["database"]))
    pool = PostgresPool(settings.postgres)
    try:
        etl = Etl(ExportSource(pool), offline, settings.etl.model_copy(update={"batch_rows": 100_000}))
        assert etl.export("pit-export")["done"]
        yield offline
    finally:
        pool.close()
        client.delete_dataset(offline.dataset, delete_contents=True, not_found_ok=True)


@pytest.fixture(scope="module")
def source(seeded_database: dict[str, Any]) -> Iterator[pg8000.native.Connection]:
    conn = admin_connection(seeded_database["database"])
    conn.run("SET TIME ZONE 'UTC'")
    yield conn
    conn.close()


def sample_labels(conn: pg8000.native.Connection, now: datetime) -> list[tuple[str, datetime, int]]:
    """Label rows at the instants where features change, plus random ones."""
    rng = random.Random(11)
    labels: list[tuple[str, datetime, int]] = []
    orders = conn.run("SELECT user_id, created_at FROM transactions WHERE status IN ('completed', 'pending') "
                      "AND created_at > now() - interval '30 days' ORDER BY transaction_id LIMIT 2000")
    for user_id, at in rng.sample(orders, 40):
        labels.append((user_id, at, 1))  # the order's own instant: included (windows end at the instant)
        labels.append((user_id, at - timedelta(microseconds=1), 0))  # just before it
        if at + timedelta(hours=1) <= now:
            labels.append((user_id, at + timedelta(hours=1), 0))  # the 1-hour window's edge: out of it
    dues = conn.run("SELECT user_id, due_date FROM installments WHERE paid_at IS NULL OR paid_at::date > due_date "
                    "ORDER BY plan_id, seq LIMIT 2000")
    for user_id, due in rng.sample(dues, 30):
        end_of_due = datetime(due.year, due.month, due.day, tzinfo=UTC) + timedelta(days=1)
        for moment in (end_of_due - timedelta(microseconds=1), end_of_due, end_of_due + timedelta(days=3)):
            if moment <= now:
                labels.append((user_id, moment, 1))
    signups = conn.run("SELECT user_id, created_at FROM users ORDER BY user_id LIMIT 500")
    for user_id, created in rng.sample(signups, 15):
        labels.append((user_id, created - timedelta(days=2), 0))  # before the user existed
    users = [r[0] for r in conn.run("SELECT user_id FROM users")]
    for _ in range(60):
        labels.append((rng.choice(users), now - timedelta(seconds=rng.uniform(0, 400 * DAY)), rng.choice([0, 1])))
    return labels


def write_csv(path: Path, rows: list[tuple[Any, ...]], header: tuple[str, ...] = ("user_id", "decision_time",
                                                                                     "label")) -> Path:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_training_rows_equal_the_independent_recomputation_as_of_each_decision(
        exported: OfflineStore, source: pg8000.native.Connection, tmp_path: Path) -> None:
    version = VERSIONS[-1]  # the newest holds every feature of the older ones
    now = datetime.now(UTC)
    labels = sample_labels(source, now)
    path = write_csv(tmp_path / "labels.csv", [(u, t.isoformat(), y) for u, t, y in labels])

    # Chunks of 100 label rows: the table is built in several statements, as a large one is.
    training = TrainingSets(TrainingStore(exported), "credit_decision", chunk=100)
    built = training.from_file(path, f"train_v{version}", version)

    fs = CATALOG[("credit_decision", version)]
    rows = exported.run(f"SELECT * FROM {exported.table(f'train_v{version}')} ORDER BY label_row")
    assert built["rows"] == len(labels) == len(rows)
    mismatches = []
    for row in rows:
        user_id, at, label = labels[row["label_row"] - 1]
        assert (row["user_id"], row["decision_time"], row["label"]) == (user_id, at, label)
        expected = reference_asof(source, user_id, at)
        unknown = set(fs.names) - set(expected)
        assert not unknown, f"reference_asof does not compute {sorted(unknown)}: extend it with the new features"
        mismatches += [(row["label_row"], user_id, at.isoformat(), n, row[n], expected[n])
                       for n in fs.names if row[n] != expected[n]]
    assert not mismatches, f"{len(mismatches)} values differ, first ones: {mismatches[:10]}"


def test_a_label_table_in_bigquery_gives_the_same_rows_as_the_file(
        exported: OfflineStore, source: pg8000.native.Connection, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    labels = sample_labels(source, now)[:40]
    path = write_csv(tmp_path / "labels.csv", [(u, t.isoformat(), y) for u, t, y in labels])
    exported.load_csv(path, "decisions", [("user_id", "STRING"), ("decision_time", "TIMESTAMP"), ("label", "INT64")])
    training = TrainingSets(TrainingStore(exported), "credit_decision")

    from_file = training.from_file(path, "train_file")
    from_table = training.from_table("decisions", "train_table")

    assert from_file["rows"] == from_table["rows"] == len(labels)
    names = ", ".join(CATALOG[("credit_decision", from_file["version"])].names)

    def rows(table: str) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in exported.run(
            f"SELECT user_id, decision_time, label, {names} FROM {exported.table(table)} "
            "ORDER BY decision_time, user_id, label")]

    assert rows("train_file") == rows("train_table")


def test_bad_labels_are_refused_naming_the_rows(exported: OfflineStore, tmp_path: Path) -> None:
    training = TrainingSets(TrainingStore(exported), "credit_decision")
    good, future = "2026-01-05T10:00:00Z", (datetime.now(UTC) + timedelta(days=2)).isoformat()
    unknown_rows = [(f"u9{n:08d}", good, 0) for n in range(12)]
    path = write_csv(tmp_path / "unknown.csv", [("u000000001", good, 1), *unknown_rows])

    with pytest.raises(InvalidLabels) as caught:
        training.from_file(path, "never_built")

    message = caught.value.message
    assert caught.value.code == "invalid_labels"
    assert "12 rows name a user the offline store does not know" in message
    assert "row 2 (u900000000" in message and "row 11 (u900000009" in message and "and 2 more" in message
    assert "u900000011" not in message  # the first ten are named, then a count
    assert exported.columns("never_built") is None

    path = write_csv(tmp_path / "future.csv", [("u000000001", good, 1), ("u000000002", future, 0),
                                                ("u000000003", "last tuesday", 1), ("u000000004", good, "")])
    with pytest.raises(InvalidLabels) as caught:
        training.from_file(path, "never_built")
    message = caught.value.message
    assert "1 row have a decision_time in the future" in message and "row 2 (u000000002" in message
    assert "row 3 ('last tuesday')" in message
    assert "row 4 (label)" in message

    exported.run(f"CREATE TABLE {exported.table('bad_decisions')} AS SELECT 'u000000001' AS user_id, "
                 f"TIMESTAMP '{future}' AS decision_time, 1 AS label UNION ALL SELECT 'nobody', "
                 "TIMESTAMP '2026-01-01 00:00:00+00', 0")
    with pytest.raises(InvalidLabels) as caught:
        training.from_table("bad_decisions", "never_built")
    assert "in the future: row 2 (u000000001" in caught.value.message
    assert "does not know: row 1 (nobody" in caught.value.message


def test_fs_training_exits_2_naming_missing_columns_and_builds_a_table(
        exported: OfflineStore, seeded_database: dict[str, Any], bigquery_emulator: Any, tmp_path: Path,
        use_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    use_env({**base_env(seeded_database["database"]), "FS_BIGQUERY_API_ENDPOINT": bigquery_emulator.api_endpoint,
             "FS_BIGQUERY_PROJECT": bigquery_emulator.project, "FS_BIGQUERY_DATASET": exported.dataset})
    missing = write_csv(tmp_path / "missing.csv", [("u000000001", "2026-01-05T10:00:00Z")],
                        header=("user_id", "decision_time"))
    good = tmp_path / "labels.ndjson"
    good.write_text("\n".join(json.dumps({"user_id": f"u{n:09d}", "decision_time": "2026-10-01T12:00:00Z",
                                          "label": n % 2}) for n in range(5)))

    assert fs_training(["--labels", str(missing), "--table", "cli_training"]) == 2
    assert "has no column 'label'" in capsys.readouterr().err
    assert fs_training(["--labels", str(good), "--table", "cli_training", "--version", "1"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 5 and report["version"] == 1
    assert exported.run(f"SELECT COUNT(*) AS n FROM {exported.table('cli_training')}")[0]["n"] == 5


def test_changelog_images_say_what_rows_changed_later_were_at_the_decision(
        exported: OfflineStore, bigquery_emulator: Any, tmp_path: Path) -> None:
    # A copy of one user's mirrored rows in a dataset of its own, with every plan active: the baseline.
    user = exported.run(
        f"SELECT u.user_id FROM {exported.table('users')} AS u "
        f"JOIN {exported.table('risk_scores')} AS s USING (user_id) "
        f"WHERE (SELECT COUNT(*) FROM {exported.table('installment_plans')} AS p WHERE p.user_id = u.user_id "
        f"       AND p.created_at < TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 40 DAY)) >= 2 "
        f"ORDER BY u.user_id LIMIT 1")[0]["user_id"]
    offline = OfflineStore(bigquery_emulator.client(), f"pitcl_{secrets.token_hex(4)}", api_timeout_s=30)
    offline.ensure_schema()
    try:
        for table in ("users", "transactions", "risk_scores", "installment_plans", "installments"):
            offline.run(f"INSERT INTO {offline.table(table)} SELECT * FROM {exported.table(table)} "
                        f"WHERE user_id = '{user}'")
        offline.run(f"UPDATE {offline.table('installment_plans')} SET status = 'active' WHERE TRUE")
        now = datetime.now(UTC).replace(microsecond=0)
        seen, decided, later = now - timedelta(days=30), now - timedelta(days=10), now - timedelta(days=1)
        before = seen - timedelta(days=1)
        (p, q), = [tuple(r["plan_id"] for r in offline.run(
            f"SELECT plan_id FROM {offline.table('installment_plans')} WHERE created_at < {literal(before)} "
            "ORDER BY plan_id LIMIT 2"))]
        order = offline.run(f"SELECT transaction_id FROM {offline.table('transactions')} WHERE status = 'completed' "
                            f"AND created_at < {literal(before)} ORDER BY transaction_id LIMIT 1")[0]["transaction_id"]
        labels = write_csv(tmp_path / "l.csv", [(user, decided.isoformat(), 1), (user, before.isoformat(), 0)])
        training = TrainingSets(TrainingStore(offline), "credit_decision")

        def features() -> list[dict[str, Any]]:
            training.from_file(labels, "t", 1)
            return offline.run(f"SELECT * FROM {offline.table('t')} ORDER BY label_row")

        base = features()
        # Later changes the mirrors hold, and the versions the changelog saw before them.
        offline.run(f"UPDATE {offline.table('users')} SET age = 77, verification_status = 'rejected', "
                    f"updated_at = {literal(later)} WHERE TRUE")
        offline.run(f"UPDATE {offline.table('risk_scores')} SET risk_score = 0.999, calculated_at = {literal(later)} "
                    "WHERE TRUE")
        offline.run(f"UPDATE {offline.table('installment_plans')} SET status = IF(plan_id = '{p}', 'defaulted', "
                    f"'completed'), updated_at = {literal(later)} WHERE plan_id IN ('{p}', '{q}')")
        common = f"'update', '0/1', '{1:024x}', 1, {literal(seen)}, CURRENT_TIMESTAMP(), 'm1'"
        offline.run(f"INSERT INTO {offline.table('changelog_users')} (change_op, source_watermark, lsn, tx_id, "
                    "changed_at, ingested_at, message_id, row_key, user_id, age, location_country, "
                    f"verification_status, income_bracket) VALUES ({common}, '[\"{user}\"]', '{user}', 31, 'GB', "
                    "'pending', 'high')")
        offline.run(f"INSERT INTO {offline.table('changelog_risk_scores')} (change_op, source_watermark, lsn, tx_id, "
                    "changed_at, ingested_at, message_id, row_key, user_id, risk_score, fraud_probability, "
                    "payment_delays, device_trust_score, credit_utilization, calculated_at) "
                    f"VALUES ({common}, '[\"{user}\"]', '{user}', 0.25, 0.01, 3, 0.9, 0.2, {literal(seen)})")
        for plan, status in ((p, "active"), (q, "completed")):
            offline.run(f"INSERT INTO {offline.table('changelog_installment_plans')} (change_op, source_watermark, "
                        "lsn, tx_id, changed_at, ingested_at, message_id, row_key, plan_id, user_id, status) "
                        f"VALUES ({common}, '[\"{plan}\"]', '{plan}', '{user}', '{status}')")
        offline.run(f"INSERT INTO {offline.table('changelog_transactions')} (change_op, source_watermark, lsn, tx_id, "
                    "changed_at, ingested_at, message_id, row_key, transaction_id, user_id, status) "
                    f"VALUES ({common}, '[\"{order}\"]', '{order}', '{user}', 'refunded')")

        at_decision, before_any = features()
    finally:
        bigquery_emulator.client().delete_dataset(offline.dataset, delete_contents=True, not_found_ok=True)

    # At the decision: what the changelog had seen by then.
    assert (at_decision["age"], at_decision["location_country"], at_decision["verification_status"],
            at_decision["income_bracket"]) == (31, "GB", "pending", "high")
    assert (at_decision["risk_score"], at_decision["payment_delays"]) == (0.25, 3)
    assert at_decision["open_plans"] == base[0]["open_plans"] - 1  # q had completed; p was still active
    assert at_decision["total_orders"] == base[0]["total_orders"] - 1  # the order was refunded by then
    # Before the changelog saw anything: unknown, never the later values.
    assert (before_any["age"], before_any["verification_status"], before_any["risk_score"]) == (None, "pending", None)
    assert before_any["payment_delays"] == 0
    assert before_any["open_plans"] == base[1]["open_plans"]  # changed later: active at the time
    assert before_any["total_orders"] == base[1]["total_orders"]  # current status: no history before


@pytest.fixture(scope="module")
def run_etl_url(exported: OfflineStore, seeded_database: dict[str, Any], bigquery_emulator: Any,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """run_etl served by functions-framework (gunicorn) over the exported dataset."""
    env = {**os.environ, **base_env(seeded_database["database"]), "FS_BIGQUERY_PROJECT": bigquery_emulator.project,
           "FS_BIGQUERY_DATASET": exported.dataset, "FS_BIGQUERY_API_ENDPOINT": bigquery_emulator.api_endpoint}
    served = Served("run_etl", env, tmp_path_factory.mktemp("run_etl") / "run_etl.log")
    try:
        served.wait()
        yield served.url
    finally:
        served.stop()


def test_the_client_gets_a_training_set_equal_to_the_independent_recomputation(
        run_etl_url: str, exported: OfflineStore, source: pg8000.native.Connection) -> None:
    import pandas  # the client's DataFrame extra, in the dev extra

    now = datetime.now(UTC)
    labels = sample_labels(source, now)[:80]
    frame = pandas.DataFrame({"user_id": [u for u, _, _ in labels], "decision_time": [t for _, t, _ in labels],
                              "label": [y for _, _, y in labels]})

    with FeatureStoreClient.over_rest("http://127.0.0.1:9", etl_url=run_etl_url) as client:
        training = client.get_historical_features(frame, version=2)
        again = client.get_historical_features([(u, t.isoformat(), y) for u, t, y in labels[:5]], version=1,
                                               destination="training_client_v1")

    fs = CATALOG[("credit_decision", 2)]
    assert training.table.startswith(f"{exported.dataset}.training_") and training.version == 2
    assert len(training.rows) == len(labels)
    mismatches = []
    for row in training.rows:
        user_id, at, label = labels[row["label_row"] - 1]
        assert (row["user_id"], datetime.fromisoformat(row["decision_time"]), row["label"]) == (user_id, at, label)
        expected = reference_asof(source, user_id, at)
        mismatches += [(row["label_row"], n, row[n], expected[n]) for n in fs.names if row[n] != expected[n]]
    assert not mismatches, f"{len(mismatches)} values differ, first ones: {mismatches[:10]}"
    table = training.to_dataframe()
    assert list(table.index[:3]) == [1, 2, 3] and str(table["orders_7d"].dtype) == "Int64"
    assert again.table == f"{exported.dataset}.training_client_v1" and len(again.rows) == 5
    assert "amount_1h" not in again.rows[0]  # v1 has no such feature


def test_the_client_names_bad_labels_and_refuses_the_offline_store_own_tables(run_etl_url: str) -> None:
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    with FeatureStoreClient.over_rest("http://127.0.0.1:9", etl_url=run_etl_url) as client:
        with pytest.raises(InvalidRequest) as bad:  # checked in the request first...
            client.get_historical_features([("u000000001", "2026-10-01T12:00:00Z", 1), ("u000000002", future, 1)])
        with pytest.raises(InvalidRequest) as unknown:  # ...then against the offline store's users
            client.get_historical_features([("u000000001", "2026-10-01T12:00:00Z", 1), ("nobody", "2026-10-01", 0)])
        with pytest.raises(InvalidRequest) as reserved:
            client.get_historical_features([("u000000001", "2026-10-01T12:00:00Z", 1)], destination="users")
        with pytest.raises(InvalidRequest) as too_many:
            client.get_historical_features([("u000000001", "2026-10-01T12:00:00Z", 1)] * 10_001)

    assert bad.value.code == "invalid_labels" and bad.value.http_status == 400
    assert "decision_time in the future" in bad.value.message and "row 2 (u000000002" in bad.value.message
    assert unknown.value.code == "invalid_labels" and "row 2 (nobody" in unknown.value.message
    assert reserved.value.code == "invalid_body" and "destination" in reserved.value.message
    assert too_many.value.code == "invalid_labels" and too_many.value.http_status is None  # refused before sending
