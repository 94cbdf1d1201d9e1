"""The BigQuery features equal the online definitions: same users, same instants, same values.

States of sampled users are built in BigQuery (the emulator) from the mirrored tables by
sql/bigquery/queries/user_state_asof.sql with every feature's bq_sql on top, and each value is
compared with ``FeatureSet.evaluate`` on the user's state computed by PostgreSQL
(sql/queries/user_state.sql) at several instants: now, and later ones where velocity windows,
days-since and days-past-due have moved on. Then the daily snapshot is built the way run_etl
builds it.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import base_env
from feature_store.domain.catalog import CATALOG, Instant
from feature_store.services.etl import Etl
from feature_store.settings import Settings
from feature_store.stores.bigquery_features import PY_ROUND, features_sql, literal, script
from feature_store.stores.bigquery_offline import OfflineStore
from feature_store.stores.dialect import POSTGRESQL
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.postgres_export import ExportSource
from feature_store.stores.source import SourceStore

pytest_plugins = ["bq_fixture"]
pytestmark = pytest.mark.bigquery

VERSIONS = sorted(v for (name, v) in CATALOG if name == "credit_decision")
LATER = (timedelta(0), timedelta(minutes=59), timedelta(hours=23, minutes=30), timedelta(days=1, seconds=1),
         timedelta(days=8), timedelta(days=95))


@pytest.fixture(scope="module")
def exported(seeded_database: dict[str, Any], bigquery_emulator: Any) -> Iterator[tuple[OfflineStore, Etl]]:
    client = bigquery_emulator.client()
    offline = OfflineStore(client, f"snap_{secrets.token_hex(4)}", api_timeout_s=30, job_timeout_s=600)
    settings = Settings.from_env(base_env(seeded_database["database"]))
    pool = PostgresPool(settings.postgres)
    try:
        # Chunks of 1,600 users: the snapshot is built in two statements, as a large one is.
        etl = Etl(ExportSource(pool), offline,
                  settings.etl.model_copy(update={"batch_rows": 100_000, "feature_chunk": 1600}))
        assert etl.export("snap-export")["done"]
        yield offline, etl
    finally:
        pool.close()
        client.delete_dataset(offline.dataset, delete_contents=True, not_found_ok=True)


@pytest.fixture(scope="module")
def states(seeded_database: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL states of a sample that covers every kind of user (orders, plans, late payers, none)."""
    pool = PostgresPool(Settings.from_env(base_env(seeded_database["database"])).postgres)
    try:
        source = SourceStore(pool, POSTGRESQL)
        every = source.states_for([f"u{n:09d}" for n in range(3000)])
    finally:
        pool.close()
    kinds = [lambda s: s.recent_orders, lambda s: s.unpaid, lambda s: s.late_paid_at, lambda s: s.paid_late,
             lambda s: s.risk_score is None, lambda s: s.total_orders == 0, lambda s: s.open_plans > 1,
             lambda s: len(s.recent_orders) >= 3]
    chosen = {u for kind in kinds for u in sorted(u for u, s in every.items() if kind(s))[:40]}
    chosen |= set(sorted(every)[::25])
    return {u: every[u] for u in sorted(chosen)}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_feature_in_bigquery_equals_the_catalog_at_each_instant(
        exported: tuple[OfflineStore, Etl], states: dict[str, Any], version: int, tmp_path: Path) -> None:
    offline, _ = exported
    fs = CATALOG[("credit_decision", version)]
    # The source states' own instant: every change they saw happened at or before it.
    base = datetime.fromtimestamp(max(s.computed_at for s in states.values()), UTC)
    instants = [base + d for d in LATER]
    listed = tmp_path / "requests.csv"
    listed.write_text("req_id,user_id,as_of\n" + "".join(
        f"{u}|{i},{u},{at.isoformat()}\n" for u in states for i, at in enumerate(instants)))
    offline.load_csv(listed, f"requests_v{version}", [("req_id", "STRING"), ("user_id", "STRING"),
                                                      ("as_of", "TIMESTAMP")])
    requests = f"SELECT req_id, user_id, as_of FROM {offline.table(f'requests_v{version}')}"
    table = f"features_v{version}"
    offline.run(script(f"CREATE TABLE {offline.table(table)} AS\n"
                       f"{features_sql(fs, offline.dataset, requests, ['req_id', 'user_id', 'as_of'])}"))

    rows = offline.run(f"SELECT * FROM {offline.table(table)}")

    assert len(rows) == len(states) * len(instants)
    mismatches = []
    for row in rows:
        user_id, i = row["req_id"].split("|")
        at = instants[int(i)]
        assert row["as_of"] == at
        expected = {n: v for group in fs.evaluate(states[user_id], Instant(at.timestamp())).values()
                    for n, v in group.items()}
        mismatches += [(user_id, at.isoformat(), n, row[n], v) for n, v in expected.items() if row[n] != v]
    assert not mismatches, f"{len(mismatches)} values differ, first ones: {mismatches[:10]}"


def test_py_round_rounds_as_python_does(exported: tuple[OfflineStore, Etl]) -> None:
    offline, _ = exported
    values = [0.0, 1e-5, 0.005, 0.015, 0.0625, 0.125, 0.3125, 1.005, 2.675, 10.005, 12.345, 50.125, 123456.785,
              2.5, 3.5, 1 / 3, 2 / 3, 7.0, -2.675, -0.125, 99999.995]
    listed = ", ".join(literal(v) for v in values)

    rows = offline.run(f"{PY_ROUND}\nSELECT x, py_round(x, 0) AS r0, py_round(x, 2) AS r2, py_round(x, 3) AS r3 "
                       f"FROM UNNEST([{listed}]) AS x")

    got = {r["x"]: (r["r0"], r["r2"], r["r3"]) for r in rows}
    assert got == {v: (float(round(v)), round(v, 2), round(v, 3)) for v in values}
    assert not math.isclose(got[50.125][1], 50.13)  # BigQuery's ROUND would say 50.13


def test_snapshot_holds_every_user_once_as_of_the_end_of_the_day(
        exported: tuple[OfflineStore, Etl], seeded_database: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    offline, etl = exported
    day = date.today() - timedelta(days=1)
    fs = etl.feature_set()
    logging.getLogger().addHandler(caplog.handler)  # logs.configure() may have replaced the root handlers
    caplog.set_level(logging.INFO, "feature_store")

    try:
        built = etl.snapshot("snap-1", day)  # a day built again replaces its rows: tests/e2e/test_etl_workflow.py
    finally:
        logging.getLogger().removeHandler(caplog.handler)

    progress = [r.fields for r in caplog.records if r.getMessage() == "snapshot progress"]  # type: ignore[attr-defined]
    assert [(p["chunks_done"], p["chunks"]) for p in progress] == [(1, 2), (2, 2)]  # 3,000 users, chunks of 1,600
    assert progress[-1]["eta_s"] == 0

    table = offline.table("feature_snapshots")
    next_day = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    users = offline.run(f"SELECT COUNT(*) AS n FROM {offline.table('users')} WHERE created_at < {literal(next_day)}")
    counts = offline.run(
        f"SELECT COUNT(*) AS n, COUNT(DISTINCT user_id) AS users, MIN(as_of) AS lo, MAX(as_of) AS hi, "
        f"ARRAY_AGG(DISTINCT etl_run_id) AS runs FROM {table} WHERE snapshot_date = {literal(day)} "
        f"AND feature_set_version = {fs.version}")[0]
    end_of_day = next_day - timedelta(microseconds=1)
    assert built["rows"] == counts["n"] == counts["users"] == users[0]["n"] > 0
    assert counts["lo"] == counts["hi"] == end_of_day
    assert counts["runs"] == ["snap-1"]
    assert built["version"] == max(VERSIONS)
    sample = offline.run(f"SELECT * FROM {table} WHERE snapshot_date = {literal(day)} AND user_id = 'u000000042'")
    assert sample and all(sample[0][n] is not None for n in fs.names if
                          next(f for f in fs.features if f.name == n).default is not None)
