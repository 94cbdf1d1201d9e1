"""CDC ingestion benchmark: events/s through one ingest_changes instance, and commit-to-servable lag.

    .venv/bin/python bench/ingest.py [--users 2000] [--events 20000] [--duration 10] [--concurrency 64]
                                     [--workers 2] [--threads 32] [--set FS_X=Y] [--lag-samples 100]
                                     [--no-bigquery] [--json out.json]

Builds a throw-away database (migrated, seeded), then:

1. throughput: serves ingest_changes with functions-framework as production does (gunicorn gthread,
   WORKERS/THREADS; two workers: one per core of a 2-vCPU instance), and wrk (bench/wrk_report.lua)
   posts pre-built Pub/Sub push requests (Debezium transaction inserts for random users, CloudEvent
   binary mode) over keep-alive connections for --duration seconds; prints events/s and request
   latency, with BigQuery landing (the emulator) and without it, and the same for a no-op
   CloudEvent function served the same way (the floor: HTTP, gunicorn and CloudEvent parsing).
   wrk is written in C, so the load generator takes little of the two cores the instance uses;
2. lag: runs the relay on a fresh slot plus read_features, commits a completed order for a user and
   polls read_features until it serves the new total_orders; prints p50/p95 of commit -> servable.

Figures, never pass/fail. Everything it starts is stopped by pid; its slot, database and keys are dropped.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LUA = str(ROOT / "bench" / "wrk_report.lua")
sys.path.insert(0, str(ROOT / "emulators"))
BIN = Path(sys.executable).parent
BQ_PROJECT = "local-project"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_port(port: int, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not listening(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not listen on {port}")
        time.sleep(0.1)


class Child:
    """A process in its own session, stopped by pid."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def serve(name: str, port: int, env: dict[str, str], logs: Path) -> Child:
    kind = "cloudevent" if name in ("ingest_changes", "noop_event") else "http"
    source = ROOT / ("bench/noop" if name == "noop_event" else f"functions/{name}") / "main.py"
    child = Child([str(BIN / "functions-framework"), "--target", name, "--source", str(source),
                   "--signature-type", kind, "--host", "127.0.0.1", "--port", str(port)],
                  env, logs / f"{name}-{port}.log")
    wait_port(port, name)
    return child


# --- throughput -----------------------------------------------------------------------------------


def push_requests(users: int, events: int) -> list[str]:
    """Pub/Sub pushes of Debezium transaction inserts for random seeded users: ``<ce-id>\t<JSON body>``."""
    from debezium_wire import debezium_event

    from feature_store.domain.synthetic import user_id

    columns = {"transaction_id": ("character varying(64)", False), "user_id": ("character varying(64)", False),
               "amount": ("numeric(12,2)", False), "currency": ("character(3)", False),
               "merchant": ("character varying(100)", False), "category": ("character varying(50)", False),
               "status": ("character varying(20)", False), "created_at": ("timestamp with time zone", False)}
    rng, now, base_lsn = random.Random(7), datetime.now(UTC), 0x7_0000_0000
    out = []
    for i in range(events):
        row = {"transaction_id": f"bench{i:08d}", "user_id": user_id(rng.randrange(users)),
               "amount": f"{rng.uniform(5, 500):.2f}", "currency": "USD", "merchant": f"m{rng.randrange(50)}",
               "category": "books", "status": "completed", "created_at": now}
        data = debezium_event(server="fs", db="bench", table="transactions", op="c", lsn=base_lsn + 100 * i,
                              commit_lsn=base_lsn + 100 * i + 50, tx_id=i, ts_ms=int(now.timestamp() * 1000),
                              before=None, after=row, columns=columns)
        body = json.dumps({"message": {"data": base64.b64encode(data).decode(), "messageId": str(base_lsn + 100 * i),
                                       "publishTime": now.isoformat(), "attributes": {}},
                           "subscription": "projects/local-project/subscriptions/bench"})
        out.append(f"{base_lsn + 100 * i}\t{body}")
    return out


def throughput(label: str, port: int, pushes: Path, concurrency: int, duration: int,
               floor: dict[str, Any] | None = None) -> dict[str, Any]:
    """wrk posting the pushes in turn (binary-mode CloudEvents, keep-alive) for ``duration`` seconds."""
    def run(seconds: int) -> dict[str, Any]:
        out = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", LUA,
                              f"http://127.0.0.1:{port}/"],
                             env={**os.environ, "SCENARIO": "push", "PUSH_FILE": str(pushes), "WRK_THREADS": "2"},
                             capture_output=True, text=True, check=True).stdout
        return dict(json.loads(next(x for x in out.splitlines() if x.startswith("{"))))

    run(2)  # warm-up: connections, prepared statements, the first batches
    raw = run(duration)
    seconds = raw["duration_us"] / 1e6
    failures = raw["errors_status"] + raw["errors_socket"]
    result = {"scenario": label, "events": raw["requests"], "seconds": round(seconds, 2),
              "events_per_s": round(raw["requests"] / seconds), "p50_ms": round(raw["p50_us"] / 1000, 1),
              "p95_ms": round(raw["p95_us"] / 1000, 1), "failures": failures}
    if floor:
        result["events_per_s_vs_floor"] = round(result["events_per_s"] / floor["events_per_s"], 2)
    ratio = f"   {result['events_per_s_vs_floor']:.2f}x the floor" if floor else ""
    print(f"  {label:<44} {result['events_per_s']:>6} events/s   request p50 {result['p50_ms']:>6} ms"
          f"  p95 {result['p95_ms']:>6} ms   ({raw['requests']} events, {failures} not acknowledged){ratio}",
          flush=True)
    return result


# --- lag ------------------------------------------------------------------------------------------


def lag(env: dict[str, str], read_port: int, users: int, samples: int) -> dict[str, Any]:
    import pg8000.native

    from feature_store.domain.synthetic import user_id

    conn = pg8000.native.Connection(user="postgres", host=env["FS_POSTGRES_HOST"], port=int(env["FS_POSTGRES_PORT"]),
                                    database=env["FS_POSTGRES_DATABASE"])
    rng, lags = random.Random(11), []

    def served(uid: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{read_port}/api/v1/features/user/{uid}") as response:
            return int(json.load(response)["features"]["behavior"]["total_orders"])

    for i in range(samples):
        uid = user_id(rng.randrange(users))
        expected = served(uid) + 1  # also puts the user in Redis, as production traffic would
        conn.run("INSERT INTO transactions (transaction_id, user_id, amount, merchant, category, status, created_at) "
                 "VALUES (:t, :u, 10, 'm', 'books', 'completed', now())", t=f"lag{secrets.token_hex(6)}{i}", u=uid)
        committed = time.perf_counter()  # autocommit: the statement has returned, so it is committed
        deadline = committed + 10
        while served(uid) < expected and time.perf_counter() < deadline:
            time.sleep(0.002)
        lags.append(time.perf_counter() - committed)  # a sample that never converged counts as 10 s
        time.sleep(0.05)
    conn.close()
    lags.sort()
    result = {"samples": samples, "p50_ms": round(1000 * statistics.median(lags)),
              "p95_ms": round(1000 * lags[int(len(lags) * 0.95) - 1]), "max_ms": round(1000 * lags[-1])}
    print(f"  commit -> servable lag: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
          f"max {result['max_ms']} ms ({samples} commits)", flush=True)
    return result


# --- setup ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20000, help="distinct pushes built (sent in turn)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each throughput run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--lag-samples", type=int, default=100)
    parser.add_argument("--no-bigquery", action="store_true", help="skip the scenario with BigQuery landing")
    parser.add_argument("--set", action="append", default=[], metavar="FS_SECTION_FIELD=VALUE",
                        help="a setting for the functions, e.g. FS_CDC_MAX_INFLIGHT=1 (repeatable)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import pg8000.native
    import redis
    import stack

    base = stack.stack_env()
    database, prefix = f"fs_bench_ingest_{secrets.token_hex(3)}", f"bi{secrets.token_hex(3)}"
    slot, dataset = f"fs_bench_{secrets.token_hex(3)}", f"bench_{secrets.token_hex(3)}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FS_")}, **base,
           "FS_POSTGRES_DATABASE": database, "FS_REDIS_KEY_PREFIX": prefix, "FS_LOG_LEVEL": "WARNING",
           "FS_BIGQUERY_PROJECT": BQ_PROJECT, "FS_BIGQUERY_DATASET": dataset, "FS_CDC_SLOT": slot,
           "WORKERS": str(args.workers), "THREADS": str(args.threads),
           **dict(item.split("=", 1) for item in args.set)}
    logs = ROOT / ".local" / "logs" / "bench-ingest"
    logs.mkdir(parents=True, exist_ok=True)
    admin = pg8000.native.Connection(user="postgres", host=env["FS_POSTGRES_HOST"], port=int(env["FS_POSTGRES_PORT"]))
    if admin.run("SELECT current_setting('wal_level')")[0][0] != "logical":
        raise SystemExit("wal_level is not logical: run `make up` or .ci/run's switch first")
    admin.run(f'CREATE DATABASE "{database}"')
    children: list[Child] = []
    results: dict[str, Any] = {"users": args.users, "workers": args.workers, "threads": args.threads,
                               "concurrency": args.concurrency, "throughput": []}
    try:
        subprocess.run([str(BIN / "python"), "-m", "feature_store.cli.migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([str(BIN / "python"), "-m", "feature_store.cli.generate", "seed", "--users", str(args.users),
                        "--seed", "42"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bq_port = None
        if not args.no_bigquery:
            bq_port = 9050 if listening(9050) else free_port()
            if not listening(bq_port):
                children.append(Child([str(ROOT / ".local/venvs/bq/bin/bqemulator"), "start", "--rest-host",
                                       "127.0.0.1", "--rest-port", str(bq_port), "--grpc-host", "127.0.0.1",
                                       "--grpc-port", str(free_port()), "--project", BQ_PROJECT],
                                      {**os.environ, **stack.bigquery_env()}, logs / "bigquery.log"))
                wait_port(bq_port, "the BigQuery emulator")
            env["FS_BIGQUERY_API_ENDPOINT"] = f"http://127.0.0.1:{bq_port}"
            from feature_store.settings import Settings
            from feature_store.stores.bigquery_changelog import BigQueryChangelog
            from feature_store.stores.dialect import POSTGRESQL
            from feature_store.wiring import Services

            settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("FS_")})
            BigQueryChangelog(Services(settings).bigquery, dataset, POSTGRESQL, 30).create_tables()

        print(f"ingest_changes: one instance, WORKERS={args.workers} THREADS={args.threads}, "
              f"{args.concurrency} connections, {args.users} users", flush=True)
        scenarios = [("floor: a no-op CloudEvent function", "noop_event", {}),
                     ("redis only (FS_CDC_CHANGELOG_ENABLED=false)", "ingest_changes",
                      {"FS_CDC_CHANGELOG_ENABLED": "false"})]
        if bq_port:
            scenarios.append(("redis + BigQuery emulator changelog", "ingest_changes", {}))
        pushes = logs / "pushes.tsv"
        pushes.write_text("\n".join(push_requests(args.users, args.events)) + "\n")
        for label, target, extra in scenarios:
            port = free_port()
            fn = serve(target, port, {**env, **extra}, logs)
            children.append(fn)
            results["throughput"].append(throughput(label, port, pushes, args.concurrency, args.duration,
                                                    floor=results["throughput"][0] if results["throughput"] else None))
            fn.stop()

        if not bq_port:
            env["FS_CDC_CHANGELOG_ENABLED"] = "false"
        ingest_port, read_port = free_port(), free_port()
        children.append(serve("ingest_changes", ingest_port, env, logs))
        children.append(serve("read_features", read_port, env, logs))
        children.append(Child([str(BIN / "python"), str(ROOT / "emulators" / "cdc_relay.py"), "--target-url",
                               f"http://127.0.0.1:{ingest_port}/"], env, logs / "relay.log"))
        # Changes are decoded from the moment the slot is consistent: its creation waits for older transactions.
        deadline = time.monotonic() + 120
        while not admin.run("SELECT 1 FROM pg_replication_slots WHERE slot_name = :s AND confirmed_flush_lsn "
                            "IS NOT NULL", s=slot) and time.monotonic() < deadline:
            time.sleep(0.2)
        results["lag"] = lag(env, read_port, args.users, args.lag_samples)
    finally:
        for child in reversed(children):
            child.stop()
        admin.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :s", s=slot)
        admin.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d", d=database)
        admin.run(f'DROP DATABASE IF EXISTS "{database}"')
        admin.close()
        client = redis.Redis.from_url(env["FS_REDIS_URL"])
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
