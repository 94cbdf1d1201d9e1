"""fs-generate and fs-migrate as an operator runs them: real processes on real databases.

test_generator.py calls ``generate.seed`` in-process with one worker; these run the command lines
(``python -m feature_store.cli...``): ``seed`` with two worker processes and an ``--as-of``,
``seed`` again over a finished run, ``live`` on a seeded and on an empty database, and
``fs-migrate status`` before and after migrating.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from conftest import Databases, admin_connection, base_env
from feature_store.stores.sql_files import sql_root

AS_OF = "2026-06-30T12:00:00Z"
# One block of the generator (10,000 users): with --workers 2 it is made in a worker process and
# copied by the parent, which must load exactly what one process alone loads.
USERS = 700


def cli(module: str, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**base_env(database), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", f"feature_store.cli.{module}", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def counts(database: str) -> dict[str, int]:
    conn = admin_connection(database)
    try:
        return {t: int(conn.run(f"SELECT count(*) FROM {t}")[0][0])
                for t in ("users", "transactions", "installment_plans", "installments", "risk_scores")}
    finally:
        conn.close()


def printed(stdout: str) -> dict[str, int]:
    """The ``table=count`` line a successful command prints last."""
    return {k: int(v.replace(",", "")) for k, v in (item.split("=") for item in stdout.split())}


def digest(database: str, table: str, key: str) -> str:
    conn = admin_connection(database)
    try:
        return str(conn.run(f"SELECT md5(string_agg(x::text, '|' ORDER BY {key})) FROM {table} AS x")[0][0])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def databases_module() -> Iterator[Databases]:
    dbs = Databases()
    yield dbs
    dbs.drop_all()


def seeded(dbs: Databases, workers: int) -> str:
    """A database loaded by ``fs-generate seed`` with ``workers`` worker processes."""
    name = dbs.create()
    done = cli("generate", name, "seed", "--users", str(USERS), "--as-of", AS_OF, "--workers", str(workers))
    assert done.returncode == 0, done.stderr
    assert printed(done.stdout) == counts(name)  # what it says it loaded is what is there
    return name


def test_seed_with_two_workers_loads_what_one_worker_loads(databases_module: Databases) -> None:
    two = seeded(databases_module, workers=2)
    one = seeded(databases_module, workers=1)

    loaded = counts(two)
    assert loaded["users"] == USERS and loaded["transactions"] > USERS
    assert loaded == counts(one)
    for table, key in (("users", "user_id"), ("transactions", "transaction_id"), ("installments", "plan_id, seq")):
        assert digest(two, table, key) == digest(one, table, key), table


def test_seeding_a_finished_run_again_changes_nothing(databases_module: Databases) -> None:
    name = databases_module.create()
    first = cli("generate", name, "seed", "--users", "300", "--workers", "1")
    before = counts(name)

    again = cli("generate", name, "seed", "--users", "300", "--workers", "1")

    assert first.returncode == 0 and again.returncode == 0, (first.stderr, again.stderr)
    assert "300 users with seed 42 are already loaded" in again.stderr
    assert counts(name) == before


def test_a_malformed_as_of_is_refused_with_exit_2(databases_module: Databases) -> None:
    done = cli("generate", databases_module.create(), "seed", "--users", "10", "--as-of", "last tuesday")

    assert done.returncode == 2
    assert "--as-of must be an ISO 8601 instant, got 'last tuesday'" in done.stderr
    assert "Traceback" not in done.stderr


def test_live_commits_orders_stamped_now_and_pays_due_installments(databases_module: Databases) -> None:
    name = seeded(databases_module, workers=1)
    before = counts(name)
    conn = admin_connection(name)
    try:
        due = int(conn.run("SELECT count(*) FROM installments WHERE paid_at IS NULL AND due_date <= CURRENT_DATE")
                  [0][0])
        started = datetime.now(UTC)

        done = cli("generate", name, "live", "--orders", "5", "--payments", "3", "--seed", "9")

        assert done.returncode == 0, done.stderr
        new_orders = conn.run("SELECT user_id FROM transactions WHERE created_at >= :t AND status = 'completed'",
                              t=started)
        paid_now = int(conn.run("SELECT count(*) FROM installments WHERE paid_at >= :t", t=started)[0][0])
    finally:
        conn.close()
    assert due > 0, "the seeded data set has installments due: the payment half would test nothing"
    assert printed(done.stdout) == {"orders": 5, "payments": min(3, due)}
    assert len(new_orders) == 5 and counts(name)["transactions"] == before["transactions"] + 5
    assert paid_now == min(3, due)


def test_live_on_an_empty_database_is_refused_with_exit_3(databases_module: Databases) -> None:
    done = cli("generate", databases_module.create(), "live", "--orders", "1")

    assert done.returncode == 3
    assert "[no_users]" in done.stderr and "run fs-generate seed first" in done.stderr


def test_migrate_status_lists_every_migration_pending_then_applied(databases_module: Databases) -> None:
    name = databases_module.create(migrated=False)
    files = sorted(p.name for p in (sql_root() / "postgres").glob("*.sql"))

    pending = cli("migrate", name, "status")
    applied = cli("migrate", name)
    status = cli("migrate", name, "status")

    assert pending.returncode == applied.returncode == status.returncode == 0, (pending.stderr, applied.stderr)
    assert pending.stdout.split("\n")[:-1] == [f"pending  {f}" for f in files] != []
    assert status.stdout.split("\n")[:-1] == [f"applied  {f}" for f in files]
