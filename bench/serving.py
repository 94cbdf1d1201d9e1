"""Serving benchmark: latency percentiles and throughput of the read functions against a no-op floor.

    .venv/bin/python bench/serving.py [--database fs_bench] [--users 1000000] [--duration 10]
                                      [--concurrency 1,10,50] [--workers 2] [--threads 4] [--json out.json]

Seeds the database when it holds no finished synthetic data set, serves the no-op floor
(bench/noop), read_features and read_features_batch with functions-framework exactly as
production does (gunicorn gthread; WORKERS and THREADS as given), drives each with wrk
(bench/wrk_report.lua) and prints p50/p95/p99 and requests/s per scenario and concurrency,
plus ratios against the floor measured in the same run. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dataset import ensure_data

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "emulators"))
PY = str(Path(sys.executable))
FF = str(Path(sys.executable).parent / "functions-framework")
LUA = str(ROOT / "bench" / "wrk_report.lua")
PREFIX = "bench"
WARM = 20_000  # users [0, WARM) are cached before the hit scenarios


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(args: argparse.Namespace) -> dict[str, str]:
    import stack

    env = {**os.environ, **stack.stack_env(), "FS_POSTGRES_DATABASE": args.database, "FS_REDIS_KEY_PREFIX": PREFIX,
           "FS_LOG_LEVEL": "WARNING", "WORKERS": str(args.workers), "THREADS": str(args.threads)}
    env["FS_REDIS_URL"] = args.redis_url or env["FS_REDIS_URL"]
    return env


def serve(name: str, source: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([FF, "--target", name, "--source", str(source), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not start")


def wrk(url: str, scenario: str, concurrency: int, duration: int, extra: dict[str, str]) -> dict[str, float]:
    threads = min(concurrency, 2)
    env = {**os.environ, "SCENARIO": scenario, **extra}
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", "--timeout", "5s", "-s", LUA,
                          url], env=env, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("{"))
    raw = json.loads(line)
    seconds = raw["duration_us"] / 1e6
    return {"rps": raw["requests"] / seconds, "p50_ms": raw["p50_us"] / 1000, "p95_ms": raw["p95_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "requests": raw["requests"], "errors": raw["errors_status"] +
            raw["errors_socket"], "degraded": raw["degraded"]}


def warm(batch_url: str, count: int) -> None:
    for first in range(0, count, 100):
        ids = [f"u{n:09d}" for n in range(first, min(first + 100, count))]
        req = urllib.request.Request(f"{batch_url}/api/v1/features/batch", data=json.dumps({"user_ids": ids}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            resp.read()


def clear_cache(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    batch = []
    for key in client.scan_iter(f"{PREFIX}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="fs_bench")
    parser.add_argument("--users", type=int, default=1_000_000, help="users to seed when the database has none")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--scenarios", default="floor,hit,miss,batch_hit,batch_cold")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/serving.py drives the functions with wrk, which is not installed: "
                         "apt-get install wrk (make wrk does it)")
    levels = [int(c) for c in args.concurrency.split(",")]
    scenarios = args.scenarios.split(",")
    env = env_for(args)
    users = ensure_data(env, args.database, args.users)
    clear_cache(env["FS_REDIS_URL"])
    procs = []
    try:
        noop, noop_url = serve("noop", ROOT / "bench" / "noop" / "main.py", env)
        single, single_url = serve("read_features", ROOT / "functions" / "read_features" / "main.py", env)
        batch, batch_url = serve("read_features_batch", ROOT / "functions" / "read_features_batch" / "main.py", env)
        procs = [noop, single, batch]
        warm(batch_url, WARM)
        # Never-cached id regions: misses use [WARM, mid), cold batches [mid, users), split per run.
        mid = WARM + (users - WARM) // 2
        miss_span = (mid - WARM) // len(levels)
        cold_span = (users - mid) // len(levels)
        results: dict[str, dict[str, dict[str, float]]] = {}
        for i, c in enumerate(levels):
            plan = {
                "floor": (noop_url, {}),
                "hit": (single_url, {"IDS_FROM": str(0), "IDS_SPAN": str(WARM)}),
                "miss": (single_url, {"IDS_FROM": str(WARM + i * miss_span),
                                      "THREAD_SPAN": str(miss_span // 2)}),
                "batch_hit": (batch_url, {"IDS_FROM": "0", "IDS_SPAN": str(WARM), "BATCH": "100"}),
                "batch_cold": (batch_url, {"IDS_FROM": str(mid + i * cold_span),
                                           "THREAD_SPAN": str(cold_span // 200), "BATCH": "100"}),
            }
            for name in scenarios:
                url, extra = plan[name]
                results.setdefault(name, {})[str(c)] = wrk(url, name, c, args.duration, extra)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(10)
        clear_cache(env["FS_REDIS_URL"])  # the shared Redis gets its memory back (the vectors have a 7-day TTL)
    report(results, args, users)
    return 0


def report(results: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace, users: int) -> None:
    print(f"\nserving benchmark: {users:,} users, WORKERS={args.workers} THREADS={args.threads}, "
          f"{args.duration}s per run, wrk on the same 2-core machine")
    print(f"{'scenario':<12}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}{'degr.':>7}"
          f"{'p95/floor':>11}{'rps/floor':>11}")
    floor = results.get("floor", {})
    for name, by_level in results.items():
        for c, r in by_level.items():
            f = floor.get(c)
            ratio_p95 = f"{r['p95_ms'] / f['p95_ms']:.2f}x" if f else "-"
            ratio_rps = f"{r['rps'] / f['rps']:.2f}x" if f else "-"
            print(f"{name:<12}{c:>5}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{int(r['errors']):>8}{int(r['degraded']):>7}{ratio_p95:>11}{ratio_rps:>11}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"users": users, "workers": args.workers, "threads": args.threads,
                                         "duration_s": args.duration, "results": results}, indent=2))
        print(f"json: {args.json}")


if __name__ == "__main__":
    sys.exit(main())
