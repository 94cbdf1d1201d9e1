"""Decode benchmark: the read path's decode of a batch of 100 cached states, binary body against JSON list.

    .venv/bin/python bench/decode.py [--database fs_bench] [--batches 20] [--repeat 300]

Reads ``--batches`` batches of 100 random users' states from the database (the point-read path's
SourceStore), encodes each state both ways layout 3 knows - the binary body every state normally
gets, and the JSON list (layout 2's list, what a state the binary body cannot hold gets) - and times
``redis_online.decode`` of each batch of 100 values, ``--repeat`` times in turn, in this one process.
Prints the median and the best per batch of 100 and the mean value size of each form. Figures, never
pass/fail; the machine's load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import orjson
from dataset import describe, ensure_data, size_line

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "emulators"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="fs_bench")
    parser.add_argument("--users", type=int, default=1_000_000, help="users to seed when the database has none")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()

    import stack

    env = {**os.environ, **stack.stack_env(), "FS_POSTGRES_DATABASE": args.database, "FS_LOG_LEVEL": "WARNING"}
    os.environ.update(env)
    users = ensure_data(env, args.database, args.users)
    rows = describe(env, args.database)

    from feature_store.domain.synthetic import user_id
    from feature_store.stores.dialect import WATERMARK_HEX_DIGITS
    from feature_store.stores.redis_online import decode, encode
    from feature_store.wiring import services

    source = services().source
    rng = random.Random(3)
    forms: dict[str, list[list[tuple[str, bytes]]]] = {"binary body": [], "JSON list": []}
    for _ in range(args.batches):
        ids = [user_id(rng.randrange(users)) for _ in range(100)]
        states = list(source.states_for(ids).values())
        forms["binary body"].append([(s.user_id, encode(s)) for s in states])
        forms["JSON list"].append([(s.user_id, f"{s.watermark:0{WATERMARK_HEX_DIGITS}x}".encode()
                                    + orjson.dumps(s.to_compact())) for s in states])
    for binary, listed in zip(forms["binary body"], forms["JSON list"], strict=True):
        for (u, a), (_, b) in zip(binary, listed, strict=True):  # both forms decode to the same state
            if decode(u, a) != decode(u, b):
                raise SystemExit(f"{u}: the two forms decode differently")
    times: dict[str, list[float]] = {name: [] for name in forms}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeat):
        for name, batches in forms.items():  # the two forms in turn: the same conditions for both
            for batch in batches:
                started = time.perf_counter()
                for u, raw in batch:
                    decode(u, raw)
                times[name].append((time.perf_counter() - started) * 1e6 * 100 / len(batch))
    print(f"decode of a batch of 100 cached states: {size_line(args.database, rows)}; {args.batches} batches of "
          f"random users, {args.repeat} rounds, the forms in turn; load average {load_before:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    print(f"  {'form':<14}{'median us':>11}{'best us':>9}{'value bytes (mean)':>20}")
    for name, batches in forms.items():
        sizes = [len(raw) for batch in batches for _, raw in batch]
        print(f"  {name:<14}{statistics.median(times[name]):>11.0f}{min(times[name]):>9.0f}"
              f"{sum(sizes) / len(sizes):>20.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
