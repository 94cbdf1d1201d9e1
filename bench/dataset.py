"""The benchmarks' data set: a database holding a finished synthetic seed run, made when missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pg8000.native

PY = str(Path(sys.executable))
TABLES = ("users", "transactions", "risk_scores", "installment_plans", "installments")


def _connect(env: dict[str, str], database: str = "postgres") -> pg8000.native.Connection:
    return pg8000.native.Connection(user=env.get("FS_POSTGRES_USER", "postgres"), host=env["FS_POSTGRES_HOST"],
                                    port=int(env["FS_POSTGRES_PORT"]), database=database)


def ensure_data(env: dict[str, str], database: str, users: int) -> int:
    """The number of users of the database's finished seed run; seeds ``users`` users first when it has none."""
    admin = _connect(env)
    if not admin.run("SELECT 1 FROM pg_database WHERE datname = :d", d=database):
        admin.run(f'CREATE DATABASE "{database}"')
    admin.close()
    conn = _connect(env, database)
    try:
        done = conn.run("SELECT users FROM seed_runs WHERE finished_at IS NOT NULL") if conn.run(
            "SELECT to_regclass('seed_runs')")[0][0] else []
    finally:
        conn.close()
    if done:
        return int(done[0][0])
    subprocess.run([PY, "-m", "feature_store.cli.migrate"], env=env, check=True)
    subprocess.run([PY, "-m", "feature_store.cli.generate", "seed", "--users", str(users)], env=env, check=True)
    return users


def describe(env: dict[str, str], database: str) -> dict[str, int]:
    """Rows per source table: the size of the data set a benchmark ran on, to print beside its figures."""
    conn = _connect(env, database)
    try:
        return {t: int(conn.run(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}
    finally:
        conn.close()


def size_line(database: str, rows: dict[str, int]) -> str:
    return f"data set {database}: " + ", ".join(f"{n:,} {t}" for t, n in rows.items())
