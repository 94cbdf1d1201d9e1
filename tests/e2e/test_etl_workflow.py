"""workflows/etl.yaml end to end: workflows-emulator -> run_etl and refresh_cache under functions-framework
-> PostgreSQL, the BigQuery emulator and Redis.

Both functions are the real ones (functions/run_etl and functions/refresh_cache), served as processes on
free loopback ports and stopped by pid; the workflow runs as ``workflows-emulator --source
workflows/etl.yaml run --data args.json`` from .local/venvs/wf. A small proxy in front of run_etl
answers 503 to chosen calls, to show that the workflow retries what is transient.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import REDIS_URL, ROOT, Databases, admin_connection, base_env, drop_prefix
from feature_store.cli.generate import seed
from feature_store.domain.catalog import get_feature_set
from feature_store.settings import Settings
from feature_store.stores.bigquery_mirror import MIRRORED
from feature_store.stores.bigquery_offline import OfflineStore
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.redis_online import KeyLayout

pytest_plugins = ["bq_fixture"]
pytestmark = [pytest.mark.bigquery, pytest.mark.workflows, pytest.mark.slow]

BIN = Path(sys.executable).parent
EMULATOR = ROOT / ".local" / "venvs" / "wf" / "bin" / "workflows-emulator"
USERS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"a function exited at start-up; see {log}:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on {port} after 60 s; see {log}")


class FlakyProxy:
    """Forwards POSTs to ``target``, answering 503 instead to the calls whose numbers are in ``fail``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.fail: set[int] = set()
        self.calls: list[tuple[str, int]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                number = len(proxy.calls) + 1
                step = json.loads(body or b"{}").get("step", "?")
                if number in proxy.fail:
                    proxy.calls.append((step, 503))
                    self._answer(503, b'{"error": {"code": "dependency_unavailable", "message": "test outage"}}')
                    return
                request = urllib.request.Request(proxy.target, data=body, method="POST",
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=600) as answer:
                        status, data = answer.status, answer.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                proxy.calls.append((step, status))
                self._answer(status, data)

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, bigquery_emulator: Any) -> Iterator[dict[str, Any]]:
    if not EMULATOR.exists():
        pytest.fail("workflows-emulator is not installed: run `make install` (emulators/install.sh)")
    dbs = Databases()
    database = dbs.create()
    pool = PostgresPool(Settings.from_env(base_env(database)).postgres, bulk=True)
    with pool.connection() as conn:
        seed(conn, USERS, 5, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2), workers=1, reset=False)
    pool.close()
    prefix, dataset = "wf" + secrets.token_hex(4), f"wf_{secrets.token_hex(4)}"
    env = {**base_env(database, prefix), "FS_BIGQUERY_API_ENDPOINT": bigquery_emulator.api_endpoint,
           "FS_BIGQUERY_PROJECT": bigquery_emulator.project, "FS_BIGQUERY_DATASET": dataset}
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FS_")} | env
    logs = tmp_path_factory.mktemp("etl_workflow")
    procs, urls = [], {}
    try:
        for name in ("run_etl", "refresh_cache"):
            port, log = free_port(), logs / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [str(BIN / "functions-framework"), "--target", name, "--source",
                     str(ROOT / "functions" / name / "main.py"), "--host", "127.0.0.1", "--port", str(port)],
                    env=child_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            wait_listening(port, proc, log)
            urls[name] = f"http://127.0.0.1:{port}/"
        yield {"database": database, "dataset": dataset, "prefix": prefix, "urls": urls, "logs": logs,
               "offline": OfflineStore(bigquery_emulator.client(), dataset, api_timeout_s=30)}
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        bigquery_emulator.client().delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)
        dbs.drop_all()


def run_workflow(stack: dict[str, Any], **args: Any) -> subprocess.CompletedProcess[str]:
    data = {"run_etl_url": stack["urls"]["run_etl"], "refresh_cache_url": stack["urls"]["refresh_cache"],
            "auth": "none", **args}
    path = stack["logs"] / f"args-{secrets.token_hex(3)}.json"
    path.write_text(json.dumps(data))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(stack["logs"])}
    return subprocess.run([str(EMULATOR), "--source", str(ROOT / "workflows" / "etl.yaml"), "--loglevel", "WARNING",
                           "run", "--data", str(path)], env=env, cwd=stack["logs"], capture_output=True, text=True,
                          timeout=600, check=False)


def output(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, f"the workflow failed:\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_mirror_equals_source(stack: dict[str, Any]) -> None:
    conn = admin_connection(stack["database"])
    try:
        for table in MIRRORED:
            keys = ", ".join(table.key)
            source = {tuple(r) for r in conn.run(f"SELECT {keys} FROM {table.name}")}
            mirror = stack["offline"].run(f"SELECT {keys} FROM {stack['offline'].table(table.name)}")
            assert len(mirror) == len(source), f"{table.name}: {len(mirror)} mirrored rows for {len(source)}"
            assert {tuple(r.values()) for r in mirror} == source, table.name
    finally:
        conn.close()


def test_a_run_exports_snapshots_materializes_and_records_itself(stack: dict[str, Any]) -> None:
    done = run_workflow(stack, run_id="wf-run-1")

    result = output(done)
    assert result["run_id"] == "wf-run-1" and result["status"] == "succeeded"
    steps = result["steps"]
    assert steps["export"]["done"] is True and steps["export"]["materialize"] == {"mode": "full"}
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert steps["snapshot"]["date"] == yesterday and steps["snapshot"]["rows"] > 0
    assert steps["materialize"]["mode"] == "full" and steps["materialize"]["last"]["done"] is True
    assert_mirror_equals_source(stack)
    offline: OfflineStore = stack["offline"]
    record = offline.run_record("wf-run-1")
    assert record is not None and record["status"] == "succeeded" and record["finished_at"] is not None
    assert record["rows_loaded"] == steps["export"]["rows"] and record["error"] is None
    assert set(record["steps"]) == {"export", "snapshot", "materialize"}
    snapshot = offline.run(f"SELECT COUNT(*) AS n FROM {offline.table('feature_snapshots')} "
                           f"WHERE snapshot_date = '{yesterday}'")
    assert snapshot[0]["n"] == steps["snapshot"]["rows"]
    # refresh_cache wrote every user's state to Redis under this test's prefix.
    assert get_feature_set("credit_decision", steps["materialize"]["last"]["version"]).name == "credit_decision"
    layout = KeyLayout(stack["prefix"])
    client = redis.Redis.from_url(REDIS_URL)
    assert client.exists(*[layout.user(f"u{n:09d}") for n in range(USERS)]) == USERS


def test_a_failed_step_fails_the_run_by_name_and_a_rerun_of_the_same_run_completes(stack: dict[str, Any]) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    conn = admin_connection(stack["database"])
    conn.run("INSERT INTO transactions VALUES ('t-wf-1', 'u000000001', 20.00, 'USD', 'm00001', 'books', 'completed', "
             "now())")
    conn.close()

    failed = run_workflow(stack, run_id="wf-run-2", date=tomorrow)

    assert failed.returncode != 0
    assert "etl_failed" in failed.stderr and "failed at step snapshot" in failed.stderr
    assert "wf-run-2" in failed.stderr and "invalid_parameter" in failed.stderr
    record = stack["offline"].run_record("wf-run-2")
    assert record is not None and record["status"] == "failed"
    assert "step snapshot" in record["error"] and "has not begun yet" in record["error"]
    assert record["steps"]["export"]["done"] is True  # the export finished before the failure

    again = output(run_workflow(stack, run_id="wf-run-2"))

    assert again["status"] == "succeeded"
    assert again["steps"]["materialize"]["mode"] == "incremental"  # wf-run-1 succeeded before it
    day = again["steps"]["snapshot"]["date"]
    rebuilt = stack["offline"].run(f"SELECT COUNT(*) AS n, COUNT(DISTINCT user_id) AS users, "
                                   f"ARRAY_AGG(DISTINCT etl_run_id) AS runs FROM "
                                   f"{stack['offline'].table('feature_snapshots')} WHERE snapshot_date = '{day}'")[0]
    assert rebuilt["n"] == rebuilt["users"] == again["steps"]["snapshot"]["rows"]  # the day replaced, not added to
    assert rebuilt["runs"] == ["wf-run-2"]
    assert stack["offline"].run_record("wf-run-2")["status"] == "succeeded"  # type: ignore[index]
    assert_mirror_equals_source(stack)  # t-wf-1 once, nothing twice


def test_transient_failures_are_retried_and_permanent_ones_are_not(stack: dict[str, Any]) -> None:
    proxy = FlakyProxy(stack["urls"]["run_etl"])
    proxy.fail = {1, 2, 4}  # the export's first two attempts, the snapshot's first
    flaky = {**stack, "urls": {**stack["urls"], "run_etl": proxy.url}}
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    try:
        result = output(run_workflow(flaky, run_id="wf-run-3"))
        retried = list(proxy.calls)
        proxy.calls.clear()
        proxy.fail = set()
        refused = run_workflow(flaky, run_id="wf-run-4", date=tomorrow)
    finally:
        proxy.close()

    assert result["status"] == "succeeded"
    assert retried == [("export", 503), ("export", 503), ("export", 200), ("snapshot", 503), ("snapshot", 200),
                       ("record", 200)]
    assert refused.returncode != 0
    assert proxy.calls == [("export", 200), ("snapshot", 400), ("record", 200)]  # a 400 is not retried
