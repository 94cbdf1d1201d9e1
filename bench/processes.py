"""What the benchmarks start and watch: free loopback ports, children in sessions of their own stopped by pid,
and the CPU a served function's processes used (read from /proc)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_port(port: int, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not listening(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not listen on {port}")
        time.sleep(0.1)


class Child:
    """A process in its own session (its pid leads its process group), its output to ``log``, stopped by pid."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def group_cpu_s(pgid: int | None) -> float:
    """User + system CPU seconds used so far by the live processes of a process group (a server and its workers)."""
    if pgid is None:
        return 0.0
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")
