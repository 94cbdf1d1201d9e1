"""Serving benchmark: latency percentiles and throughput of the read functions against a no-op floor.

    .venv/bin/python bench/serving.py [--database fs_bench] [--users 1000000] [--duration 10]
                                      [--concurrency 1,10,50] [--workers 2] [--threads 4] [--warm 20000]
                                      [--audit-sink pubsub|disabled]
                                      [--scenarios hit,miss,batch_hit,batch_cold,hit_unguarded,batch_hit_unguarded]
                                      [--json out.json]

Seeds the database when it holds no finished synthetic data set, serves the no-op floor
(bench/noop), read_features and read_features_batch with functions-framework exactly as
production does (gunicorn gthread; WORKERS and THREADS as given), drives each with wrk
(bench/wrk_report.lua) and prints, for every scenario at every concurrency level it measured,
p50/p95/p99 and 2xx answers per second, beside the no-op floor measured at the same level in the
same run. Figures, never pass/fail.

What the figures are made of:
- throughput counts 2xx answers only; non-2xx answers and socket errors have their own columns;
- the first --warm users are cached before the hit scenarios, which draw ids at random among them;
- miss and cold-batch scenarios draw never-cached ids at random, without repeats, each scenario and
  level from a region of its own; every answer says whether it came from the cache (cache_hit),
  and the "wrong" column counts the vectors that were not what the scenario claims (a hit in a
  miss scenario, a miss in a hit scenario), so a data set too small for the run shows there;
- "degr." counts answers served degraded (Redis skipped: complete, but from PostgreSQL);
- "CPU ms/2xx": the CPU the served function's processes (every worker and thread) used during the
  run, per 2xx answer, read from /proc: what one answer costs, which load on the machine moves far
  less than it moves latency.

The read guard (docs/security.md) as production runs it: every read function request carries the API
key of a client made for the run (every scope, a rate no run reaches, so its limiter runs on every
request and never refuses), and every read is audited through the production sink (google-cloud-pubsub's
publisher) to a local Publish stand-in (tests/pubsub_standin.py; no Pub/Sub emulator exists here).
``hit_unguarded`` and ``batch_hit_unguarded`` read the same cached users through bench/unguarded (the
same edge and reader without credentials, scope, limiter or audit: benchmark code, never deployed), and
the last lines print what the guard (authentication + scope + rate limit + audit) adds to p95 and p50
at every level.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from dataset import describe, ensure_data, prewarm_source, size_line
from processes import free_port, group_cpu_s, wait_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "emulators"))
FF = str(Path(sys.executable).parent / "functions-framework")
LUA = str(ROOT / "bench" / "wrk_report.lua")
PREFIX = "bench"
SCENARIOS = ("hit", "miss", "batch_hit", "batch_cold", "hit_unguarded", "batch_hit_unguarded")
GUARDED = {"hit": "hit_unguarded", "batch_hit": "batch_hit_unguarded"}  # guarded scenario -> its floor
COLD = ("miss", "batch_cold")  # scenarios that need never-cached ids
LABELS = {"floor": "floor, threaded", "floor_async": "floor, async", "hit": "single, hit", "miss": "single, miss",
          "batch_hit": "batch 100, hit", "batch_cold": "batch 100, cold", "hit_unguarded": "single, hit, no guard",
          "batch_hit_unguarded": "batch 100, hit, ng"}


def env_for(args: argparse.Namespace) -> dict[str, str]:
    import stack

    env = {**os.environ, **stack.stack_env(), "FS_POSTGRES_DATABASE": args.database,
           "FS_REDIS_KEY_PREFIX": getattr(args, "prefix", PREFIX),
           "FS_LOG_LEVEL": "WARNING", "WORKERS": str(args.workers), "THREADS": str(args.threads)}
    env["FS_REDIS_URL"] = args.redis_url or env["FS_REDIS_URL"]
    return env


def serve(name: str, source: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([FF, "--target", name, "--source", str(source), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, name, 30)
    return proc, f"http://127.0.0.1:{port}"


def wrk(url: str, scenario: str, concurrency: int, duration: int, extra: dict[str, str],
        server: int | None = None) -> dict[str, Any]:
    """One wrk run; the figures of wrk_report.lua plus 2xx/s and the vectors that were not what was claimed."""
    threads = min(concurrency, 2)
    env = {**os.environ, "SCENARIO": scenario, "WRK_THREADS": str(threads), **extra}
    cpu_before = group_cpu_s(server) if server is not None else 0.0
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", "--timeout", "5s", "-s", LUA,
                          url], env=env, capture_output=True, text=True, check=True).stdout
    cpu_s = group_cpu_s(server) - cpu_before if server is not None else None
    raw: dict[str, Any] = json.loads(next(x for x in out.splitlines() if x.startswith("{")))
    seconds = raw["duration_us"] / 1e6
    wrong = {"hit": raw["misses"], "batch_hit": raw["misses"], "miss": raw["hits"], "batch_cold": raw["hits"],
             "feast": raw["misses"], "feast_batch": raw["misses"]}
    return {**raw, "seconds": round(seconds, 2), "rps": raw["ok"] / seconds, "p50_ms": raw["p50_us"] / 1000,
            "p95_ms": raw["p95_us"] / 1000, "p99_ms": raw["p99_us"] / 1000, "wrong": wrong.get(scenario, 0),
            "vectors": raw["hits"] + raw["misses"],
            # the served function's CPU (all its processes and threads) per 2xx answer: what a request costs,
            # which other load on the machine changes far less than latency
            "cpu_ms_per_2xx": None if cpu_s is None or not raw["ok"] else cpu_s * 1000 / raw["ok"]}


def pubsub_standin() -> tuple[Any, dict[str, str]]:
    """A started Publish stand-in (tests/pubsub_standin.py) that only counts, and the settings pointing
    google-cloud-pubsub's publisher at it: no Pub/Sub emulator exists here, and Pub/Sub's CPU is not ours."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pubsub_standin import PubSubStandIn

    standin = PubSubStandIn(keep=False).start()
    return standin, {"FS_PUBSUB_PROJECT": "bench", "FS_PUBSUB_EMULATOR_HOST": standin.address}


def audited_env(env: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """A started Publish stand-in and ``env`` auditing every read through it, as production does."""
    standin, pubsub = pubsub_standin()
    return standin, {**env, "FS_AUDIT_SINK": "pubsub", **pubsub}


def bench_client(env: dict[str, str]) -> str:
    """A client for the run (every scope, limits no run reaches) and its key, made with fs-keys."""
    py = str(Path(sys.executable))
    client = f"bench-{os.getpid()}"
    subprocess.run([py, "-m", "feature_store.cli.keys", "clients", "create", client, "--groups", "all",
                    "--feature-sets", "all", "--batch-max", "1000", "--rate", "100000000", "--burst", "1000000000"],
                   env=env, check=True, capture_output=True)
    out = subprocess.run([py, "-m", "feature_store.cli.keys", "keys", "create", client], env=env, check=True,
                         capture_output=True, text=True).stdout
    return str(json.loads(out)["key"])


def warm(batch_url: str, count: int, key: str) -> None:
    """Cache users [0, count) through the batch function; every one must come back ``ok``."""
    for first in range(0, count, 100):
        ids = [f"u{n:09d}" for n in range(first, min(first + 100, count))]
        req = urllib.request.Request(f"{batch_url}/api/v1/features/batch", data=json.dumps({"user_ids": ids}).encode(),
                                     headers={"Content-Type": "application/json", "X-API-Key": key})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"warming users {ids[0]}..{ids[-1]}: HTTP {exc.code} {exc.read()[:300]!r}") from None
        if body["counts"]["ok"] != len(ids):
            raise SystemExit(f"warming users {ids[0]}..{ids[-1]}: {body['counts']} (is the data set seeded?)")


def prime(single_url: str, batch_url: str, headers: dict[str, str], rounds: int = 20) -> None:
    """A few reads through each serving process before measuring: clients, pools and the audit publisher built."""
    for n in range(rounds):
        with urllib.request.urlopen(urllib.request.Request(f"{single_url}/api/v1/features/user/u{n:09d}",
                                                           headers=headers), timeout=60):
            pass
        req = urllib.request.Request(f"{batch_url}/api/v1/features/batch",
                                     headers={"Content-Type": "application/json", **headers},
                                     data=json.dumps({"user_ids": [f"u{n:09d}"]}).encode())
        with urllib.request.urlopen(req, timeout=60):
            pass


def clear_cache(redis_url: str, prefix: str = PREFIX) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    batch = []
    for key in client.scan_iter(f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def cold_regions(users: int, warm_users: int, levels: list[int],
                 scenarios: list[str]) -> tuple[dict[tuple[str, int], int], int]:
    """A region of never-cached user numbers of its own for each (cold scenario, level): first numbers, span."""
    slots = [(name, c) for c in levels for name in scenarios if name in COLD]
    if not slots:
        return {}, 0
    span = (users - warm_users) // len(slots)
    if span < 2:
        raise SystemExit(f"{users:,} users leave no never-cached region for {len(slots)} cold runs: "
                         "use a bigger data set, a smaller --warm or fewer levels")
    return {slot: warm_users + i * span for i, slot in enumerate(slots)}, span


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="fs_bench")
    parser.add_argument("--users", type=int, default=1_000_000, help="users to seed when the database has none")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument("--concurrency", default="1,10,50", help="connections; every level is measured and printed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--warm", type=int, default=20_000, help="users cached before the hit scenarios")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="the no-op floor is always measured too")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--prefix", default=PREFIX, help="Redis key prefix of the run (cleared before and after)")
    parser.add_argument("--audit-sink", choices=("pubsub", "disabled"), default="pubsub",
                        help="the guarded functions' audit sink: pubsub (production, to the local stand-in) or "
                             "disabled, to tell the audit's cost from the rest of the guard's")
    parser.add_argument("--mode", choices=("async", "threaded"), default="async",
                        help="FS_SERVING_MODE of the read functions (async: production's default); both no-op "
                             "floors are measured, the ratios are against the floor of this mode")
    parser.add_argument("--cold-source", action="store_true",
                        help="leave the source's pages where they are (by default the relations a miss reads are "
                             "prewarmed into shared_buffers, as a source that has served a while holds them)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/serving.py drives the functions with wrk, which is not installed: "
                         "apt-get install wrk (make wrk does it)")
    levels = [int(c) for c in args.concurrency.split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s != "floor"]
    if unknown := set(scenarios) - set(SCENARIOS):
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    env = {**env_for(args), "FS_SERVING_MODE": args.mode}
    users = ensure_data(env, args.database, args.users)
    subprocess.run([str(Path(sys.executable)), "-m", "feature_store.cli.migrate"], env=env, check=True,
                   capture_output=True)  # a data set seeded before 0006_api_clients gets its tables
    key = bench_client(env)
    rows = describe(env, args.database)
    if not any(name in COLD for name in scenarios):
        source_line = "source: not read by these scenarios"
    elif args.cold_source:
        source_line = "source: not prewarmed (--cold-source: a miss reads its pages from the OS cache)"
    else:
        source_line = prewarm_source(env, args.database)
        print(f"  {source_line}", file=sys.stderr, flush=True)
    warm_users = min(args.warm, users // 2)
    regions, cold_span = cold_regions(users, warm_users, levels, scenarios)
    load_before = os.getloadavg()
    clear_cache(env["FS_REDIS_URL"], args.prefix)
    procs = []
    results: dict[str, dict[str, dict[str, Any]]] = {}
    standin, audited = audited_env(env)
    audited["FS_AUDIT_SINK"] = args.audit_sink
    bare_env = {**env, "FS_AUDIT_SINK": "disabled"}
    try:
        noop, noop_url = serve("noop", ROOT / "bench" / "noop" / "main.py", env)
        noop_async, noop_async_url = serve("noop_async", ROOT / "bench" / "noop" / "main.py", env)
        single, single_url = serve("read_features", ROOT / "functions" / "read_features" / "main.py", audited)
        batch, batch_url = serve("read_features_batch", ROOT / "functions" / "read_features_batch" / "main.py", audited)
        bare, bare_url = serve("read_features_unguarded", ROOT / "bench" / "unguarded" / "main.py", bare_env)
        bare_batch, bare_batch_url = serve("read_features_batch_unguarded", ROOT / "bench" / "unguarded" / "main.py",
                                           bare_env)
        # start_new_session: each pid leads its process group
        procs = [noop, noop_async, single, batch, bare, bare_batch]
        servers = {noop_url: noop.pid, noop_async_url: noop_async.pid, single_url: single.pid, batch_url: batch.pid,
                   bare_url: bare.pid, bare_batch_url: bare_batch.pid}
        warm(batch_url, warm_users, key)
        for urls, headers in (((single_url, batch_url), {"X-API-Key": key}), ((bare_url, bare_batch_url), {})):
            prime(*urls, headers)
        cached = {"IDS_FROM": "0", "IDS_SPAN": str(warm_users), "API_KEY": key}
        for c in levels:
            plan = {
                "floor": (noop_url, {}),
                "floor_async": (noop_async_url, {}),
                "hit": (single_url, cached),
                "batch_hit": (batch_url, {**cached, "BATCH": "100"}),
                "miss": (single_url, {"IDS_FROM": str(regions.get(("miss", c), 0)), "IDS_SPAN": str(cold_span),
                                      "API_KEY": key}),
                "batch_cold": (batch_url, {"IDS_FROM": str(regions.get(("batch_cold", c), 0)),
                                           "IDS_SPAN": str(cold_span), "BATCH": "100", "API_KEY": key}),
                "hit_unguarded": (bare_url, cached),
                "batch_hit_unguarded": (bare_batch_url, {**cached, "BATCH": "100"}),
            }
            for name in ["floor", "floor_async", *scenarios]:
                url, extra = plan[name]
                results.setdefault(name, {})[str(c)] = wrk(url, name, c, args.duration, extra, servers[url])
                print(f"  measured {LABELS[name]} at concurrency {c}", file=sys.stderr, flush=True)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)  # an audited function flushes its queue on SIGTERM
        print(f"  audit stand-in received {standin.received:,} rows", file=sys.stderr, flush=True)
        standin.stop()
        clear_cache(env["FS_REDIS_URL"], args.prefix)  # the shared Redis gets its memory back (7-day TTLs)
    report(results, args, users, rows, warm_users, cold_span, (load_before, os.getloadavg()), source_line)
    return 0


def cpu_text(r: dict[str, Any]) -> str:
    return "-" if r.get("cpu_ms_per_2xx") is None else f"{r['cpu_ms_per_2xx']:.3f}"


def report(results: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace, users: int,
           rows: dict[str, int], warm_users: int, cold_span: int,
           load: tuple[tuple[float, ...], tuple[float, ...]], source_line: str) -> None:
    print(f"\nserving benchmark: {size_line(args.database, rows)}")
    print(f"  {source_line}")
    print(f"  {warm_users:,} users cached for the hit scenarios; "
          + (f"never-cached regions of {cold_span:,} users per cold scenario and level; " if cold_span else "")
          + f"read functions {args.mode} (FS_SERVING_MODE; ratios against the {args.mode} floor), "
          f"WORKERS={args.workers} THREADS={args.threads}, {args.duration} s per run, wrk on the same machine "
          f"({os.cpu_count()} cores), load average {load[0][0]:.2f} before, {load[1][0]:.2f} after")
    print("  2xx/s: 2xx answers per second (the only throughput); non-2xx and socket errors apart; wrong: vectors "
          "that were not what the scenario claims (hits in a miss scenario, misses in a hit scenario)")
    print(f"{'scenario':<17}{'conc':>5}{'2xx/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
          f"{'sock err':>9}{'degr.':>7}{'wrong':>15}{'p95/floor':>11}{'2xx/s/floor':>13}{'CPU ms/2xx':>12}")
    floor = results.get("floor_async" if args.mode == "async" else "floor", {})
    for name, by_level in results.items():
        for c, r in by_level.items():
            f = floor[c]
            wrong = f"{r['wrong']:,}/{r['vectors']:,}" if not name.startswith("floor") else "-"
            ratio_p95 = f"{r['p95_ms'] / f['p95_ms']:.2f}x" if f["p95_ms"] else "-"
            ratio_rps = f"{r['rps'] / f['rps']:.2f}x" if f["rps"] else "-"
            print(f"{LABELS[name]:<17}{c:>5}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{r['non_2xx']:>9}{r['errors_socket']:>9}{r['degraded']:>7}{wrong:>15}{ratio_p95:>11}"
                  f"{ratio_rps:>13}{cpu_text(r):>12}")
            if r["statuses"]:
                print(f"{'':<22}non-2xx by status: {r['statuses']}")
    parts = " + audit" if args.audit_sink != "disabled" else ", the audit trail disabled"
    for guarded, bare in GUARDED.items():
        for c in results.get(guarded, {}):
            if c in results.get(bare, {}):
                g, b = results[guarded][c], results[bare][c]
                cpu = (f", server CPU {g['cpu_ms_per_2xx'] - b['cpu_ms_per_2xx']:+.3f} ms per answer"
                       if g.get("cpu_ms_per_2xx") is not None and b.get("cpu_ms_per_2xx") is not None else "")
                print(f"guard adds to {LABELS[guarded]} at concurrency {c}: p95 {g['p95_ms'] - b['p95_ms']:+.3f} ms, "
                      f"p50 {g['p50_ms'] - b['p50_ms']:+.3f} ms{cpu} (key auth + scope + rate limit{parts}; "
                      f"{LABELS[bare]} measured in the same run)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"database": args.database, "users": users, "rows": rows,
                                         "warm_users": warm_users, "cold_span": cold_span, "workers": args.workers,
                                         "mode": args.mode, "threads": args.threads, "duration_s": args.duration,
                                         "load_average": load, "source": source_line, "results": results}, indent=2))
        print(f"json: {args.json}")


if __name__ == "__main__":
    sys.exit(main())
