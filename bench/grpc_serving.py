"""gRPC against REST in one run: cached single reads and cached batches of 100, driven by h2load (C).

    .venv/bin/python bench/grpc_serving.py [--database fs_bench] [--users 1000000] [--duration 10]
                                   [--concurrency 1,10,50] [--workers 2] [--threads 4] [--grpc-threads 8]

Serves read_features, read_features_batch and the no-op floor with functions-framework as production does
(async by default, gunicorn gthread with FS_SERVING_MODE=threaded; WORKERS/THREADS) and fs-grpc with the
same number of processes, caches the users read, then drives every scenario with h2load at every level,
REST over HTTP/1.1 (--h1) and gRPC over HTTP/2 (POST, content-type application/grpc, te: trailers, a body
file of the 5-byte prefix and the message).
The same tool drives both, with the same fixed request (h2load sends one body): the same user for single
reads, the same 100 users for batches. Floors measured in the same run: the no-op function for REST, the
health check (grpc.health.v1.Health/Check, a no-op served by the same server) for gRPC.

Honesty: p50/p95/p99 come from h2load's per-request log; only 200 answers count for REST, and for gRPC
the answers whose grpc-status was not OK (h2load cannot read trailers) are counted from the server's own
log (fs-grpc logs every failed call at WARNING) and shown apart, as are h2load's failed requests.
Figures, never pass/fail. Then the client's overhead over raw HTTP: p50 of feature_store_client's single
read against the same request made with a bare urllib3 pool and json.loads, and the same for gRPC.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import urllib3
from dataset import describe, ensure_data, size_line
from serving import ROOT, audited_env, bench_client, clear_cache, env_for, free_port, serve, warm

sys.path.insert(0, str(ROOT / "shared"))
from feature_store.settings import serving_mode
from feature_store_client import FeatureStoreClient
from feature_store_client.v1 import feature_store_pb2 as pb

HEALTH = "/grpc.health.v1.Health/Check"


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: no compression flag, 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load(url: str, concurrency: int, duration: int, body: bytes | None, headers: list[str], h1: bool,
           tmp: Path) -> dict[str, Any]:
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)
    argv = ["h2load", "-c", str(concurrency), "-m", "1", "-t", str(min(concurrency, 2)), "-D", str(duration),
            f"--log-file={log}", *[a for h in headers for a in ("-H", h)]]
    if h1:
        argv.append("--h1")
    if body is not None:
        (tmp / "body").write_bytes(body)
        argv += ["-d", str(tmp / "body")]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=duration + 60, check=False).stdout
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    statuses = [int(r[1]) for r in rows]
    latencies = sorted(int(r[2]) / 1000 for r in rows if int(r[1]) == 200)
    failed = next((int(x.split()[0]) for line in out.splitlines() if line.startswith("requests:")
                   for x in [line.split("failed,")[0].split(",")[-1].strip()] if x), 0)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    ok = sum(1 for s in statuses if s == 200)
    return {"ok": ok, "non_200": len(statuses) - ok, "failed": failed, "rps": ok / duration,
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}


def grpc_failures(log: Path) -> int:
    """Calls fs-grpc logged as failed (every non-OK status is a WARNING line with error_code)."""
    return sum(1 for line in log.read_text(errors="replace").splitlines() if '"error_code"' in line)


def client_overhead(single_url: str, grpc_target: str, uid: str, calls: int, key: str) -> dict[str, float]:
    """p50 per call: the client against a bare urllib3 request + json.loads, and against a bare gRPC stub.

    The four are called in rounds, each round in a new random order, so each sees the same server and
    machine in every position: measured one after the other, drift between the phases showed up as
    "overhead" of whichever ran second, and in a fixed order the first call of a transport after the
    other's paid for waking its connection. Runs in a process of its own (``measured_apart``): this
    script's process also serves the audit trail's Pub/Sub stand-in, whose threads would compete with it.
    """
    pool = urllib3.PoolManager(maxsize=1, retries=False)
    url = f"{single_url}/api/v1/features/user/{uid}"

    import grpc

    channel = grpc.insecure_channel(grpc_target)
    stub = channel.unary_unary("/featurestore.v1.FeatureStore/GetUserFeatures",
                               request_serializer=pb.GetUserFeaturesRequest.SerializeToString,
                               response_deserializer=pb.GetUserFeaturesResponse.FromString)
    with FeatureStoreClient.over_rest(single_url, api_key=key) as rest, \
            FeatureStoreClient.over_grpc(grpc_target, api_key=key) as over_grpc:
        calls_of = {
            "raw_http_ms": lambda: json.loads(pool.request("GET", url, headers={"X-API-Key": key}).data),
            "client_rest_ms": lambda: rest.get_online_features(uid),
            "raw_grpc_ms": lambda: stub(pb.GetUserFeaturesRequest(user_id=uid), timeout=5,
                                        metadata=(("x-api-key", key),)),
            "client_grpc_ms": lambda: over_grpc.get_online_features(uid),
        }
        samples: dict[str, list[float]] = {name: [] for name in calls_of}
        order = list(calls_of.items())
        shuffle = random.Random(7).shuffle
        for n in range(50 + calls):
            shuffle(order)
            for name, fn in order:
                t = time.perf_counter()
                fn()
                if n >= 50:  # the first 50 rounds warm up
                    samples[name].append(time.perf_counter() - t)
    channel.close()
    return {name: statistics.median(s) * 1000 for name, s in samples.items()}


def measured_apart(*args: Any) -> dict[str, float]:
    """``client_overhead(*args)`` in a fresh process (spawned: nothing of this one's threads in it)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(client_overhead, args)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="fs_bench")
    parser.add_argument("--users", type=int, default=1_000_000, help="users to seed when the database has none")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--grpc-threads", type=int, default=8)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--overhead-calls", type=int, default=2000)
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the client's overhead (no h2load runs): for working on the client")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("bench/grpc_serving.py drives both transports with h2load: apt-get install nghttp2-client "
                         "(make h2load does it)")
    levels = [int(c) for c in args.concurrency.split(",")]
    standin, env = audited_env(env_for(args))  # both transports audit every read as production does
    ensure_data(env, args.database, args.users)
    key = bench_client(env)  # the read functions and fs-grpc need credentials (docs/security.md)
    rows = describe(env, args.database)
    ids = [f"u{n:09d}" for n in range(100)]
    clear_cache(env["FS_REDIS_URL"])
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[int, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        grpc_log = tmp / "grpc.log"
        try:
            urls = []
            # The REST floor is served as the read functions are (FS_SERVING_MODE: async by default).
            noop = "noop_async" if serving_mode(env) == "async" else "noop"
            for name, source in ((noop, ROOT / "bench" / "noop" / "main.py"),
                                 ("read_features", ROOT / "functions" / "read_features" / "main.py"),
                                 ("read_features_batch", ROOT / "functions" / "read_features_batch" / "main.py")):
                proc, url = serve(name, source, env)
                procs.append(proc)
                urls.append(url)
            noop_url, single_url, batch_url = urls
            target = f"127.0.0.1:{free_port()}"
            with grpc_log.open("wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "feature_store.transports.grpc_server", "--address", target, "--workers",
                     str(args.workers), "--threads", str(args.grpc_threads)],
                    env={**env, "PYTHONPATH": str(ROOT / "shared")}, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True))
            time.sleep(2)
            warm(batch_url, 100, key)
            grpc_headers = ["content-type: application/grpc", "te: trailers", f"x-api-key: {key}"]
            single = grpc_frame(pb.GetUserFeaturesRequest(user_id=ids[0]).SerializeToString())
            batch = grpc_frame(pb.BatchGetUserFeaturesRequest(user_ids=ids).SerializeToString())
            health = grpc_frame(b"")
            plan = {
                "REST floor (no-op)": (noop_url + "/", None, [], True),
                "REST single, hit": (f"{single_url}/api/v1/features/user/{ids[0]}", None, [f"x-api-key: {key}"],
                                     True),
                "REST batch 100, hit": (f"{batch_url}/api/v1/features/batch", json.dumps({"user_ids": ids}).encode(),
                                        ["content-type: application/json", f"x-api-key: {key}"], True),
                "gRPC floor (health)": (f"http://{target}{HEALTH}", health, grpc_headers, False),
                "gRPC single, hit": (f"http://{target}/featurestore.v1.FeatureStore/GetUserFeatures", single,
                                     grpc_headers, False),
                "gRPC batch 100, hit": (f"http://{target}/featurestore.v1.FeatureStore/BatchGetUserFeatures", batch,
                                        grpc_headers, False),
            }
            for c in [] if args.overhead_only else levels:
                for label, (url, body, headers, h1) in plan.items():
                    before = grpc_failures(grpc_log)
                    r = h2load(url, c, args.duration, body, headers, h1, tmp)
                    if label.startswith("gRPC"):
                        r["not_ok"] = grpc_failures(grpc_log) - before
                        r["rps"] = (r["ok"] - r["not_ok"]) / args.duration
                    results.setdefault(label, {})[c] = r
                    print(f"  measured {label} at concurrency {c}", file=sys.stderr, flush=True)
            overhead = measured_apart(single_url, target, ids[0], args.overhead_calls, key)
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                p.wait(15)
            standin.stop()
            clear_cache(env["FS_REDIS_URL"])
    print(f"\ngRPC benchmark: {size_line(args.database, rows)}; the same cached user (single) and the same 100 "
          f"cached users (batch) in every request; WORKERS={args.workers} THREADS={args.threads} for the functions, "
          f"fs-grpc --workers {args.workers} --threads {args.grpc_threads}; h2load on the same {os.cpu_count()} "
          f"cores, {args.duration} s per run, load average {os.getloadavg()[0]:.2f}")
    print(f"{'scenario':<22}{'conc':>5}{'ok/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non-200':>9}"
          f"{'not OK':>8}{'failed':>8}")
    for label, by_level in results.items():
        for c, r in by_level.items():
            print(f"{label:<22}{c:>5}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{r['non_200']:>9}{r.get('not_ok', '-'):>8}{r['failed']:>8}")
    for kind in () if args.overhead_only else ("single", "batch 100"):
        for c in levels:
            rest, grpc_r = results[f"REST {kind}, hit"][c], results[f"gRPC {kind}, hit"][c]
            print(f"gRPC / REST p95, {kind} at {c}: {grpc_r['p95_ms'] / rest['p95_ms']:.2f}x")
    print(f"client overhead, p50 per single read: REST {overhead['client_rest_ms']:.3f} ms vs raw HTTP "
          f"{overhead['raw_http_ms']:.3f} ms (+{overhead['client_rest_ms'] - overhead['raw_http_ms']:.3f} ms); "
          f"gRPC {overhead['client_grpc_ms']:.3f} ms vs raw stub {overhead['raw_grpc_ms']:.3f} ms "
          f"(+{overhead['client_grpc_ms'] - overhead['raw_grpc_ms']:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
