"""The benchmarks' data set: a database holding a finished synthetic seed run, made when missing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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


def prewarm_source(env: dict[str, str], database: str) -> str:
    """Load what the point read reads into shared_buffers (pg_prewarm); a line saying what was loaded.

    The relations are those of the state statement's generic plan (sql/queries/user_state.sql: every index
    and table it scans), as a source that has answered CDC recomputations and misses for a while holds them.
    A miss then costs what it costs in production, not a first read of each page from the OS cache.
    """
    from feature_store.stores.source import _BY_IDS, render_user_state

    conn = _connect(env, database)
    try:
        buffers_mb = int(conn.run("SELECT CAST(setting AS bigint) * 8 / 1024 FROM pg_settings "
                                  "WHERE name = 'shared_buffers'")[0][0])
        if not conn.run("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_prewarm'"):
            return f"source: shared_buffers {buffers_mb:,} MB, NOT prewarmed (pg_prewarm is not installed)"
        conn.run("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        conn.run("SET plan_cache_mode = force_generic_plan")
        conn.run("SET enable_seqscan = off")  # as the serving pool's connections (stores/postgres.py)
        sql = render_user_state(_BY_IDS).replace("CAST(:ids AS text[])", "CAST($1 AS text[])")
        conn.run(f"PREPARE fs_prewarm_state(text[]) AS {sql}")
        plan = conn.run("EXPLAIN (FORMAT JSON) EXECUTE fs_prewarm_state('{u000000000}')")[0][0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        names: set[str] = set()
        pending = [plan[0]["Plan"]]
        while pending:
            node = pending.pop()
            names.update(node[k] for k in ("Relation Name", "Index Name") if k in node)
            pending.extend(node.get("Plans", ()))
        started = time.monotonic()
        size = 0
        for name in sorted(names):
            size += int(conn.run("SELECT pg_relation_size(CAST(:r AS regclass))", r=name)[0][0])
            conn.run("SELECT pg_prewarm(CAST(:r AS regclass))", r=name)
        return (f"source: shared_buffers {buffers_mb:,} MB; the {len(names)} relations the point read's plan reads "
                f"prewarmed ({size / 2**20:,.0f} MB in {time.monotonic() - started:.1f} s)")
    finally:
        conn.close()
