"""The fault suite's own servers, on private ports, to be broken on purpose and stopped by pid.

- ``PrivatePostgres``: a Debian cluster made with pg_createcluster (wal_level = logical, wal2json
  allowed), stopped, started and dropped with pg_ctlcluster / pg_dropcluster;
- ``PrivateRedis``: a redis-server child that can be killed, hung (SIGSTOP) and resumed;
- ``Child``: any other process of ours (functions-framework under gunicorn, the relay), in its own
  session so that a kill reaches its workers too.

Ports: PostgreSQL 55441, Redis 56391, functions 18101-18109 (never the shared 5432/6379).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pg8000.native
import redis

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_PORT, REDIS_PORT = 55441, 56391
CLUSTER = "fsfaults"


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(condition: object, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not happen within {seconds:.0f}s")


class PrivatePostgres:
    """A throw-away Debian cluster of the newest installed major version."""

    def __init__(self, port: int = PG_PORT, name: str = CLUSTER) -> None:
        self.port, self.name = port, name
        versions = sorted(Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name)) \
            if Path("/usr/lib/postgresql").exists() else []
        if not versions or shutil.which("pg_createcluster") is None:
            raise RuntimeError("the fault suite needs Debian's PostgreSQL (apt-get install postgresql)")
        self.version = versions[-1].name

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *args],
                              check=check, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def create(self, fresh: bool = False) -> None:
        """Create and start the cluster; ``fresh`` leaves Debian's defaults (wal_level = replica, the
        default output plugins) as a new machine has them, else it is ready for CDC."""
        self.drop()
        subprocess.run(["pg_createcluster", self.version, self.name, "--port", str(self.port), "--",
                        "--auth=trust", "--encoding=UTF8"], check=True, stdout=subprocess.DEVNULL)
        conf = Path(f"/etc/postgresql/{self.version}/{self.name}/conf.d/faults.conf")
        conf.write_text("listen_addresses = '127.0.0.1'\nfsync = off\nfull_page_writes = off\n" + (
            "" if fresh else "wal_level = logical\nmax_replication_slots = 10\nmax_connections = 200\n"))
        self.start()
        if fresh:
            return
        sys.path.insert(0, str(ROOT / "emulators"))
        from postgres_setup import allow_wal2json  # output_plugin_libraries, where the server has it

        conn = self.admin()
        try:
            allow_wal2json(conn)
        finally:
            conn.close()

    def start(self) -> None:
        self._ctl("start")
        wait_for(self.ready, "PostgreSQL accepting connections")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def ready(self) -> bool:
        try:
            self.admin().close()
            return True
        except Exception:
            return False

    def admin(self, database: str = "postgres", timeout: float = 10) -> pg8000.native.Connection:
        return pg8000.native.Connection(user="postgres", host="127.0.0.1", port=self.port, database=database,
                                        timeout=timeout)

    def drop(self) -> None:
        if Path(f"/etc/postgresql/{self.version}/{self.name}").exists():
            subprocess.run(["pg_dropcluster", self.version, self.name, "--stop"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def backend_pids(self, application_name: str) -> list[int]:
        conn = self.admin()
        try:
            return [int(r[0]) for r in conn.run("SELECT pid FROM pg_stat_activity WHERE application_name = :a",
                                                a=application_name)]
        finally:
            conn.close()


class PrivateRedis:
    """redis-server on a private port, no persistence: a kill or a restart loses every key."""

    def __init__(self, workdir: Path, port: int = REDIS_PORT) -> None:
        self.port, self.workdir = port, workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("the fault suite needs redis-server (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as out:
            self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(self.workdir)],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: port_open(self.port), "Redis listening")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.kill()


class Child:
    """A process of ours in its own session: ``kill`` reaches every process of the group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path, port: int | None = None) -> None:
        self.name, self.argv, self.env, self.logs, self.port = name, argv, env, logs, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{self.name}.log", "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        if self.port is not None:
            port = self.port
            wait_for(lambda: port_open(port), f"{self.name} listening on {port}")
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def pids(self) -> list[int]:
        """The group's processes (a gunicorn master and its workers), read from /proc."""
        if self.proc is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    if os.getpgid(int(entry.name)) == self.proc.pid:
                        found.append(int(entry.name))
        return found


def function(name: str, port: int, env: dict[str, str], logs: Path) -> Child:
    """One function served as production serves it: functions-framework under gunicorn (WORKERS, THREADS)."""
    source = ROOT / "functions" / name / "main.py"
    kind = "cloudevent" if "cloud_event" in source.read_text() else "http"
    return Child(f"fn-{name}", [str(BIN / "functions-framework"), "--target", name, "--source", str(source),
                                "--signature-type", kind, "--host", "127.0.0.1", "--port", str(port)],
                 env, logs, port)


def relay(target_url: str, env: dict[str, str], logs: Path) -> Child:
    return Child("cdc-relay", [str(BIN / "python"), str(ROOT / "emulators" / "cdc_relay.py"), "--target-url",
                               target_url], env, logs)
