"""Refresh benchmark: full materialization PostgreSQL -> Redis, users/s, peak RSS per size, Redis bytes per user.

    .venv/bin/python bench/refresh.py [--database fs_bench] [--users 1000000] [--sizes 100000,1000000]
                                      [--chunk 5000] [--workers 2] [--write-batch 500] [--json out.json]

Seeds the database when it holds no finished synthetic data set (fs-generate, several minutes for
1M users; reused afterwards), starts a private redis-server on a free loopback port (no
persistence, volatile-lru, stopped by its pid at the end) and, for each size, runs one full
refresh of the first N users in a child process of its own, so that each size's peak RSS
(VmHWM) is its own. Prints users/s, wall time, peak RSS, and Redis bytes per user twice: INFO
used_memory before/after divided by N, and MEMORY USAGE averaged over a sample of keys. It also
adds up the CPU the run cost per user in the Python process, in its PostgreSQL backends (read from
/proc: PostgreSQL must run on this machine) and in Redis, which gives the rate the work would reach
on idle cores however busy the machine is while it runs.
``--chunk 2000,5000,10000`` sweeps chunk sizes. Figures, never pass/fail; the machine's load
average is printed beside them because other work on the same cores changes them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dataset import describe, ensure_data, size_line
from processes import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "emulators"))
PY = str(Path(sys.executable))
PREFIX = "bench"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench/refresh.py: redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--maxmemory-policy", "volatile-lru"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("bench/refresh.py: the private redis-server did not start")


def child(size: int) -> None:
    """One full refresh of the first ``size`` users in this process; prints one JSON line of figures."""
    from feature_store.wiring import services

    svc = services()
    refresher = svc.refresher
    name = svc.settings.serving.feature_set
    to_user = refresher.source.next_boundary("", size)
    rss_before = _vm("VmRSS")
    cpu_before = _cpu_self()
    started = time.perf_counter()
    out = refresher.full(name, from_user=None, to_user=to_user)
    wall = time.perf_counter() - started
    python_cpu = _cpu_self() - cpu_before
    # The backends of the refresh's own pool: their CPU since they connected is this run's (plus a login).
    idle = list(svc.bulk_postgres._idle.queue)  # a bench may look inside: no public way to list them
    pids = [int(c.run("SELECT pg_backend_pid()")[0][0]) for c in idle]
    postgres_cpu = sum(_cpu_pid(p) for p in pids)
    users = out["progress"]["done"]
    print(json.dumps({"users": users, "written": out["written"], "wall_s": round(wall, 2),
                      "users_per_s": round(users / wall, 1), "rss_before_mb": rss_before,
                      "peak_rss_mb": _vm("VmHWM"), "python_cpu_us_per_user": round(python_cpu / users * 1e6, 1),
                      "postgres_cpu_us_per_user": round(postgres_cpu / users * 1e6, 1),
                      "postgres_backends": len(pids)}))


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_pid(pid: int) -> float:
    """User + system CPU seconds of a process on this machine (PostgreSQL runs here in the bench)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def measure(env: dict[str, str], port: int, size: int, chunk: int) -> dict[str, Any]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    redis_cpu_before = _redis_cpu(client)
    load_before = load()
    proc = subprocess.run([PY, __file__, "--child", str(size)], env={**env, "FS_REFRESH_CHUNK_USERS": str(chunk)},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench/refresh.py: the {size:,}-user run failed:\n{proc.stderr[-3000:]}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    after = int(client.info("memory")["used_memory"])
    redis_cpu = _redis_cpu(client) - redis_cpu_before
    keys = [k for k in client.scan_iter(f"{PREFIX}:*:u:*", count=1000)][:50_000]
    sample = random.Random(1).sample(keys, min(1000, len(keys)))
    usage = [int(client.memory_usage(k) or 0) for k in sample]
    values = client.mget(sample) if sample else []
    figures.update({
        "size": size, "chunk": chunk, "load_before": load_before, "load_after": load(),
        "redis_bytes_per_user_info": round((after - before) / max(1, figures["users"]), 1),
        "redis_bytes_per_user_memory_usage": round(sum(usage) / max(1, len(usage)), 1),
        "value_bytes_mean": round(sum(len(v or b"") for v in values) / max(1, len(values)), 1),
        "redis_cpu_us_per_user": round(redis_cpu / max(1, figures["users"]) * 1e6, 1),
    })
    total = figures["python_cpu_us_per_user"] + figures["postgres_cpu_us_per_user"] + figures["redis_cpu_us_per_user"]
    figures["cpu_us_per_user"] = round(total, 1)
    # What the same work would reach with every core of this machine to itself.
    figures["idle_machine_ceiling_users_per_s"] = round((os.cpu_count() or 1) / total * 1e6) if total else None
    client.flushall()
    return figures


def _redis_cpu(client: Any) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="fs_bench")
    parser.add_argument("--users", type=int, default=1_000_000, help="users to seed when the database has none")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--chunk", default="5000", help="users per source statement; a list sweeps them")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write-batch", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return 0

    import stack

    env = {**os.environ, **stack.stack_env(), "FS_POSTGRES_DATABASE": args.database, "FS_LOG_LEVEL": "WARNING",
           "FS_REDIS_KEY_PREFIX": PREFIX, "FS_REFRESH_WORKERS": str(args.workers),
           "FS_REFRESH_WRITE_BATCH": str(args.write_batch)}
    users = ensure_data(env, args.database, args.users)
    rows = describe(env, args.database)
    print(f"bulk refresh: {size_line(args.database, rows)}; FS_REFRESH_WORKERS={args.workers}, "
          f"write batch {args.write_batch}, a private redis-server", flush=True)
    sizes = [min(int(s), users) for s in args.sizes.split(",")]
    chunks = [int(c) for c in args.chunk.split(",")]
    redis_proc, port = start_redis()
    env["FS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    results = []
    try:
        for chunk in chunks[:-1]:  # the sweep runs at the smallest size
            results.append(measure(env, port, sizes[0], chunk))
            print(_line(results[-1]), flush=True)
        for size in sizes:
            results.append(measure(env, port, size, chunks[-1]))
            print(_line(results[-1]), flush=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    report = {"database": args.database, "seeded_users": users, "rows": rows, "workers": args.workers,
              "write_batch": args.write_batch, "cpus": os.cpu_count(), "runs": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


def _line(r: dict[str, Any]) -> str:
    return (f"{r['size']:>9,} users  chunk {r['chunk']:>6,}  {r['users_per_s']:>9,.0f} users/s  {r['wall_s']:>7.1f} s  "
            f"peak RSS {r['peak_rss_mb']:>6.1f} MB (at start {r['rss_before_mb']:.1f})  "
            f"Redis {r['redis_bytes_per_user_info']:.0f} B/user (INFO), {r['redis_bytes_per_user_memory_usage']:.0f} "
            f"B/key (MEMORY USAGE), value {r['value_bytes_mean']:.0f} B  load {r['load_before']} -> {r['load_after']}\n"
            f"{'':>11}CPU per user: Python {r['python_cpu_us_per_user']:.0f} us, PostgreSQL "
            f"{r['postgres_cpu_us_per_user']:.0f} us, Redis {r['redis_cpu_us_per_user']:.0f} us "
            f"= {r['cpu_us_per_user']:.0f} us"
            f" -> ceiling on {os.cpu_count()} idle cores {r['idle_machine_ceiling_users_per_s']:,} users/s")


if __name__ == "__main__":
    sys.exit(main())
