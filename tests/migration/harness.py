"""Processes of the migration's end-to-end tests, each started here and stopped by its pid: functions under
functions-framework, the change relays (emulators/cdc_relay.py from the source, emulators/changefeed_relay.py
from the target), workflows-emulator runs, and the application's writes."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, admin_connection

BIN = Path(sys.executable).parent
EMULATOR = ROOT / ".local" / "venvs" / "wf" / "bin" / "workflows-emulator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {seconds:.0f}s")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Process:
    """A child process in its own session, stopped (or killed) by its pid."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class Stack:
    """Functions and relays over one source/target pair; everything it started is stopped by ``close``."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FS_") and k != "PUBSUB_EMULATOR_HOST"}
        self.env.update(env)
        self.logs = logs
        self.processes: dict[str, Process] = {}
        self.ports: dict[str, int] = {}
        self.slots: list[tuple[str, str]] = []  # (database, slot)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/"

    def function(self, name: str, **extra: str) -> None:
        port = self.ports.setdefault(name, free_port())
        proc = Process([str(BIN / "functions-framework"), "--target", name, "--source",
                        str(ROOT / "functions" / name / "main.py"), "--host", "127.0.0.1", "--port", str(port)],
                       {**self.env, **extra}, self.logs / f"{name}.log")
        self.processes[name] = proc
        wait_until(lambda: listening(port) or proc.proc.poll() is not None, f"{name} listening")
        if proc.proc.poll() is not None:
            pytest.fail(f"{name} exited at start-up: {(self.logs / f'{name}.log').read_text()[-2000:]}")

    def relay(self, name: str, database: str, slot: str, targets: list[str], changefeed: bool = False,
              cursor: str | None = None) -> None:
        script = "changefeed_relay.py" if changefeed else "cdc_relay.py"
        argv = [str(BIN / "python"), str(ROOT / "emulators" / script), "--slot", slot]
        argv += [a for t in targets for a in ("--target-url", self.url(t))]
        if cursor:
            argv += ["--cursor", cursor]
        env = {**self.env, "FS_POSTGRES_DATABASE": database, "FS_CDC_POLL_INTERVAL_MS": "20"}
        self.slots.append((database, slot))
        self.processes[name] = Process(argv, env, self.logs / f"{name}.log")

        def consistent() -> bool:
            conn = admin_connection(database)
            try:
                return bool(conn.run("SELECT 1 FROM pg_replication_slots WHERE slot_name = :s "
                                     "AND confirmed_flush_lsn IS NOT NULL", s=slot))
            finally:
                conn.close()

        wait_until(consistent, f"slot {slot} consistent", 120)

    def workflow(self, **args: Any) -> subprocess.CompletedProcess[str]:
        data = {"run_migration_url": self.url("run_migration"), "auth": "none", **args}
        path = self.logs / f"args-{secrets.token_hex(3)}.json"
        path.write_text(json.dumps(data))
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.logs)}
        return subprocess.run([str(EMULATOR), "--source", str(ROOT / "workflows" / "migration.yaml"), "--loglevel",
                               "WARNING", "run", "--data", str(path)], env=env, cwd=self.logs, capture_output=True,
                              text=True, timeout=900, check=False)

    def workflow_in_background(self, **args: Any) -> subprocess.Popen[str]:
        data = {"run_migration_url": self.url("run_migration"), "auth": "none", **args}
        path = self.logs / f"args-{secrets.token_hex(3)}.json"
        path.write_text(json.dumps(data))
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.logs)}
        return subprocess.Popen([str(EMULATOR), "--source", str(ROOT / "workflows" / "migration.yaml"), "--loglevel",
                                 "WARNING", "run", "--data", str(path)], env=env, cwd=self.logs,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def close(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()
        for database, slot in self.slots:
            conn = admin_connection(database)
            try:
                conn.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :s "
                         "AND NOT active", s=slot)
            finally:
                conn.close()


def succeeded(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, f"the workflow failed:\n{done.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    return result


class Writer:
    """The application: commits orders and payments in a loop on a background thread until stopped.

    On the source it runs ``fs-generate live``'s own code (cli/generate.live); on a target (no monthly
    partitions to keep) the same kind of rows as plain statements.
    """

    running: set[Writer] = set()  # stopped after each test by tests/migration/conftest.py, failed or not

    def __init__(self, database: str, source: bool = True, pause_s: float = 0.05) -> None:
        self.database, self.source, self.pause_s = database, source, pause_s
        Writer.running.add(self)
        self.commits = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from conftest import base_env
        from feature_store.cli.generate import live
        from feature_store.settings import Settings
        from feature_store.stores.postgres import PostgresPool

        pool = PostgresPool(Settings.from_env(base_env(self.database)).postgres, bulk=True)
        rng = random.Random(self.database)
        try:
            with pool.connection() as conn:
                while not self._stop.is_set():
                    self.commits += 1
                    if self.source:
                        live(conn, 2, 1, 10_000 + self.commits)
                    else:
                        user = f"u{rng.randrange(200):09d}"
                        conn.run("INSERT INTO transactions VALUES (:t, :u, :a, 'USD', 'm00001', 'books', 'completed', "
                                 "now())", t=f"app-{secrets.token_hex(6)}", u=user, a=rng.randint(1, 500))
                        conn.run("UPDATE users SET income_bracket = :b WHERE user_id = :u",
                                 b=rng.choice(["low", "mid", "high"]), u=user)
                    self._stop.wait(self.pause_s)
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            pool.close()

    def stop(self) -> int:
        Writer.running.discard(self)
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error
        return self.commits
