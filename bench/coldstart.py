"""Cold start: import plus first answer of each function, in a fresh process under functions-framework.

    .venv/bin/python bench/coldstart.py [--database fs_bench] [--runs 5] [--functions a,b] [--json out.json]

For every function in functions/ (a function without a first request here stops the bench), ``--runs`` times:
a fresh functions-framework process (WORKERS=1 as a new Cloud Functions instance starts one; uvicorn for the
functions served on an event loop, the read functions by default, gunicorn for the others), and the wall
time from spawning it until its first real request is answered: the interpreter, functions-framework,
importing ``main`` and the common package, the first request's wiring (pools, clients, prepared statements) and the work
itself. Each first request is a real one against PostgreSQL and Redis (the stack's, or --redis-url):
a single read of a user not cached, a batch of two, a CDC push of a Debezium insert (the changelog
off: no BigQuery here unless --bigquery), refresh_cache ``stats``, and run_etl's smallest step
(a step it does not know, refused with 400 after the import and the edge: its steps all need BigQuery
and take seconds of their own; the status of every answer is printed). With --bigquery, ingest_changes
runs as deployed, the changelog on, against the BigQuery emulator (the stack's on 9050, else a private
one): its first answer then includes importing and building the BigQuery client. Separately, the
import of ``main`` alone in a fresh interpreter (its wall time), so the two parts show.
Prints min / median / max per function. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dataset import ensure_data
from serving import audited_env, bench_client, free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "emulators"))
BIN = Path(sys.executable).parent
USER = "u000000123"


def push_body() -> bytes:
    """A Pub/Sub push of one Debezium transaction insert for USER, as bench/ingest.py builds them."""
    from debezium_wire import debezium_event

    columns = {"transaction_id": ("character varying(64)", False), "user_id": ("character varying(64)", False),
               "amount": ("numeric(12,2)", False), "currency": ("character(3)", False),
               "merchant": ("character varying(100)", False), "category": ("character varying(50)", False),
               "status": ("character varying(20)", False), "created_at": ("timestamp with time zone", False)}
    now = datetime.now(UTC)
    row = {"transaction_id": "cold0001", "user_id": USER, "amount": "12.50", "currency": "USD", "merchant": "m1",
           "category": "books", "status": "completed", "created_at": now}
    data = debezium_event(server="fs", db="bench", table="transactions", op="c", lsn=0x7_0000_0000,
                          commit_lsn=0x7_0000_0050, tx_id=1, ts_ms=int(now.timestamp() * 1000), before=None,
                          after=row, columns=columns)
    return json.dumps({"message": {"data": base64.b64encode(data).decode(), "messageId": "1",
                                   "publishTime": now.isoformat(), "attributes": {}},
                       "subscription": "projects/local-project/subscriptions/bench"}).encode()


JSON = {"Content-Type": "application/json"}
# function -> (signature type, method, path, body, headers)
REQUESTS: dict[str, tuple[str, str, str, bytes | None, dict[str, str]]] = {
    "read_features": ("http", "GET", f"/api/v1/features/user/{USER}", None, {}),
    "read_features_batch": ("http", "POST", "/api/v1/features/batch",
                            json.dumps({"user_ids": [USER, "u000000124"]}).encode(), JSON),
    "ingest_changes": ("cloudevent", "POST", "/", b"", {
        "Content-Type": "application/json", "ce-id": "1", "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/local-project/topics/bench"}),
    "refresh_cache": ("http", "POST", "/", json.dumps({"mode": "stats"}).encode(), JSON),
    "run_etl": ("http", "POST", "/", json.dumps({"step": "nothing"}).encode(), JSON),
    # Not a request id: refused 400 after the import and the edge, as run_etl's (a real receipt needs the
    # audit trail in BigQuery and the offline store's replay, seconds of their own).
    "read_receipt": ("http", "GET", "/api/v1/receipts/not-a-request-id", None, {}),
    "run_migration": ("http", "POST", "/", json.dumps({"phase": "status"}).encode(), JSON),
    "replicate_changes": ("cloudevent", "POST", "/", b"", {
        "Content-Type": "application/json", "ce-id": "1", "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/local-project/topics/bench"}),
}
AUTHENTICATED = ("read_features", "read_features_batch", "read_receipt")


def check_every_function_has_a_request() -> None:
    """Every function in functions/ is measured: a new one without a request here stops the bench."""
    missing = sorted({p.parent.name for p in (ROOT / "functions").glob("*/main.py")} - set(REQUESTS))
    if missing:
        raise SystemExit(f"bench/coldstart.py has no first request for: {', '.join(missing)}")


def first_answer(name: str, env: dict[str, str]) -> tuple[float, float, int]:
    """Spawn the function; seconds until it listens, seconds until its first request is answered, status."""
    kind, method, path, body, headers = REQUESTS[name]
    if name in ("ingest_changes", "replicate_changes"):
        body = push_body()
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "functions-framework"), "--target", name, "--source",
                             str(ROOT / "functions" / name / "main.py"), "--signature-type", kind,
                             "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        listening = None
        deadline = started + 60
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.05):
                    listening = listening or time.perf_counter() - started
                req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                             headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status = resp.status
                except urllib.error.HTTPError as exc:
                    status = exc.code
                return listening, time.perf_counter() - started, status
            except (ConnectionError, OSError):
                time.sleep(0.005)
        raise SystemExit(f"{name} did not answer within 60 s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def import_time(name: str, env: dict[str, str]) -> float:
    """Seconds for a fresh interpreter to start and import the function's main module (and nothing more)."""
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('main', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); sys.modules['main'] = m; spec.loader.exec_module(m)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(ROOT / "functions" / name / "main.py")], env=env, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="fs_bench")
    parser.add_argument("--users", type=int, default=1_000_000, help="users to seed when the database has none")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--functions", default=",".join(REQUESTS))
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--bigquery", action="store_true", help="ingest_changes with the changelog on (emulator)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import stack

    env = {**os.environ, **stack.stack_env(), "FS_POSTGRES_DATABASE": args.database, "FS_LOG_LEVEL": "WARNING",
           "FS_REDIS_KEY_PREFIX": "coldstart", "FS_CDC_CHANGELOG_ENABLED": "false", "WORKERS": "1"}
    # The stack's rehearsal target database may not exist here: the migration functions get the bench's own
    # database as a target that was never prepared (replicate_changes reads its state and skips the change,
    # run_migration's status answers 409 migration_not_prepared), each after its wiring's round trips.
    env["FS_MIGRATION_TARGET_DATABASE"] = args.database
    env["FS_REDIS_URL"] = args.redis_url or env["FS_REDIS_URL"]
    # Reads audited as production audits them (FS_AUDIT_SINK=pubsub, terraform/environments/prod), through the
    # Publish stand-in: the stack's own setting (its BigQuery emulator) made each first read import BigQuery.
    standin, env = audited_env(env)
    try:
        return prepare_and_measure(args, env)
    finally:
        standin.stop()


def prepare_and_measure(args: argparse.Namespace, env: dict[str, str]) -> int:
    ensure_data(env, args.database, args.users)
    key = bench_client(env)  # the read functions need credentials (docs/security.md)
    check_every_function_has_a_request()
    for name in AUTHENTICATED:
        kind, method, path, body, headers = REQUESTS[name]
        REQUESTS[name] = (kind, method, path, body, {**headers, "X-API-Key": key})
    children: list[Any] = []
    if args.bigquery:
        from ingest import BQ_PROJECT, bigquery_client, start_bigquery

        logs = ROOT / ".local" / "logs" / "bench-coldstart"
        logs.mkdir(parents=True, exist_ok=True)
        env.update({"FS_BIGQUERY_PROJECT": BQ_PROJECT, "FS_BIGQUERY_DATASET": f"coldstart_{os.getpid()}",
                    "FS_CDC_CHANGELOG_ENABLED": "true"})
        start_bigquery(env, env["FS_BIGQUERY_DATASET"], logs, children)
    try:
        return measure(args, env)
    finally:
        if args.bigquery:
            bigquery_client(env).delete_dataset(env["FS_BIGQUERY_DATASET"], delete_contents=True, not_found_ok=True)
        for child in children:
            child.stop()


def measure(args: argparse.Namespace, env: dict[str, str]) -> int:
    import redis

    from feature_store.settings import serving_mode

    client = redis.Redis.from_url(env["FS_REDIS_URL"])
    results: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    for name in args.functions.split(","):
        runs = []
        for _ in range(args.runs):
            for key in client.scan_iter("coldstart:*"):
                client.delete(key)  # every first read is a miss, as on a fresh instance after a deploy
            runs.append(first_answer(name, env))
        imports = [import_time(name, env) for _ in range(args.runs)]
        results[name] = {"listening_s": [r[0] for r in runs], "first_answer_s": [r[1] for r in runs],
                         "status": sorted({r[2] for r in runs}), "import_main_s": imports}
        print(f"  measured {name}", file=sys.stderr, flush=True)
    for key in client.scan_iter("coldstart:*"):
        client.delete(key)
    changelog = "on (BigQuery emulator)" if args.bigquery else "off"
    print(f"cold start: a fresh functions-framework process (WORKERS=1; serving mode {serving_mode(env)}) per run, "
          f"{args.runs} runs each, "
          f"database {args.database}, ingest_changes' changelog {changelog}; load average {load_before:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    print(f"  {'function':<22}{'first answer s (min / median / max)':>38}{'status':>10}"
          f"{'import of main s (median)':>28}")
    for name, r in results.items():
        first = r["first_answer_s"]
        print(f"  {name:<22}{min(first):>16.2f} / {statistics.median(first):.2f} / {max(first):.2f}"
              f"{','.join(map(str, r['status'])):>18}{statistics.median(r['import_main_s']):>28.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
