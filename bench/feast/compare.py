"""Feast against ours, side by side in one run: the same users, the same 26 feature values, the same Redis, wrk.

    .venv/bin/python bench/feast/compare.py [--database fs_bench] [--users 100000] [--duration 10]
                                            [--concurrency 1,10,50] [--batch-concurrency 1] [--workers 2]
                                            [--threads 4] [--json out.json]

1. Feast (the newest on PyPI, 0.67.0) in a virtual environment of its own, .local/venvs/feast, built by
   bench/feast/install.sh the first time this runs. No code of Feast is in the repository; only this
   harness and the repository configuration bench/feast/feature_repo.py generates.
2. A private redis-server on a port of 18700-18799 (no persistence), stopped by its pid at the end,
   holding both stores' keys.
3. Materialize, timed: ours is a full refresh of the first --users users (bench/refresh.py's run, into
   the private Redis); Feast's is ``feast materialize`` of the same users' 26 feature values, which
   this script computes with our catalog at one instant and exports as Feast's offline source
   (Parquet, through feature_repo.py), then ``feast apply``.
4. Serving, every level in the same run: Feast's Python feature server (``feast serve``, --workers
   processes) answering POST /get-online-features, ours (read_features, read_features_batch) and the
   no-op floor under functions-framework exactly as bench/serving.py serves them (gunicorn gthread,
   WORKERS/THREADS), driven by the same wrk settings (bench/wrk_report.lua): cached single reads at
   every --concurrency level, cached batches of 100 at --batch-concurrency, ids drawn at random among
   the users both materialized.

Honesty: throughput counts 2xx answers only; non-2xx and socket errors are their own columns; every
answer is checked: "wrong" counts our vectors that were not cache hits and Feast's values whose
status was not PRESENT. Figures from this machine only, never pass/fail.
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
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))

from dataset import describe, ensure_data, size_line  # noqa: E402
from serving import ROOT, bench_client, env_for, serve, wrk  # noqa: E402

FEAST = ROOT / ".local" / "venvs" / "feast" / "bin"
PRIVATE_PORTS = range(18700, 18800)
FEATURE_SET = "credit_decision"


def private_port() -> int:
    """A free loopback port in this harness's private range."""
    for port in PRIVATE_PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port in {PRIVATE_PORTS.start}-{PRIVATE_PORTS.stop - 1}")


def wait_port(port: int, what: str, proc: subprocess.Popen[bytes] | None = None, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} within {seconds:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def export(env: dict[str, str], users: int, path: Path) -> tuple[list[dict[str, str]], datetime]:
    """Our 26 feature values of the first ``users`` users at one instant, as NDJSON rows for Feast."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("FS_")})
    from feature_store.domain.catalog import Instant, get_feature_set
    from feature_store.domain.synthetic import user_id
    from feature_store.wiring import services

    fs = get_feature_set(FEATURE_SET, 1)
    source = services().source
    at = datetime.now(UTC).replace(microsecond=0)
    instant = Instant(at.timestamp())
    stamp = at.isoformat().replace("+00:00", "Z")
    with path.open("w") as out:
        for first in range(0, users, 2000):
            states = source.states_for([user_id(n) for n in range(first, min(first + 2000, users))])
            for uid in sorted(states):
                row: dict[str, Any] = {"user_id": uid, "event_timestamp": stamp}
                for values in fs.evaluate(states[uid], instant).values():
                    row.update(values)
                out.write(json.dumps(row) + "\n")
    return [{"name": f.name, "dtype": f.dtype} for f in fs.features], at


def feast(repo: Path, *argv: str) -> float:
    """Run the feast command line in the repository; its wall time in seconds."""
    started = time.perf_counter()
    proc = subprocess.run([str(FEAST / "feast"), *argv], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"feast {' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def ours_materialize(env: dict[str, str], users: int) -> dict[str, Any]:
    """A full refresh of the first ``users`` users into the private Redis, as bench/refresh.py runs one."""
    proc = subprocess.run([sys.executable, str(BENCH / "refresh.py"), "--child", str(users)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"our refresh failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def redis_keys(port: int) -> tuple[int, int]:
    """Our keys (the prefix bench:) and the others, which are Feast's (binary entity keys)."""
    import redis

    client = redis.Redis(port=port)
    ours = sum(1 for _ in client.scan_iter("bench:*", count=5000))
    return ours, int(client.dbsize()) - ours


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="fs_bench")
    parser.add_argument("--seed-users", type=int, default=1_000_000, help="users to seed when the database has none")
    parser.add_argument("--users", type=int, default=100_000, help="users materialized by both and read at random")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument("--concurrency", default="1,10,50", help="levels of the single reads and the floor")
    parser.add_argument("--batch-concurrency", default="1", help="levels of the batches of 100")
    parser.add_argument("--workers", type=int, default=2, help="processes of every server, Feast's included")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads of our functions")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make wrk does it)")
    subprocess.run(["bash", str(BENCH / "feast" / "install.sh")], check=True)
    version = subprocess.run([str(FEAST / "pip"), "show", "feast"], capture_output=True, text=True,
                             check=True).stdout.split("Version: ")[1].split()[0]
    levels = [int(c) for c in args.concurrency.split(",")]
    batch_levels = [int(c) for c in args.batch_concurrency.split(",")]

    redis_port = private_port()
    redis_proc = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
    procs = [redis_proc]
    work = Path(tempfile.mkdtemp(prefix="fs-feast-", dir=ROOT / ".local"))
    try:
        wait_port(redis_port, "redis-server", redis_proc)
        args.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {**env_for(args), "FS_REFRESH_WORKERS": "2"}
        seeded = ensure_data(env, args.database, args.seed_users)
        users = min(args.users, seeded)
        rows = describe(env, args.database)
        load_before = os.getloadavg()

        ours = ours_materialize(env, users)
        print(f"  ours: full refresh of {users:,} users in {ours['wall_s']} s", file=sys.stderr, flush=True)
        features, at = export(env, users, work / "features.ndjson")
        spec = {"repo": str(work / "repo"), "export": str(work / "features.ndjson"), "features": features,
                "redis_port": redis_port}
        (work / "spec.json").write_text(json.dumps(spec))
        subprocess.run([str(FEAST / "python"), str(BENCH / "feast" / "feature_repo.py"), str(work / "spec.json")],
                       check=True, stdout=subprocess.DEVNULL)
        feast(work / "repo", "apply")
        feast_wall = feast(work / "repo", "materialize", (at - timedelta(days=1)).isoformat(),
                           (at + timedelta(seconds=1)).isoformat())
        print(f"  feast: materialize of {users:,} users in {feast_wall:.1f} s", file=sys.stderr, flush=True)

        feast_port = private_port()
        feast_proc = subprocess.Popen([str(FEAST / "feast"), "serve", "--host", "127.0.0.1", "--port", str(feast_port),
                                       "--workers", str(args.workers), "--no-access-log"], cwd=work / "repo",
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(feast_proc)
        wait_port(feast_port, "feast serve", feast_proc)
        feast_url = f"http://127.0.0.1:{feast_port}"
        noop, noop_url = serve("noop", ROOT / "bench" / "noop" / "main.py", env)
        single, single_url = serve("read_features", ROOT / "functions" / "read_features" / "main.py", env)
        batch, batch_url = serve("read_features_batch", ROOT / "functions" / "read_features_batch" / "main.py", env)
        procs += [noop, single, batch]

        ids = {"IDS_FROM": "0", "IDS_SPAN": str(users)}
        ours_ids = {**ids, "API_KEY": bench_client(env)}  # the read functions need credentials (docs/security.md)
        refs = {"FEAST_FEATURES": ",".join(f"{FEATURE_SET}:{f['name']}" for f in features)}
        plan = [(c, "single", [("floor", noop_url, {}), ("hit", single_url, ours_ids),
                               ("feast", feast_url, {**ids, **refs})]) for c in levels]
        plan += [(c, "batch of 100", [("batch_hit", batch_url, {**ours_ids, "BATCH": "100"}),
                                      ("feast_batch", feast_url, {**ids, **refs, "BATCH": "100"})])
                 for c in batch_levels]
        results: list[dict[str, Any]] = []
        for c, kind, runs in plan:
            for scenario, url, extra in runs:
                r = wrk(url, scenario, c, args.duration, extra)
                results.append({"kind": kind, "scenario": scenario, "concurrency": c, **r})
                print(f"  measured {scenario} at concurrency {c}", file=sys.stderr, flush=True)
        report(args, version, rows, users, ours, feast_wall, results, (load_before, os.getloadavg()),
               *redis_keys(redis_port))
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(args: argparse.Namespace, version: str, rows: dict[str, int], users: int, ours: dict[str, Any],
           feast_wall: float, results: list[dict[str, Any]], load: tuple[tuple[float, ...], tuple[float, ...]],
           our_keys: int, feast_keys: int) -> None:
    print(f"\nFeast {version} against ours, one run: {size_line(args.database, rows)}; {users:,} users materialized "
          f"by both ({our_keys:,} keys of ours, {feast_keys:,} of Feast's, in one private Redis), ids at random among "
          f"them; {args.workers} server processes each (ours: gunicorn gthread, THREADS={args.threads}; Feast: feast "
          f"serve --workers {args.workers}); wrk on the same {os.cpu_count()} cores, {args.duration} s per run; "
          f"load average {load[0][0]:.2f} before, {load[1][0]:.2f} after")
    print("  2xx/s counts 2xx answers only; non-2xx and socket errors apart; wrong: our vectors not served from "
          "the cache, Feast's values not PRESENT; degr.: our answers served degraded (Redis skipped, from PostgreSQL)")
    by = {(r["scenario"], r["concurrency"]): r for r in results}

    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return f"{'':>30}"
        extra = f" [{r['non_2xx']} non-2xx, {r['errors_socket']} sock, {r['wrong']} wrong, {r['degraded']} degr.]"
        return f"{r['rps']:>7,.0f}/s p95 {r['p95_ms']:>6.2f} ms{extra}"

    print(f"  {'scenario':<28}{'Feast':<68}{'ours':<68}{'floor (no-op)':<30}{'ours/Feast':>10}")
    for kind, ours_name, feast_name in (("single", "hit", "feast"), ("batch of 100", "batch_hit", "feast_batch")):
        for (scenario, c), r in by.items():
            if scenario != ours_name:
                continue
            f = by.get((feast_name, c))
            floor = by.get(("floor", c)) if kind == "single" else None
            ratio = f"{r['rps'] / f['rps']:.1f}x" if f and f["rps"] else "-"
            print(f"  {'cached ' + kind + ', c=' + str(c):<28}{cell(f):<68}{cell(r):<68}"
                  f"{(cell(floor) if floor else '-'):<30}{ratio:>10}")
    print(f"  {'materialize ' + format(users, ',') + ' users':<28}{feast_wall:>7.1f} s{'':<59}{ours['wall_s']:>7.1f} s"
          f" (peak RSS {ours['peak_rss_mb']} MB){'':<26}{'':<30}{feast_wall / ours['wall_s']:>9.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"feast": version, "users": users, "rows": rows, "ours_materialize": ours,
                                         "feast_materialize_s": feast_wall, "results": results, "load": load},
                                        indent=2))


if __name__ == "__main__":
    sys.exit(main())
