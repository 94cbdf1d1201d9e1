"""Offline store benchmark: the ETL of a large source end to end and a point-in-time training set.

    .venv/bin/python bench/offline.py [--users 1000000] [--labels 100000] [--endpoint http://127.0.0.1:9050]
                                      [--database fs_bench] [--skip export,snapshot,training] [--keep]

Source: the PostgreSQL database ``fs_bench`` (FS_POSTGRES_HOST/PORT, default 127.0.0.1:5432). It is
reused when it holds a finished ``fs-generate seed`` run of --users users with seed 42 (another
benchmark uses the same database: it is never reset), else seeded first (minutes for 1M users).
BigQuery: the emulator at --endpoint, or a private one started and stopped here. Each run writes
a fresh dataset and drops it at the end (--keep to keep it).

Printed figures: seconds and rows/s of the full export (per table and in total), of the daily
snapshot (users/s) and of the training set (label rows/s). The emulator is DuckDB behind a REST
layer on two shared cores; real BigQuery's figures differ in kind (slots, not cores), so compare
runs of this script with each other, not with production. Results also go to bench/results/.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "emulators"))

from processes import free_port  # noqa: E402

from feature_store.cli.generate import seed  # noqa: E402
from feature_store.services.etl import Etl  # noqa: E402
from feature_store.services.migrations import ensure_partitions, load_migrations, migrate, month_start  # noqa: E402
from feature_store.services.training import TrainingSets  # noqa: E402
from feature_store.settings import Settings  # noqa: E402
from feature_store.stores.postgres import PostgresPool  # noqa: E402
from feature_store.stores.sql_files import sql_root  # noqa: E402

DATABASE = "fs_bench"
SEED = 42


def say(text: str) -> None:
    print(f"[bench-offline] {text}", flush=True)


class ProgressEcho(logging.Handler):
    """Prints the ETL's own progress records (rows and rate per export batch, ETA per snapshot chunk)."""

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        say("  " + record.getMessage() + ": " + ", ".join(f"{k} {v}" for k, v in fields.items() if k != "run_id"))


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    import stack  # emulators/stack.py: the private HOME the emulator needs offline

    rest, grpc = free_port(), free_port()
    binary = ROOT / ".local" / "venvs" / "bq" / "bin" / "bqemulator"
    log = open(tempfile.gettempdir() + f"/bench_offline_bq_{rest}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(binary), "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest),
                             "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc), "--project", "bench-project"],
                            stdout=log, stderr=subprocess.STDOUT, env=stack.bigquery_env(), start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", rest), timeout=0.3).close()
            return proc, f"http://127.0.0.1:{rest}"
        except OSError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit(f"the BigQuery emulator did not start; see {log.name}")


class MemoryGuard:
    """Watches the emulator's resident memory: records the peak, stops it past a limit.

    The emulator is DuckDB in memory on a machine shared with other work; a runaway statement must
    not take the machine's memory with it.
    """

    def __init__(self, pid: int, limit_gb: float) -> None:
        self.pid, self.limit = pid, limit_gb * 2**30
        self.peak = 0
        self.tripped = False
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _rss(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            rss = self._rss()
            self.peak = max(self.peak, rss)
            if rss > self.limit:
                self.tripped = True
                say(f"the emulator holds {rss / 2**30:.1f} GB, over the {self.limit / 2**30:.0f} GB limit: stopping it")
                os.killpg(self.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._stop.set()


def ensure_source(settings: Settings, users: int) -> dict[str, int]:
    """Migrate the database and make sure it holds a finished seed of ``users`` users; return row counts."""
    import pg8000.native

    pg = settings.postgres
    admin = pg8000.native.Connection(user=pg.user, host=pg.host, port=pg.port, database="postgres")
    if not admin.run("SELECT 1 FROM pg_database WHERE datname = :n", n=pg.database):
        admin.run(f'CREATE DATABASE "{pg.database}"')
    admin.close()
    pool = PostgresPool(pg, bulk=True)
    try:
        with pool.connection() as conn:
            migrate(conn, load_migrations(sql_root() / "postgres"))
            today = datetime.now(UTC).date()
            ensure_partitions(conn, month_start(today, -40), month_start(today, 3))
            conn.execute("CREATE TABLE IF NOT EXISTS seed_runs (run_key TEXT PRIMARY KEY, seed BIGINT NOT NULL, "
                         "users BIGINT NOT NULL, as_of TIMESTAMPTZ NOT NULL, started_at TIMESTAMPTZ NOT NULL "
                         "DEFAULT now(), finished_at TIMESTAMPTZ)")
            done = conn.run("SELECT as_of FROM seed_runs WHERE seed = :s AND users = :u AND finished_at IS NOT NULL",
                            s=SEED, u=users)
            if done:
                say(f"reusing {pg.database}: {users:,} users seeded as of {done[0][0]:%Y-%m-%d %H:%M}")
            else:
                say(f"seeding {pg.database} with {users:,} users (seed {SEED}); this takes minutes")
                seed(conn, users, SEED, None, workers=2, reset=False)
            return {t: int(conn.run(f"SELECT count(*) FROM {t}")[0][0]) for t in
                    ("users", "transactions", "risk_scores", "installment_plans", "installments")}
    finally:
        pool.close()


def write_labels(path: Path, n: int, users: int, now: datetime) -> None:
    rng = random.Random(7)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id", "decision_time", "label"])
        for _ in range(n):
            moment = now - timedelta(seconds=rng.uniform(3600, 180 * 86400))
            writer.writerow([f"u{rng.randrange(users):09d}", moment.isoformat(), int(rng.random() < 0.1)])


def export(etl: Etl, results: dict[str, Any]) -> None:
    """One full export call (no budget), timed per table."""
    t0 = time.perf_counter()
    answer = etl.export(f"bench-{secrets.token_hex(3)}", full=True)
    export_s = time.perf_counter() - t0
    rows = sum(t["rows"] for t in answer["tables"].values())
    results["export"] = {"seconds": round(export_s, 1), "rows": rows, "rows_per_s": round(rows / export_s),
                         "done": answer["done"],
                         "tables": {n: {"rows": t["rows"], "batches": t["batches"], "seconds": t["seconds"],
                                        "rows_per_s": round(t["rows"] / max(t["seconds"], 1e-9))}
                                    for n, t in answer["tables"].items()}}
    for n, t in results["export"]["tables"].items():
        say(f"  {n:<18} {t['rows']:>11,} rows {t['seconds']:>8.1f} s {t['rows_per_s']:>9,} rows/s")
    say(f"export: {rows:,} rows in {export_s:.1f} s = {rows / export_s:,.0f} rows/s (done={answer['done']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--database", default=DATABASE,
                        help=f"the source database (default {DATABASE}; another size needs another database)")
    parser.add_argument("--labels", type=int, default=100_000)
    parser.add_argument("--endpoint", default=None, help="a running BigQuery emulator (default: start one)")
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--skip", default="", help="comma-separated: export,snapshot,training")
    parser.add_argument("--dataset", default=None, help="the dataset to use (default: a new one)")
    parser.add_argument("--keep", action="store_true", help="keep the BigQuery dataset (reuse it with --dataset)")
    parser.add_argument("--max-emulator-gb", type=float, default=10.0,
                        help="stop the emulator past this resident memory (a private emulator only)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    proc, endpoint = (None, args.endpoint) if args.endpoint else start_emulator()
    project = "bench-project" if proc else "local-project"
    dataset = args.dataset or f"bench_offline_{secrets.token_hex(3)}"
    env = {"FS_POSTGRES_HOST": os.environ.get("FS_POSTGRES_HOST", "127.0.0.1"),
           "FS_POSTGRES_PORT": os.environ.get("FS_POSTGRES_PORT", "5432"),
           "FS_POSTGRES_USER": os.environ.get("FS_POSTGRES_USER", "postgres"), "FS_POSTGRES_DATABASE": args.database,
           "FS_BIGQUERY_PROJECT": project, "FS_BIGQUERY_DATASET": dataset, "FS_BIGQUERY_API_ENDPOINT": endpoint,
           "FS_BIGQUERY_TIMEOUT_S": "120", "FS_ETL_BATCH_ROWS": str(args.batch_rows),
           "FS_ETL_CHUNK_ROWS": str(args.chunk_rows), "FS_ETL_STEP_BUDGET_S": "100000",
           "FS_ETL_JOB_TIMEOUT_S": "7200", "FS_LOG_LEVEL": "WARNING"}
    settings = Settings.from_env(env)
    etl_log = logging.getLogger("feature_store.services.etl")  # the only INFO lines shown: a long run's progress
    etl_log.setLevel(logging.INFO)
    etl_log.addHandler(ProgressEcho())
    etl_log.propagate = False
    from feature_store.wiring import Services

    svc = Services(settings)
    guard = MemoryGuard(proc.pid, args.max_emulator_gb) if proc else None
    results: dict[str, Any] = {"users": args.users, "labels": args.labels, "started": datetime.now(UTC).isoformat(),
                               "feature_chunk": settings.etl.feature_chunk}
    try:
        counts = ensure_source(settings, args.users)
        results["source_rows"] = counts
        say("source rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        etl: Etl = svc.etl
        etl.ensure_schema()
        if "export" not in skip:
            export(etl, results)
        if "snapshot" not in skip:
            t0 = time.perf_counter()
            snap = etl.snapshot("bench-run", datetime.now(UTC).date() - timedelta(days=1))
            snap_s = time.perf_counter() - t0
            results["snapshot"] = {"seconds": round(snap_s, 1), "rows": snap["rows"],
                                   "users_per_s": round(snap["rows"] / snap_s), "version": snap["version"]}
            say(f"snapshot (v{snap['version']}, {len(etl.feature_set().features)} features): {snap['rows']:,} users "
                f"in {snap_s:.1f} s = {snap['rows'] / snap_s:,.0f} users/s")
        if "training" not in skip:
            training: TrainingSets = svc.training
            with tempfile.TemporaryDirectory() as tmp:
                labels = Path(tmp) / "labels.csv"
                write_labels(labels, args.labels, args.users, datetime.now(UTC))
                t0 = time.perf_counter()
                built = training.from_file(labels, "bench_training")
                train_s = time.perf_counter() - t0
            results["training"] = {"seconds": round(train_s, 1), "rows": built["rows"],
                                   "rows_per_s": round(built["rows"] / train_s)}
            say(f"training set: {built['rows']:,} label rows in {train_s:.1f} s = "
                f"{built['rows'] / train_s:,.0f} rows/s")
        total = sum(results[k]["seconds"] for k in ("export", "snapshot") if k in results)
        results["etl_seconds"] = round(total, 1)
        say(f"ETL end to end (export + snapshot): {total:.1f} s")
    finally:
        if guard is not None:
            guard.stop()
            results["emulator_peak_gb"] = round(guard.peak / 2**30, 2)
            say(f"emulator peak resident memory: {guard.peak / 2**30:.1f} GB"
                + (" (stopped: over the limit)" if guard.tripped else ""))
        if not args.keep:
            try:
                svc.bigquery.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
            except Exception as exc:  # the figures matter more than the clean-up
                say(f"could not drop dataset {dataset}: {exc}")
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"offline-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
