"""The benchmarks' data set: a database holding a finished synthetic seed run, made when missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pg8000.native

PY = str(Path(sys.executable))


def ensure_data(env: dict[str, str], database: str, users: int) -> int:

    connect = {"user": env.get("FS_POSTGRES_USER", "postgres"), "host": env["FS_POSTGRES_HOST"],
               "port": int(env["FS_POSTGRES_PORT"])}
    admin = pg8000.native.Connection(**connect)
    if not admin.run("SELECT 1 FROM pg_database WHERE datname = :d", d=database):
        admin.run(f'CREATE DATABASE "{database}"')
    admin.close()
    conn = pg8000.native.Connection(**connect, database=database)
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
