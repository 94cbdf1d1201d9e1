"""The fault suite's stack, built once per run on private servers (tests/faults/servers.py).

A PostgreSQL cluster and a Redis of its own, a migrated and seeded database, read_features,
read_features_batch and ingest_changes served by functions-framework in production mode (gunicorn,
WORKERS x THREADS), and the CDC relay pushing through a recording proxy to ingest_changes. Every
test module here is marked ``faults`` (registered below): `make test` leaves them out, `make test-faults`
runs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import MODE_PASSTHROUGH, TEST_PEPPER, provision_test_client
from feature_store.settings import Settings
from feature_store.stores.postgres import PostgresPool

from .load import RecordingProxy
from .servers import BIN, ROOT, Child, PrivatePostgres, PrivateRedis, function, relay, wait_for

USERS = 2000
DATABASE = "fs_faults"
SLOT = "fs_faults"
PORTS = {"read_features": 18101, "read_features_batch": 18102, "ingest_changes": 18103, "proxy": 18104}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault suite (tests/faults); make test-faults")


@dataclass
class Stack:
    pg: PrivatePostgres
    redis: PrivateRedis
    env: dict[str, str]
    logs: Path
    functions: dict[str, Child] = field(default_factory=dict)
    relay: Child | None = None
    proxy: RecordingProxy | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{PORTS[name]}"

    def start_relay(self) -> Child:
        self.relay = relay(f"{self.url('proxy')}/", self.env, self.logs).start()
        return self.relay

    def restart_function(self, name: str) -> None:
        self.functions[name].kill()
        self.functions[name].start()

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        for child in self.functions.values():
            child.stop()
        if self.proxy is not None:
            self.proxy.close()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    if shutil.which("wrk") is None:
        pytest.fail("the fault suite drives its load with wrk: make wrk (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="fs-faults-"))
    logs = ROOT / ".local" / "logs" / "faults"
    pg, redis_server = PrivatePostgres(), PrivateRedis(workdir / "redis")
    pg.create()
    redis_server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FS_") or k in MODE_PASSTHROUGH}
    env.update({"FS_POSTGRES_HOST": "127.0.0.1", "FS_POSTGRES_PORT": str(pg.port), "FS_POSTGRES_USER": "postgres",
                "FS_POSTGRES_DATABASE": DATABASE, "FS_REDIS_URL": redis_server.url, "FS_REDIS_KEY_PREFIX": "faults",
                "FS_LOG_LEVEL": "WARNING", "FS_CDC_SLOT": SLOT, "FS_CDC_CHANGELOG_ENABLED": "false",
                "FS_AUTH_KEY_PEPPER": TEST_PEPPER,
                # The audit trail's own outages and restarts are tests/audit's (its sink down, SIGTERM mid-load);
                # here no Pub/Sub or BigQuery stands behind the functions.
                "FS_AUDIT_SINK": "disabled",
                "WORKERS": "2", "THREADS": "4"})
    stack = Stack(pg, redis_server, env, logs)
    try:
        admin = pg.admin()
        admin.run(f'CREATE DATABASE "{DATABASE}"')
        admin.close()
        import subprocess

        python = str(BIN / "python")
        subprocess.run([python, "-m", "feature_store.cli.migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        pool = PostgresPool(Settings.from_env(env).postgres)
        try:
            provision_test_client(pool)  # the load reads as the test suite's client (tests/conftest.py)
        finally:
            pool.close()
        subprocess.run([python, "-m", "feature_store.cli.generate", "seed", "--users", str(USERS), "--seed", "42",
                        "--workers", "1"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in ("read_features", "read_features_batch"):
            stack.functions[name] = function(name, PORTS[name], env, logs).start()
        # The ingest instance: one worker, threads enough for the relay's concurrent pushes.
        stack.functions["ingest_changes"] = function("ingest_changes", PORTS["ingest_changes"],
                                                     {**env, "WORKERS": "1", "THREADS": "16"}, logs).start()
        stack.proxy = RecordingProxy(PORTS["proxy"], PORTS["ingest_changes"])
        stack.start_relay()

        def slot_exists() -> bool:
            conn = pg.admin()
            try:
                return bool(conn.run("SELECT 1 FROM pg_replication_slots WHERE slot_name = :s", s=SLOT))
            finally:
                conn.close()

        wait_for(slot_exists, "the relay creating its slot", 60)
        yield stack
    finally:
        stack.stop()
        redis_server.stop()
        pg.drop()
        shutil.rmtree(workdir, ignore_errors=True)
