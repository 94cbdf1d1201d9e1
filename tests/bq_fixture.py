"""A pytest fixture for the BigQuery emulator: reuse one listening on 9050, else start one privately.

Use it with ``pytest_plugins = ["bq_fixture"]`` in a test module's conftest, or import the fixture.
The emulator runs from .local/venvs/bq (emulators/install.sh); a session that started it stops it
by pid at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "emulators"))

PROJECT = "local-project"


@dataclass(frozen=True)
class BigQueryEmulator:
    api_endpoint: str
    project: str

    def client(self):  # type: ignore[no-untyped-def]
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.api_endpoint))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    if _listening(9050):
        yield BigQueryEmulator("http://127.0.0.1:9050", PROJECT)
        return
    binary = ROOT / ".local" / "venvs" / "bq" / "bin" / "bqemulator"
    if not binary.exists():
        pytest.fail("the BigQuery emulator is not installed: run `make install` (emulators/install.sh)")
    import stack  # emulators/stack.py: the same private HOME recipe `make up` uses

    rest, grpc = _free_port(), _free_port()
    log = tmp_path_factory.mktemp("bq") / "bqemulator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest), "--grpc-host", "127.0.0.1",
             "--grpc-port", str(grpc), "--project", PROJECT],
            stdout=out, stderr=subprocess.STDOUT, env=stack.bigquery_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _listening(rest):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the BigQuery emulator did not start; see {log}")
            time.sleep(0.2)
        yield BigQueryEmulator(f"http://127.0.0.1:{rest}", PROJECT)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
