"""Migration benchmark: backfill + verification rows/s, replication lag under a write rate, reads through the shift.

    .venv/bin/python bench/migration.py [--database fs_bench] [--users 1000000] [--target fsm_bench_target]
                                        [--chunk-rows 50000] [--writes-per-s 200] [--lag-seconds 60]
                                        [--hold-s 20] [--readers 4] [--keep-target] [--json out.json]

The source is ``--database`` (seeded with fs-generate when it holds no finished data set: ~5 min for 1M
users). The target is a second PostgreSQL database on the same server (``--target``, made afresh unless
``--keep-target``), holding the CockroachDB form of the schema as PostgreSQL accepts it. Four parts:

1. prepare, backfill and verification, in this process through the migration's own phases: rows, seconds
   and rows/s of each, and of the two together (the target: 50,000 rows/s or more at 1M users, 25M rows),
   with the CPU seconds each took in this process and in the two databases' server processes, and their
   sum per row (what the work costs, which other load on the machine changes far less than rows/s);
2. replication: replicate_changes under functions-framework fed by emulators/cdc_relay.py from a slot of
   its own; the source takes ``--writes-per-s`` committed inserts (one transaction each, stamped with
   clock_timestamp()) for ``--lag-seconds``; the lag of each is the target's replica ``applied_at`` minus
   that stamp (one server, one clock): p50/p95/p99/max (target: p95 at most 1 s at 200 writes/s);
3. the traffic shift 1 -> 10 -> 50 -> 100 %, each step held ``--hold-s`` under the guard while
   ``--readers`` threads read random users through read_features: reads by status (target: zero non-2xx);
4. lost and extra rows: the benchmark's rows are deleted again (the deletes replicate too), then a
   verification compares every table, chunk by chunk, with rechecks: row counts and checksums per table,
   and its rows/s (a second verification of the same data, after the shift: the pages are warmer).

The route, the benchmark's Redis keys and its replication slot are removed at the end; the source keeps no
row the benchmark wrote. Figures, never pass/fail; the machine's load average is printed beside them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dataset import describe, ensure_data, size_line

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "emulators"))
sys.path.insert(0, str(ROOT / "tests"))  # the end-to-end tests' process harness (tests/migration/harness.py)
PREFIX = "benchmig"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def fresh_database(env: dict[str, str], name: str, keep: bool) -> None:
    import pg8000.native

    admin = pg8000.native.Connection(user=env["FS_POSTGRES_USER"], host=env["FS_POSTGRES_HOST"],
                                     port=int(env["FS_POSTGRES_PORT"]), database="postgres")
    try:
        exists = admin.run("SELECT 1 FROM pg_database WHERE datname = :d", d=name)
        if exists and not keep:
            admin.run(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not exists or not keep:
            admin.run(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()


class CpuMeter:
    """CPU seconds used by this process and by the server backends of the two databases (sampled from /proc:
    the server runs on this machine). On a shared machine wall-clock rows/s depend on everyone's load; CPU
    per row is what this work costs, whoever else runs."""

    def __init__(self, databases: tuple[str, ...]) -> None:
        from conftest import admin_connection

        self.databases = databases
        self._admin = admin_connection()
        self._seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        while not self._stop.is_set():
            for pid, database in self._admin.run("SELECT pid, datname FROM pg_stat_activity WHERE datname = ANY(:d) "
                                                 "AND pid <> pg_backend_pid()", d=list(self.databases)):
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                self._seen[pid] = (database, (int(fields[11]) + int(fields[12])) / ticks)
            self._stop.wait(0.2)

    def now(self) -> dict[str, float]:
        usage = os.times()
        out = {"this process": usage.user + usage.system}
        for database in self.databases:
            out[database] = sum(c for d, c in list(self._seen.values()) if d == database)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._admin.close()


def cpu_figures(before: dict[str, float], after: dict[str, float], rows: int) -> dict[str, Any]:
    spent = {k: after[k] - before[k] for k in before}
    total = sum(spent.values())
    return {"cpu_s": {k: round(v, 1) for k, v in spent.items()}, "cpu_us_per_row": round(1e6 * total / rows, 1)}


def copy_and_verify(migration: Any, meter: CpuMeter) -> dict[str, Any]:
    phases = migration.phases
    started = time.monotonic()
    phases.prepare()
    prepared, cpu_prepared = time.monotonic(), meter.now()
    while not (answer := phases.backfill())["done"]:
        print(f"  backfill: {answer['rows']:,} rows this call, {answer['rows_per_s']:,.0f} rows/s", flush=True)
    copied, cpu_copied = time.monotonic(), meter.now()
    rows = int(answer["snapshot"]["rows"])
    run_id = f"bench-{secrets.token_hex(3)}"
    while not (checked := phases.verify(run_id))["done"]:
        print("  verification: call again", flush=True)
    verified, cpu_verified = time.monotonic(), meter.now()
    backfill_s, verify_s = copied - prepared, verified - copied
    return {"rows": rows, "prepare_s": round(prepared - started, 1), "backfill_s": round(backfill_s, 1),
            "verify_s": round(verify_s, 1), "backfill_rows_per_s": round(rows / backfill_s),
            "verify_rows_per_s": round(rows / verify_s), "together_rows_per_s": round(rows / (backfill_s + verify_s)),
            "verify_ok": checked["ok"], "repaired": len(checked["repaired"]), "different": len(checked["different"]),
            "backfill_cpu": cpu_figures(cpu_prepared, cpu_copied, rows),
            "verify_cpu": cpu_figures(cpu_copied, cpu_verified, rows)}


def write_at(env: dict[str, str], per_s: int, seconds: float) -> int:
    """Commit ``per_s`` single-row transactions a second for ``seconds``; the number committed."""
    from feature_store.settings import Settings
    from feature_store.stores.postgres import PostgresPool

    pool = PostgresPool(Settings.from_env(env).postgres)
    users = [f"u{n:09d}" for n in range(1000)]
    done = 0
    try:
        with pool.connection() as conn:
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                conn.run("INSERT INTO transactions VALUES (:t, :u, :a, 'USD', 'm00001', 'books', 'completed', "
                         "clock_timestamp())", t=f"benchmig-{done}", u=random.choice(users),
                         a=random.randint(1, 500))
                done += 1
                ahead = done / per_s - elapsed
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        pool.close()
    return done


def replication_lag(stack: Any, env: dict[str, str], source: str, target: str, per_s: int,
                    seconds: float) -> dict[str, Any]:
    from migration.harness import wait_until

    from conftest import admin_connection

    stack.function("replicate_changes")
    stack.relay("relay", source, f"fsm_bench_{secrets.token_hex(3)}", ["replicate_changes"])
    written = write_at(env, per_s, seconds)
    rate = written / seconds

    def arrived() -> bool:
        conn = admin_connection(target)
        try:
            return int(conn.run("SELECT count(*) FROM fs_replica_transactions WHERE transaction_id LIKE "
                                "'benchmig-%'")[0][0]) >= written
        finally:
            conn.close()

    wait_until(arrived, "every benchmark write replicated", 600)
    src, tgt = admin_connection(source), admin_connection(target)
    try:
        made = dict(src.run("SELECT transaction_id, extract(epoch FROM created_at) FROM transactions "
                            "WHERE transaction_id LIKE 'benchmig-%'"))
        applied = dict(tgt.run("SELECT transaction_id, extract(epoch FROM applied_at) FROM fs_replica_transactions "
                               "WHERE transaction_id LIKE 'benchmig-%'"))
    finally:
        src.close()
        tgt.close()
    lags = [(float(applied[t]) - float(made[t])) * 1000 for t in made if t in applied]
    return {"writes": written, "writes_per_s": round(rate, 1), "lag_ms_p50": round(percentile(lags, 0.50), 1),
            "lag_ms_p95": round(percentile(lags, 0.95), 1), "lag_ms_p99": round(percentile(lags, 0.99), 1),
            "lag_ms_max": round(max(lags), 1) if lags else None, "missing": written - len(lags)}


def reads_through_the_shift(stack: Any, migration: Any, users: int, hold_s: float, readers: int) -> dict[str, Any]:
    from conftest import AUTH_HEADERS

    stack.function("read_features")
    port = stack.ports["read_features"]
    statuses: Counter[int] = Counter()
    latencies: dict[float, list[float]] = {}
    step = [0.0]
    stop = threading.Event()
    lock = threading.Lock()

    def read() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", f"/api/v1/features/user/u{random.randrange(users):09d}",
                             headers=AUTH_HEADERS)  # the test suite's client, made in the source by main()
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = 0  # a socket error counts as a failed read
            with lock:
                statuses[status] += 1
                latencies.setdefault(step[0], []).append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=read, daemon=True) for _ in range(readers)]
    for t in threads:
        t.start()
    steps = []
    try:
        for percent in (1.0, 10.0, 50.0, 100.0):
            step[0] = percent
            held = migration.phases.shift(percent, hold_s, hold_s + 60)
            steps.append({"percent": percent, "tripped": held.get("tripped"), "reason": held.get("reason"),
                          "target_reads": held.get("reads"), "target_p95_ms": held.get("p95_ms")})
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    for s in steps:
        lat = latencies.get(s["percent"], [])
        s.update(reads=len(lat), read_p50_ms=round(percentile(lat, 0.5), 2),
                 read_p95_ms=round(percentile(lat, 0.95), 2))
    failed = sum(n for code, n in statuses.items() if not 200 <= code < 300)
    return {"reads": sum(statuses.values()), "non_2xx": failed, "by_status": dict(statuses), "steps": steps}


def lost_and_extra(migration: Any, source: str) -> dict[str, Any]:
    from conftest import admin_connection

    conn = admin_connection(source)
    try:
        conn.run("DELETE FROM transactions WHERE transaction_id LIKE 'benchmig-%'")  # replicated like any delete
    finally:
        conn.close()
    time.sleep(5)
    run_id = f"bench-final-{secrets.token_hex(3)}"
    started = time.monotonic()
    while not (checked := migration.phases.verify(run_id, 3600))["done"]:
        print("  final verification: call again", flush=True)
    seconds = time.monotonic() - started
    tables = checked["tables"]
    compared = sum(t["source_rows"] for t in tables.values())
    return {"ok": checked["ok"], "seconds": round(seconds, 1), "rows_per_s": round(compared / seconds),
            "repaired_chunks": len(checked["repaired"]),
            "different_chunks": len(checked["different"]),
            "lost_rows": sum(max(0, t["source_rows"] - t["target_rows"]) for t in tables.values()),
            "extra_rows": sum(max(0, t["target_rows"] - t["source_rows"]) for t in tables.values()),
            "tables": {n: {"rows": t["source_rows"], "checksums_equal": t["source_checksum"] == t["target_checksum"]}
                       for n, t in tables.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="fs_bench")
    parser.add_argument("--users", type=int, default=1_000_000, help="users to seed when the database has none")
    parser.add_argument("--target", default="fsm_bench_target")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--writes-per-s", type=int, default=200)
    parser.add_argument("--lag-seconds", type=float, default=60)
    parser.add_argument("--hold-s", type=float, default=20)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--keep-target", action="store_true", help="reuse the target (its backfill resumes)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import redis
    import stack as local_stack
    from migration.harness import Stack

    from conftest import TEST_PEPPER, drop_prefix, provision_test_client
    from feature_store.migration_wiring import migration_for
    from feature_store.settings import Settings
    from feature_store.stores.postgres import PostgresPool
    from feature_store.wiring import Services

    base_env = {**local_stack.stack_env(), "FS_POSTGRES_DATABASE": args.database, "FS_LOG_LEVEL": "WARNING"}
    env = {**os.environ, **base_env}
    users = ensure_data(env, args.database, args.users)
    rows = describe(env, args.database)
    print(f"migration: {size_line(args.database, rows)}; target {args.target}; load {load()}", flush=True)
    fresh_database(env, args.target, args.keep_target)
    settings_env = {k: v for k, v in base_env.items() if k.startswith("FS_")}
    settings_env.update({"FS_REDIS_KEY_PREFIX": PREFIX, "FS_MIGRATION_TARGET_HOST": env["FS_POSTGRES_HOST"],
                         "FS_MIGRATION_TARGET_PORT": env["FS_POSTGRES_PORT"], "FS_MIGRATION_TARGET_USER":
                         env.get("FS_POSTGRES_USER", "postgres"), "FS_MIGRATION_TARGET_DATABASE": args.target,
                         "FS_MIGRATION_TARGET_DIALECT": "postgresql", "FS_MIGRATION_CHUNK_ROWS": str(args.chunk_rows),
                         "FS_MIGRATION_STEP_BUDGET_S": "3600", "FS_CDC_CHANGELOG_ENABLED": "false",
                         "FS_MIGRATION_GUARD_P95_MS": "250",
                         # The readers of part 3 read as the test suite's client (made in the source below, so the
                         # backfill copies it); the audit trail is not what this measures (bench/serving.py does).
                         "FS_AUTH_KEY_PEPPER": TEST_PEPPER, "FS_AUDIT_SINK": "disabled"})
    source_pool = PostgresPool(Settings.from_env(settings_env).postgres)
    try:
        provision_test_client(source_pool)
    finally:
        source_pool.close()
    migration = migration_for(Services(Settings.from_env(settings_env)))
    logs = ROOT / ".local" / "bench-migration"
    logs.mkdir(parents=True, exist_ok=True)
    running = Stack(settings_env, logs)
    figures: dict[str, Any] = {"data_set": rows, "load_before": load()}
    try:
        meter = CpuMeter((args.database, args.target))
        try:
            figures["backfill_and_verification"] = copy_and_verify(migration, meter)
        finally:
            meter.close()
        print(f"backfill + verification: {json.dumps(figures['backfill_and_verification'])}", flush=True)
        figures["replication"] = replication_lag(running, {**env, **settings_env}, args.database, args.target,
                                                 args.writes_per_s, args.lag_seconds)
        print(f"replication under {args.writes_per_s} writes/s: {json.dumps(figures['replication'])}", flush=True)
        figures["shift"] = reads_through_the_shift(running, migration, users, args.hold_s, args.readers)
        print(f"reads through the shift: {json.dumps(figures['shift'])}", flush=True)
        figures["rows"] = lost_and_extra(migration, args.database)
        print(f"lost and extra rows: {json.dumps(figures['rows'])}", flush=True)
    finally:
        running.close()
        drop_prefix(redis.Redis.from_url(settings_env["FS_REDIS_URL"]), PREFIX)
        migration.base.close()
    figures["load_after"] = load()
    print(f"load average after: {figures['load_after']} (other work on these cores changes every figure)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
