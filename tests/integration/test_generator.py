"""The synthetic data generator: deterministic, counted, resumable, and strict about sizes."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from conftest import Databases, admin_connection, base_env
from feature_store.cli import generate
from feature_store.domain.synthetic import BLOCK_USERS, generate_block
from feature_store.settings import Settings
from feature_store.stores.postgres import PostgresPool

AS_OF = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
TABLES = {"users": "user_id", "transactions": "transaction_id", "installment_plans": "plan_id",
          "installments": "plan_id, seq", "risk_scores": "user_id"}


def seed_db(database: str, users: int, seed: int = 42) -> dict[str, int]:
    pool = PostgresPool(Settings.from_env(base_env(database)).postgres, bulk=True)  # as fs-generate seeds
    try:
        with pool.connection() as conn:
            return generate.seed(conn, users, seed, AS_OF, workers=1, reset=False)
    finally:
        pool.close()


def fingerprint(database: str) -> dict[str, tuple[int, str]]:
    conn = admin_connection(database)
    try:
        return {t: tuple(conn.run(f"SELECT count(*), md5(COALESCE(string_agg(x::text, '|' ORDER BY {k}), '')) "
                                  f"FROM {t} AS x")[0]) for t, k in TABLES.items()}
    finally:
        conn.close()


def test_blocks_are_deterministic_for_a_seed() -> None:
    a = generate_block(7, 0, 500, AS_OF)
    b = generate_block(7, 0, 500, AS_OF)
    c = generate_block(8, 0, 500, AS_OF)
    assert a.tables() == b.tables()
    assert a.transactions != c.transactions


def test_data_has_the_promised_shape() -> None:
    block = generate_block(1, 0, 5000, AS_OF)
    per_user: dict[str, int] = {}
    for row in block.transactions:
        uid = row.split(",")[1]
        per_user[uid] = per_user.get(uid, 0) + 1
    counts = sorted(per_user.values())
    assert counts[len(counts) // 2] <= 8          # most users: a few orders
    assert counts[-1] >= 60                       # some users: many
    plans = [r.split(",") for r in block.plans]
    assert {p[5] for p in plans} == {"active", "completed", "defaulted"}
    assert len(block.installments) == 4 * len(block.plans)
    late = sum(1 for r in block.installments if (f := r.split(","))[5] and f[5][:10] > f[3])
    assert 0 < late < len(block.installments) / 2
    merchants: dict[str, int] = {}
    for row in block.transactions:
        m = row.split(",")[4]
        merchants[m] = merchants.get(m, 0) + 1
    top = sorted(merchants.values(), reverse=True)
    assert top[0] > 20 * top[len(top) // 2]      # skewed popularity


def test_risk_scores_follow_repayment(databases: Databases) -> None:
    name = databases.create()
    seed_db(name, 4000)
    conn = admin_connection(name)
    try:
        (corr,) = conn.run("SELECT corr(r.risk_score, x.late::float) FROM risk_scores r JOIN ("
                           "SELECT user_id, count(*) FILTER (WHERE paid_at::date > due_date) AS late "
                           "FROM installments GROUP BY user_id) x USING (user_id)")[0]
    finally:
        conn.close()
    assert corr > 0.2


def test_same_seed_loads_identical_databases_with_reported_counts(databases: Databases) -> None:
    first, second = databases.create(), databases.create()

    counts = seed_db(first, 1500)
    seed_db(second, 1500)

    prints = fingerprint(first)
    assert prints == fingerprint(second)
    assert {t: prints[t][0] for t in TABLES} == counts
    assert counts["users"] == 1500
    assert counts["transactions"] > 5 * 1500


def test_interrupted_seed_resumes_to_the_same_data(databases: Databases, monkeypatch: pytest.MonkeyPatch) -> None:
    users = 2 * BLOCK_USERS + 500
    reference, resumed = databases.create(), databases.create()
    seed_db(reference, users)
    real_copy = generate.copy_block
    calls = {"n": 0}

    def failing_copy(conn, block):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_copy(conn, block)

    monkeypatch.setattr(generate, "copy_block", failing_copy)
    with pytest.raises(KeyboardInterrupt):
        seed_db(resumed, users)
    monkeypatch.setattr(generate, "copy_block", real_copy)
    assert fingerprint(resumed)["users"][0] == BLOCK_USERS  # one block landed, the failed one rolled back

    seed_db(resumed, users)

    assert fingerprint(resumed) == fingerprint(reference)


@pytest.mark.parametrize("users", ["0", "-5", "abc", "1.5", "100000000000"])
def test_nonsense_sizes_are_refused_with_exit_2(users: str) -> None:
    result = subprocess.run([sys.executable, "-m", "feature_store.cli.generate", "seed", "--users", users],
                            env={**base_env("postgres"), "PATH": "/usr/bin:/bin"}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "--users must be" in result.stderr
    assert "Traceback" not in result.stderr


def test_seeding_over_foreign_data_is_refused(databases: Databases) -> None:
    name = databases.create()
    conn = admin_connection(name)
    try:
        conn.run("INSERT INTO users (user_id, signup_date) VALUES ('someone', CURRENT_DATE)")
    finally:
        conn.close()
    from feature_store.errors import Conflict

    with pytest.raises(Conflict):
        seed_db(name, 100)
