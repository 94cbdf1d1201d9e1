"""CDC ingestion benchmark: events/s through one ingest_changes instance, and commit-to-servable lag.

    .venv/bin/python bench/ingest.py [--users 2000] [--events 20000] [--duration 10] [--concurrency 16,64]
                                     [--workers 2] [--threads 32] [--set FS_X=Y] [--lag-samples 100]
                                     [--no-bigquery] [--mode threaded,async] [--shape binary|raw]
                                     [--json out.json]

Builds a throw-away database (migrated, seeded with --users users; its size is printed), then:

1. throughput: serves ingest_changes with functions-framework in every --mode (FS_CDC_SERVING_MODE:
   threaded, production's default, is gunicorn gthread with WORKERS/THREADS; async is uvicorn workers,
   WORKERS of them, the messages applied on FS_CDC_POOL_THREADS threads each; two workers: one per core
   of a 2-vCPU instance), and wrk (bench/wrk_report.lua) posts pre-built Pub/Sub push requests
   (Debezium transaction inserts for random users; --shape binary: binary-mode CloudEvents, as Eventarc
   sends them; raw: the raw push body, as our push subscription sends it) over keep-alive connections
   for --duration seconds, at every --concurrency level. Rows, each at every level and in every mode:
   the floor (a no-op function served the same way: HTTP, the server, and threaded the CloudEvent
   conversion), then the changelog on as deployed (FS_CDC_CHANGELOG_SINK=pubsub:
   Redis, and one Publish per batch to a stand-in of Pub/Sub's Publisher in this script, whose BigQuery
   subscriptions write the tables with no code of ours), then the changelog streamed into the BigQuery
   emulator (the local stack's sink), then, labelled as such, the changelog off. Events/s counts
   acknowledged (2xx) pushes only; the others, which Pub/Sub would redeliver, are counted apart.
   Beside each row, the CPU per acknowledged event of the function's processes and of the BigQuery
   emulator (when this script started it), from /proc: they share the machine's cores;
2. lag (in every --mode): runs the relay on a fresh slot, ingest_changes as deployed and read_features;
   commits a completed order for a user and polls read_features until it serves the new
   total_orders; p50/p95/max of commit -> servable, first on an idle instance, then while wrk
   pushes the throughput load into the same instance (its events/s during the samples printed).

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
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dataset import describe, size_line
from processes import Child, free_port, group_cpu_s, listening, wait_port

ROOT = Path(__file__).resolve().parent.parent
LUA = str(ROOT / "bench" / "wrk_report.lua")
sys.path.insert(0, str(ROOT / "emulators"))
BIN = Path(sys.executable).parent
BQ_PROJECT = "local-project"
WRK_THREADS = 2
LAG_TIMEOUT_S = 10.0
READ_HEADERS: dict[str, str] = {}  # the read function's credentials, set once the database is ready
PRODUCTION = "changelog on, as deployed (SINK=pubsub): Redis + Publish"
STREAMED = "changelog streamed (SINK=bigquery): Redis + BigQuery emulator"
CHANGELOG_OFF = "changelog off (FS_CDC_CHANGELOG_ENABLED=false): Redis only"
FLOOR = "floor: a no-op function"
MODES = ("threaded", "async")
FLOORS = {"threaded": "noop_event", "async": "noop_event_async"}


def serve(name: str, port: int, env: dict[str, str], logs: Path) -> Child:
    kind = "cloudevent" if name in ("ingest_changes", "noop_event") else "http"  # a decorator's type comes first
    source = ROOT / ("bench/noop" if name.startswith("noop_") else f"functions/{name}") / "main.py"
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


def wrk_argv(port: int, concurrency: int, seconds: int) -> list[str]:
    return ["wrk", f"-t{WRK_THREADS}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", LUA,
            f"http://127.0.0.1:{port}/"]


def wrk_env(pushes: Path) -> dict[str, str]:
    return {**os.environ, "SCENARIO": "push", "PUSH_FILE": str(pushes), "WRK_THREADS": str(WRK_THREADS),
            "PUSH_SHAPE": SHAPE[0]}


SHAPE = ["binary"]  # --shape, set once in main()


def figures(out: str) -> dict[str, Any]:
    """wrk_report.lua's line, with acknowledged events per second (2xx only)."""
    raw: dict[str, Any] = json.loads(next(x for x in out.splitlines() if x.startswith("{")))
    seconds = raw["duration_us"] / 1e6
    return {**raw, "seconds": round(seconds, 2), "events_per_s": round(raw["ok"] / seconds),
            "p50_ms": round(raw["p50_us"] / 1000, 1), "p95_ms": round(raw["p95_us"] / 1000, 1)}


def published_env() -> tuple[Any, dict[str, str]]:
    """A started Publish stand-in (counting only) and the settings publishing the changelog to it, as deployed."""
    from serving import pubsub_standin

    standin, pubsub = pubsub_standin()
    return standin, {"FS_CDC_CHANGELOG_ENABLED": "true", "FS_CDC_CHANGELOG_SINK": "pubsub", **pubsub}


def throughput(label: str, mode: str, port: int, pushes: Path, concurrency: int, duration: int, function: int,
               emulator: int | None) -> dict[str, Any]:
    """wrk posting the pushes in turn (binary-mode CloudEvents, keep-alive) for ``duration`` seconds.

    Also the CPU the function's processes and the BigQuery emulator (when this script started it) spent
    per acknowledged event: on one machine they share the cores, so this says who the rate is bounded by.
    """
    def run(seconds: int) -> dict[str, Any]:
        return figures(subprocess.run(wrk_argv(port, concurrency, seconds), env=wrk_env(pushes),
                                      capture_output=True, text=True, check=True).stdout)

    run(2)  # warm-up: connections, prepared statements, the first batches
    before = group_cpu_s(function), group_cpu_s(emulator)
    out = run(duration)
    events = max(1, out["ok"])
    cpu = {"function_cpu_ms_per_event": round((group_cpu_s(function) - before[0]) * 1000 / events, 2),
           "emulator_cpu_ms_per_event": round((group_cpu_s(emulator) - before[1]) * 1000 / events, 2)
           if emulator is not None else None}
    return {"scenario": label, "mode": mode, "concurrency": concurrency, **out, **cpu}


def print_throughput(rows: list[dict[str, Any]]) -> None:
    print("\nthroughput: events/s = acknowledged (2xx) pushes per second; non-2xx (Pub/Sub would redeliver) "
          "and socket errors apart; request latency over every answer")
    print(f"  {'scenario':<62}{'mode':>9}{'conc':>5}{'events/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'non-2xx':>9}"
          f"{'sock err':>9}{'vs floor':>10}{'fn CPU ms/ev':>14}{'BQ emu CPU ms/ev':>18}")
    floors = {(r["mode"], r["concurrency"]): r for r in rows if r["scenario"] == FLOOR}
    for r in rows:
        floor = floors.get((r["mode"], r["concurrency"]))
        ratio = f"{r['events_per_s'] / floor['events_per_s']:.2f}x" if floor and floor["events_per_s"] else "-"
        emulator = r["emulator_cpu_ms_per_event"]
        print(f"  {r['scenario']:<62}{r['mode']:>9}{r['concurrency']:>5}{r['events_per_s']:>10,}{r['p50_ms']:>9}"
              f"{r['p95_ms']:>9}{r['non_2xx']:>9}{r['errors_socket']:>9}{ratio:>10}{r['function_cpu_ms_per_event']:>14}"
              f"{'-' if emulator is None else emulator:>18}")
        if r["statuses"]:
            print(f"  {'':<76}non-2xx by status: {r['statuses']}")


# --- lag ------------------------------------------------------------------------------------------


def lag(env: dict[str, str], read_port: int, users: int, samples: int, seed: int) -> dict[str, Any]:
    """Commit -> servable, ``samples`` times: a committed order until read_features serves it."""
    import pg8000.native

    from feature_store.domain.synthetic import user_id

    conn = pg8000.native.Connection(user="postgres", host=env["FS_POSTGRES_HOST"], port=int(env["FS_POSTGRES_PORT"]),
                                    database=env["FS_POSTGRES_DATABASE"])
    rng, lags, timeouts, non_2xx = random.Random(seed), [], 0, 0

    def served(uid: str) -> int | None:
        nonlocal non_2xx
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{read_port}/api/v1/features/user/{uid}",
                                             headers=READ_HEADERS)
            with urllib.request.urlopen(request, timeout=LAG_TIMEOUT_S) as response:
                return int(json.load(response)["features"]["behavior"]["total_orders"])
        except urllib.error.HTTPError:
            non_2xx += 1
            return None

    for i in range(samples):
        uid = user_id(rng.randrange(users))
        before = served(uid)  # also puts the user in Redis, as production traffic would
        if before is None:
            continue
        conn.run("INSERT INTO transactions (transaction_id, user_id, amount, merchant, category, status, created_at) "
                 "VALUES (:t, :u, 10, 'm', 'books', 'completed', now())", t=f"lag{secrets.token_hex(6)}{i}", u=uid)
        committed = time.perf_counter()  # autocommit: the statement has returned, so it is committed
        while (served(uid) or 0) <= before:
            if time.perf_counter() - committed > LAG_TIMEOUT_S:
                timeouts += 1
                break
            time.sleep(0.002)
        lags.append(time.perf_counter() - committed)  # a sample that never converged counts as its timeout
        time.sleep(0.05)
    conn.close()
    lags.sort()
    if not lags:
        return {"samples": 0, "non_2xx": non_2xx}
    return {"samples": len(lags), "p50_ms": round(1000 * statistics.median(lags)),
            "p95_ms": round(1000 * lags[max(0, int(len(lags) * 0.95) - 1)]), "max_ms": round(1000 * lags[-1]),
            "timeouts": timeouts, "non_2xx": non_2xx}


def lag_under_load(env: dict[str, str], ingest_port: int, read_port: int, pushes: Path, concurrency: int,
                   users: int, samples: int) -> dict[str, Any]:
    """``lag`` while wrk pushes the throughput load into the same ingest instance; its figures beside."""
    load = subprocess.Popen(wrk_argv(ingest_port, concurrency, 3600), env=wrk_env(pushes), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(2)  # the load is running before the first sample (a warm-up, not a decision)
        result = lag(env, read_port, users, samples, seed=12)
    finally:
        os.killpg(load.pid, signal.SIGINT)  # wrk stops and prints its report on SIGINT
        out, err = load.communicate(timeout=30)
    try:
        result["load"] = figures(out)
    except StopIteration:
        result["load"] = {"error": f"wrk printed no report: {err[-500:]}"}
    return result


def print_lag(label: str, r: dict[str, Any]) -> None:
    if not r["samples"]:
        print(f"  {label}: no sample (read_features answered non-2xx {r['non_2xx']} times)")
        return
    line = (f"  {label}: p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, max {r['max_ms']} ms ({r['samples']} commits, "
            f"{r['timeouts']} not servable within {LAG_TIMEOUT_S:.0f} s, counted as {LAG_TIMEOUT_S:.0f} s; "
            f"read_features non-2xx {r['non_2xx']})")
    if "load" in r:
        load = r["load"]
        line += ("\n    the load meanwhile: " + (load["error"] if "error" in load else
                 f"{load['events_per_s']:,} events/s acknowledged, {load['non_2xx']} non-2xx, "
                 f"{load['errors_socket']} socket errors over {load['seconds']} s"))
    print(line, flush=True)


# --- setup ----------------------------------------------------------------------------------------


def start_bigquery(env: dict[str, str], dataset: str, logs: Path, children: list[Child],
                   shared: bool = False) -> int | None:
    """A private BigQuery emulator (its pid: its CPU is measured, and nobody else's load is in it), or with
    ``shared`` the stack's on 9050 when one listens there; creates the changelog tables."""
    import stack

    from feature_store.stores.bigquery_changelog import BigQueryChangelog
    from feature_store.stores.dialect import POSTGRESQL

    port = 9050 if shared and listening(9050) else free_port()
    pid = None
    if not listening(port):
        children.append(Child([str(ROOT / ".local/venvs/bq/bin/bqemulator"), "start", "--rest-host", "127.0.0.1",
                               "--rest-port", str(port), "--grpc-host", "127.0.0.1", "--grpc-port", str(free_port()),
                               "--project", BQ_PROJECT], {**os.environ, **stack.bigquery_env()}, logs / "bigquery.log"))
        wait_port(port, "the BigQuery emulator")
        pid = children[-1].proc.pid
    env["FS_BIGQUERY_API_ENDPOINT"] = f"http://127.0.0.1:{port}"
    BigQueryChangelog(bigquery_client(env), dataset, POSTGRESQL, 30).create_tables()
    return pid


def bigquery_client(env: dict[str, str]) -> Any:
    from feature_store.settings import Settings
    from feature_store.wiring import Services

    return Services(Settings.from_env({k: v for k, v in env.items() if k.startswith("FS_")})).bigquery


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000, help="users seeded into the throw-away database")
    parser.add_argument("--events", type=int, default=20000, help="distinct pushes built (sent in turn)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each throughput run")
    parser.add_argument("--concurrency", default="16,64", help="connections; every level is measured and printed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--lag-samples", type=int, default=100, help="commits timed idle, and again under load")
    parser.add_argument("--no-bigquery", action="store_true",
                        help="no BigQuery emulator: the production-default row is then not measured")
    parser.add_argument("--shared-bigquery", action="store_true",
                        help="use the stack's emulator on 9050 when it listens (its CPU is then not measured)")
    parser.add_argument("--set", action="append", default=[], metavar="FS_SECTION_FIELD=VALUE",
                        help="a setting for the functions, e.g. FS_CDC_MAX_INFLIGHT=1 (repeatable)")
    parser.add_argument("--mode", default="threaded,async",
                        help="FS_CDC_SERVING_MODE of ingest_changes, one or both (each measured beside its own floor)")
    parser.add_argument("--shape", choices=("binary", "raw"), default="binary",
                        help="the pushes: binary-mode CloudEvents (Eventarc), or raw push bodies (our subscription)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = args.mode.split(",")
    if not set(modes) <= set(MODES):
        parser.error(f"--mode: one or more of {', '.join(MODES)}")
    SHAPE[0] = args.shape

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
    standin, published = published_env()
    results: dict[str, Any] = {"users": args.users, "workers": args.workers, "threads": args.threads,
                               "concurrency": levels, "modes": modes, "shape": args.shape, "throughput": []}
    try:
        subprocess.run([str(BIN / "python"), "-m", "feature_store.cli.migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([str(BIN / "python"), "-m", "feature_store.cli.generate", "seed", "--users", str(args.users),
                        "--seed", "42"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results["rows"] = describe(env, database)
        emulator = None if args.no_bigquery else start_bigquery(env, dataset, logs, children, args.shared_bigquery)
        print(f"ingest_changes: one instance, WORKERS={args.workers} THREADS={args.threads} (async: "
              f"FS_CDC_POOL_THREADS={env.get('FS_CDC_POOL_THREADS', 'default')}); {args.shape} pushes; "
              f"{size_line(database, results['rows'])}; concurrency {', '.join(map(str, levels))}", flush=True)
        scenarios = [(PRODUCTION, "ingest_changes", published)]
        if not args.no_bigquery:
            scenarios.append((STREAMED, "ingest_changes", {"FS_CDC_CHANGELOG_ENABLED": "true",
                                                           "FS_CDC_CHANGELOG_SINK": "bigquery"}))
        scenarios.append((CHANGELOG_OFF, "ingest_changes", {"FS_CDC_CHANGELOG_ENABLED": "false"}))
        pushes = logs / "pushes.tsv"
        pushes.write_text("\n".join(push_requests(args.users, args.events)) + "\n")
        # Scenario by scenario, each mode in turn: the modes' rows of one scenario are measured a minute apart
        # at most, so a machine shared with other work weighs on both alike.
        for label, target, extra in [(FLOOR, "", {}), *scenarios]:
            for mode in modes:
                port = free_port()
                fn = serve(FLOORS[mode] if label == FLOOR else target, port,
                           {**env, **extra, "FS_CDC_SERVING_MODE": mode}, logs)
                children.append(fn)
                for c in levels:
                    results["throughput"].append(throughput(label, mode, port, pushes, c, args.duration, fn.proc.pid,
                                                            emulator))
                    print(f"  measured {label} ({mode}) at concurrency {c}", file=sys.stderr, flush=True)
                fn.stop()
        print_throughput(results["throughput"])
        if args.no_bigquery:
            print(f"  ({STREAMED}: not measured, --no-bigquery)")
        print(f"  (Publish: to a stand-in of Pub/Sub's Publisher in this script's process, {standin.received:,} "
              f"messages received; its CPU, Pub/Sub's in production, is not in the columns but shares the cores)")

        lag_env = {**env, **published}
        from serving import bench_client

        READ_HEADERS["X-API-Key"] = bench_client(lag_env)  # read_features needs credentials (docs/security.md)
        read_port = free_port()
        # read_features is the lag's instrument here, polled every 2 ms: its audit trail is off (it measures
        # ingestion, not reads; its audit rows would add to the load of the one machine).
        children.append(serve("read_features", read_port, {**lag_env, "FS_AUDIT_SINK": "disabled"}, logs))
        for mode in modes:
            ingest_port = free_port()
            ingest = serve("ingest_changes", ingest_port, {**lag_env, "FS_CDC_SERVING_MODE": mode}, logs)
            children.append(ingest)
            mode_slot = f"{slot}_{mode[0]}"
            relay = Child([str(BIN / "python"), str(ROOT / "emulators" / "cdc_relay.py"), "--target-url",
                           f"http://127.0.0.1:{ingest_port}/"],
                          # FS_PUBSUB_PROJECT would make the relay publish to cdc-changes, not push
                          {**{k: v for k, v in lag_env.items() if not k.startswith("FS_PUBSUB_")},
                           "FS_CDC_SLOT": mode_slot}, logs / "relay.log")
            children.append(relay)
            # Changes are decoded from the moment the slot is consistent: its creation waits for older transactions.
            deadline = time.monotonic() + 120
            while not admin.run("SELECT 1 FROM pg_replication_slots WHERE slot_name = :s AND confirmed_flush_lsn "
                                "IS NOT NULL", s=mode_slot):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the relay's slot {mode_slot} was not ready within 120 s "
                                     f"(see {logs / 'relay.log'})")
                time.sleep(0.2)
            print(f"\ncommit -> servable lag through the relay, ingest_changes {mode} ({PRODUCTION}) and "
                  "read_features:", flush=True)
            results[f"lag_idle_{mode}"] = lag(lag_env, read_port, args.users, args.lag_samples, seed=11)
            print_lag("idle", results[f"lag_idle_{mode}"])
            results[f"lag_under_load_{mode}"] = lag_under_load(lag_env, ingest_port, read_port, pushes, max(levels),
                                                               args.users, args.lag_samples)
            print_lag(f"under the throughput load (wrk, concurrency {max(levels)}, into the same instance)",
                      results[f"lag_under_load_{mode}"])
            relay.stop()
            ingest.stop()
            admin.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :s",
                      s=mode_slot)
    finally:
        if not args.no_bigquery:  # the emulator may be the stack's (--shared-bigquery): leave it as it was
            try:
                bigquery_client(env).delete_dataset(dataset, delete_contents=True, not_found_ok=True)
            except Exception as exc:  # the figures matter more than the clean-up
                print(f"could not drop the BigQuery dataset {dataset}: {exc}", file=sys.stderr)
        for child in reversed(children):
            child.stop()
        standin.stop()
        admin.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE :s",
                  s=f"{slot}%")
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
