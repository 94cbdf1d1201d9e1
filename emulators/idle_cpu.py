"""What the `make up` stack costs while nobody uses it: ``python emulators/idle_cpu.py [SECONDS]``.

Sums the CPU time (user + system, from /proc) over SECONDS (default 60) of every process `make up`
started (each in its own process group: the functions' gunicorn masters and workers, the relay,
the BigQuery emulator, a private PostgreSQL or Redis if it started one) and of the PostgreSQL
backends serving the stack's database (the relay's polling costs the server too), and prints the
total as a share of one core, per part. Reads .local/stack.json; run it while the stack is idle.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pg8000.native

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def group_members(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def backends(env: dict[str, str]) -> list[int]:
    conn = pg8000.native.Connection(user=env.get("FS_POSTGRES_USER", "postgres"), host=env["FS_POSTGRES_HOST"],
                                    port=int(env["FS_POSTGRES_PORT"]), database="postgres")
    try:
        return [int(r[0]) for r in conn.run("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> "
                                            "pg_backend_pid()", d=env["FS_POSTGRES_DATABASE"])]
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    seconds = float(argv[1]) if len(argv) > 1 else 60.0
    state = json.loads((ROOT / ".local" / "stack.json").read_text())
    parts = {str(item["name"]): group_members(int(item["pid"])) for item in state["started"]}
    parts["postgres backends of the stack's database"] = backends(state["env"])
    before = {name: sum(cpu_ticks(p) for p in pids) for name, pids in parts.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    total = 0.0
    for name, pids in parts.items():
        share = (sum(cpu_ticks(p) for p in pids) - before[name]) / TICK / elapsed
        total += share
        print(f"{name:<44} {len(pids):>3} processes  {100 * share:6.2f}% of a core")
    print(f"{'the idle stack':<44} {sum(len(p) for p in parts.values()):>3} processes  {100 * total:6.2f}% of a core "
          f"over {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
