"""The chunk checksum on real PostgreSQL (what it tells apart), and pass 1 of the verification with several
chunks in flight (the same verdict as one at a time; resumable wherever a call stops)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from feature_store.services.migration.verify import Verifier
from feature_store.settings import Settings
from feature_store.stores.dialect import POSTGRESQL
from feature_store.stores.migration_chunks import checksum
from feature_store.stores.migration_tables import MIGRATED, TableSpec, canonical, key_range, order_by
from feature_store.stores.postgres import PostgresPool

from .conftest import MigrationDatabases, rows
from .test_migration_backfill import backfill_all

COLUMNS = (("id", "character varying"), ("a", "character varying"), ("b", "character varying"),
           ("n", "numeric"), ("at", "timestamp with time zone"), ("d", "date"))
ROWS = [("k1", "x", "y", "1.50", "2026-01-02 03:04:05.000006+00", "2026-01-02"),
        ("k2", "", None, "0.00", None, None),
        ("k3", "x,y", "z", "-2.25", "2026-12-31 23:59:59+00", "2026-12-31"),
        ("k4", "NULL", "'q'", "10.00", "2026-06-01 00:00:00+00", "2026-06-01")]


@pytest.fixture(scope="module")
def probe(migration_dbs: MigrationDatabases) -> Iterator[tuple[str, PostgresPool]]:
    from conftest import base_env

    database = migration_dbs.create(migrated=False)
    pool = PostgresPool(Settings.from_env(base_env(database)).postgres)
    yield database, pool
    pool.close()


def table(database: str, name: str, content: list[tuple[Any, ...]]) -> TableSpec:
    """A fresh table ``name`` holding ``content`` (inserted in the order given)."""
    rows(database, f"DROP TABLE IF EXISTS {name}")
    rows(database, f"CREATE TABLE {name} (id VARCHAR(10) PRIMARY KEY, a VARCHAR(10), b VARCHAR(10), "
                   "n NUMERIC(10, 2), at TIMESTAMPTZ, d DATE)")
    for row in content:
        values = ", ".join("NULL" if v is None else "'" + v.replace("'", "''") + "'" for v in row)
        rows(database, f"INSERT INTO {name} VALUES ({values})")
    return TableSpec(name, ("id",), COLUMNS)


def digest(pool: PostgresPool, spec: TableSpec) -> tuple[int, str]:
    found = checksum(pool, POSTGRESQL, spec, None, None)
    return found.rows, found.md5


def test_the_checksum_is_the_md5_of_the_rows_in_key_order_whatever_order_they_were_stored_in(
        probe: tuple[str, PostgresPool]) -> None:
    database, pool = probe
    forward = table(database, "probe_forward", ROWS)
    backward = table(database, "probe_backward", ROWS[::-1])
    row = " || ',' || ".join(f"quote_nullable({canonical(c, t, 'postgresql')})" for c, t in COLUMNS)
    # The form recorded before (an ordered aggregate): the new statement must give the same digest.
    ordered_aggregate = (f"SELECT count(*), md5(string_agg({row}, chr(10) ORDER BY {order_by(forward)})) "
                         f"FROM probe_backward WHERE {key_range(forward, None, None)}")

    assert digest(pool, forward) == digest(pool, backward) == tuple(rows(database, ordered_aggregate)[0])
    assert digest(pool, forward)[0] == 4


@pytest.mark.parametrize("change", [
    pytest.param(lambda r: [r[0], ("k2", "", None, "0.01", None, None), *r[2:]], id="a changed value"),
    pytest.param(lambda r: [r[0], *r[2:]], id="a missing row"),
    pytest.param(lambda r: [*r, ("k5", None, None, None, None, None)], id="an extra row"),
    pytest.param(lambda r: [r[0], ("k2", None, None, "0.00", None, None), *r[2:]], id="NULL instead of ''"),
    pytest.param(lambda r: [*r[:3], ("k4", None, "'q'", "10.00", "2026-06-01 00:00:00+00", "2026-06-01")],
                 id="NULL instead of the text NULL"),
    pytest.param(lambda r: [("k1", "y", "x", *r[0][3:]), *r[1:]], id="two columns' values swapped"),
    pytest.param(lambda r: [*r[:2], ("k3", "x", "y,z", *r[2][3:]), r[3]], id="a comma moved between columns"),
    pytest.param(lambda r: [r[0], r[1], (*r[2][:4], "2026-12-31 23:59:59.000001+00", r[2][5]), r[3]],
                 id="a microsecond later"),
])
def test_the_checksum_tells_apart(probe: tuple[str, PostgresPool], change: Any) -> None:
    database, pool = probe
    before = table(database, "probe_before", ROWS)
    after = table(database, "probe_after", change(ROWS))

    assert digest(pool, before) != digest(pool, after)


def pass1(migration: Any, job: str, workers: int, budget_s: float = 3600.0,
          clock: Any = None) -> list[dict[str, Any]]:
    phases = migration.phases
    verifier = Verifier(phases.source, phases.target, phases.forward, phases.state, phases.config.chunk_rows,
                        recheck_attempts=0, recheck_delay_s=0.0, workers=workers,
                        **({"clock": clock} if clock else {}))
    verifier._pass1(job, MIGRATED, verifier._clock() + budget_s)
    return list(phases.state.checks(job))


def test_chunks_in_flight_give_the_verdict_of_one_chunk_at_a_time(pair: dict[str, Any], migration: Any) -> None:
    migration.phases.prepare()
    backfill_all(migration.phases)
    target = pair["target"]
    rows(target, "UPDATE users SET age = 3 WHERE user_id = 'u000000005'")
    rows(target, "DELETE FROM installments WHERE (plan_id, seq) = (SELECT max(plan_id), 1 FROM installments)")
    rows(target, "INSERT INTO risk_scores (user_id, risk_score) VALUES ('u999999999', 0.5)")

    one = pass1(migration, "verify:one-at-a-time", workers=1)
    three = pass1(migration, "verify:three-in-flight", workers=3)

    assert one == three
    assert {(c["table"], c["status"]) for c in one if c["status"] != "equal"} == {
        ("users", "different"), ("installments", "different"), ("risk_scores", "different")}
    for name in MIGRATED:
        chunks = [c for c in one if c["table"] == name]
        assert [c["chunk"] for c in chunks] == list(range(len(chunks))) and chunks[-1]["last"] is None
        assert sum(c["source_rows"] for c in chunks) == rows(pair["source"], f"SELECT count(*) FROM {name}")[0][0]


def test_pass_one_stopped_by_its_budget_resumes_with_every_chunk_once_in_order(pair: dict[str, Any],
                                                                             migration: Any) -> None:
    migration.phases.prepare()
    backfill_all(migration.phases)
    ticks = itertools.count()  # every look at the clock is a second: a call stops after a few chunks
    calls, stopped_mid_table = 0, 0
    while True:
        calls += 1
        checks = pass1(migration, "verify:resumed", workers=2, budget_s=4.0, clock=lambda: float(next(ticks)))
        started = {c["table"] for c in checks}
        finished = {c["table"] for c in checks if c["last"] is None}
        if finished == set(MIGRATED):
            break
        stopped_mid_table += bool(started - finished)
        assert calls < 500

    whole = pass1(migration, "verify:whole", workers=2)
    assert stopped_mid_table >= 2  # calls did stop with a table half compared, and the next went on from there
    assert [(c["table"], c["chunk"], c["after"], c["last"], c["source_sum"], c["target_sum"]) for c in checks] == [
        (c["table"], c["chunk"], c["after"], c["last"], c["source_sum"], c["target_sum"]) for c in whole]
    assert all(c["status"] == "equal" for c in checks)
