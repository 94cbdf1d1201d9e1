"""What the read guard costs inside one process: credentials, scope and rate limit, without HTTP in between.

    .venv/bin/python bench/guard.py [--database fs_bench] [--calls 3000]

Over the local stack's PostgreSQL and Redis (a data set seeded by bench/serving.py), the same cached
reads through the read path's own objects, guarded and unguarded in turn (interleaved call by call, so
load on the machine falls on both alike): ``authorize`` (a cached key: the HMAC and the cache lookup),
the scope checks, and ``Reader.read`` with the caller (the limiter's script pipelined with the MGET)
against ``Reader.read`` without. Prints p50 and p95 per call and the difference. Figures, never pass/fail;
bench/serving.py measures the same through the served functions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "emulators"))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="fs_bench")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--prefix", default="guardbench")
    args = parser.parse_args()
    import stack

    env = {**stack.stack_env(), "FS_POSTGRES_DATABASE": args.database, "FS_REDIS_KEY_PREFIX": args.prefix,
           "FS_LOG_LEVEL": "ERROR"}
    os.environ.update(env)
    from serving import bench_client

    key = bench_client({**os.environ})
    from feature_store.domain.catalog import get_feature_set
    from feature_store.transports.access import authorize
    from feature_store.transports.features_api import scoped_read
    from feature_store.wiring import services

    svc = services()
    fs = get_feature_set("credit_decision", svc.versions.served("credit_decision"))
    headers = {"X-API-Key": key}
    ids = [f"u{n:09d}" for n in range(100)]
    svc.reader.read(fs, ids)  # cache them
    authorize(svc, headers)  # resolve the key once: the cached path is what every read after the first pays

    def timed(fn: Callable[[], object]) -> float:
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1000

    rows = []
    for label, users in (("single, hit", ids[:1]), ("batch 100, hit", ids)):
        guarded, bare = [], []
        for _ in range(args.calls):
            guarded.append(timed(lambda u=users: scoped_read(svc, authorize(svc, headers), fs, u, None)))
            bare.append(timed(lambda u=users: svc.reader.read(fs, u)))
        rows.append((label, guarded, bare))
    auth = [timed(lambda: authorize(svc, headers)) for _ in range(args.calls)]
    print(f"guard in-process, {args.calls} calls each, interleaved; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    print(f"  authorize (cached key): p50 {statistics.median(auth) * 1000:.1f} us, "
          f"p95 {percentile(auth, 0.95) * 1000:.1f} us")
    for label, guarded, bare in rows:
        print(f"  {label:<15} guarded p50 {statistics.median(guarded):.3f} ms p95 {percentile(guarded, 0.95):.3f} ms"
              f" | unguarded p50 {statistics.median(bare):.3f} ms p95 {percentile(bare, 0.95):.3f} ms"
              f" | added p50 {statistics.median(guarded) - statistics.median(bare):+.3f} ms"
              f" p95 {percentile(guarded, 0.95) - percentile(bare, 0.95):+.3f} ms")
    import redis

    client = redis.Redis.from_url(env["FS_REDIS_URL"])
    keys = list(client.scan_iter(f"{args.prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
