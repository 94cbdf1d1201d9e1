"""End to end: PostgreSQL commit -> logical decoding -> relay (Pub/Sub push) -> ingest_changes served by
functions-framework -> Redis (what read_features serves) and the BigQuery emulator's changelog.

The relay and the function run as real processes on loopback ports, started and stopped here by pid.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pg8000.native
import pytest
import redis

from conftest import ROOT, Databases, admin_connection, base_env, function_client
from feature_store.stores.bigquery_changelog import BigQueryChangelog
from feature_store.stores.dialect import POSTGRESQL

pytest_plugins = ["bq_fixture"]
pytestmark = [pytest.mark.bigquery, pytest.mark.slow]

BIN = Path(sys.executable).parent
NOW = datetime.now(UTC).replace(microsecond=0)


def free_port() -> int:
    import socket

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


class Process:
    """A child process in its own session, stopped by its pid."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
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
                self.proc.wait(5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, bigquery_emulator: Any) -> Iterator[dict[str, Any]]:
    admin = admin_connection()
    level = admin.run("SELECT current_setting('wal_level')")[0][0]
    admin.close()
    if level != "logical":
        pytest.fail(f"PostgreSQL runs with wal_level = {level}; the CDC path needs logical "
                    "(ALTER SYSTEM SET wal_level = logical + restart; .ci/run and `make up` do it)")
    dbs = Databases()
    database = dbs.create()
    dataset, slot, port = f"e2e_{secrets.token_hex(4)}", f"fs_e2e_{secrets.token_hex(4)}", free_port()
    BigQueryChangelog(bigquery_emulator.client(), dataset, POSTGRESQL, 30).create_tables()
    prefix = "e2e" + secrets.token_hex(3)
    env = {**base_env(database, prefix), "FS_BIGQUERY_API_ENDPOINT": bigquery_emulator.api_endpoint,
           "FS_BIGQUERY_PROJECT": bigquery_emulator.project, "FS_BIGQUERY_DATASET": dataset, "FS_CDC_SLOT": slot,
           "FS_CDC_TARGET_URL": f"http://127.0.0.1:{port}/", "FS_PUBSUB_PROJECT": bigquery_emulator.project}
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FS_") and k != "PUBSUB_EMULATOR_HOST"}
    child_env.update(env)
    logs = tmp_path_factory.mktemp("e2e")
    function = Process([str(BIN / "functions-framework"), "--target", "ingest_changes", "--source",
                        str(ROOT / "functions" / "ingest_changes" / "main.py"), "--signature-type", "cloudevent",
                        "--host", "127.0.0.1", "--port", str(port)], child_env, logs / "function.log")

    def start_relay() -> Process:
        return Process([str(BIN / "python"), str(ROOT / "emulators" / "cdc_relay.py")], child_env, logs / "relay.log")

    state: dict[str, Any] = {"env": env, "database": database, "dataset": dataset, "client": bigquery_emulator.client(),
                             "start_relay": start_relay, "logs": logs}
    try:
        import socket

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, "the ingest function listening")
        state["relay"] = start_relay()
        def slot_exists() -> bool:
            conn = admin_connection(database)
            try:
                # The slot is listed while its creation still waits for older transactions to end;
                # only changes committed after it is consistent (confirmed_flush_lsn set) are decoded.
                return bool(conn.run("SELECT 1 FROM pg_replication_slots WHERE slot_name = :s "
                                     "AND confirmed_flush_lsn IS NOT NULL", s=slot))
            finally:
                conn.close()

        wait_until(slot_exists, "the relay creating its slot", 120)
        yield state
    finally:
        if "relay" in state:
            state["relay"].stop()
        function.stop()
        conn = admin_connection()
        conn.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :s", s=slot)
        conn.close()
        state["client"].delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        dbs.drop_all()
        keys = redis.Redis.from_url(env["FS_REDIS_URL"])
        for key in keys.scan_iter(f"{prefix}:*"):
            keys.delete(key)


@pytest.fixture
def sql(stack: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    conn = pg8000.native.Connection(user="postgres", host=stack["env"]["FS_POSTGRES_HOST"],
                                    port=int(stack["env"]["FS_POSTGRES_PORT"]), database=stack["database"])
    yield conn.run
    conn.close()


def online_matches_source(stack: dict[str, Any], users: list[str]) -> bool:
    """True when every user's Redis entry is the recomputation from PostgreSQL (absent users: tombstones)."""
    from feature_store.stores.redis_online import Tombstone
    from feature_store.wiring import services

    svc = services()
    recomputed = svc.source.states_for(users)
    for user, entry in zip(users, svc.online.get_many(users), strict=True):
        if user not in recomputed:
            if not isinstance(entry, Tombstone):
                return False
        elif entry is None or isinstance(entry, Tombstone) or \
                replace(entry, computed_at=0, watermark=0) != replace(recomputed[user], computed_at=0, watermark=0):
            return False
    return True


def test_commits_reach_redis_read_features_and_bigquery(stack: dict[str, Any], sql: Callable[..., Any],
                                                         use_env: Callable[[dict[str, str]], None]) -> None:
    use_env(stack["env"])
    a, b, gone = (f"u{secrets.token_hex(4)}" for _ in range(3))
    tx = f"t{secrets.token_hex(4)}"
    for uid in (a, b, gone):
        sql("INSERT INTO users (user_id, age, signup_date, verification_status) VALUES (:u, 40, '2024-05-01', "
            "'verified')", u=uid)
    sql("INSERT INTO transactions (transaction_id, user_id, amount, merchant, category, status, created_at) "
        "VALUES (:t, :u, 80.25, 'm1', 'shoes', 'completed', :c)", t=tx, u=a, c=NOW - timedelta(minutes=5))
    sql("INSERT INTO risk_scores (user_id, risk_score, fraud_probability) VALUES (:u, 0.42, 0.01)", u=b)
    sql("UPDATE transactions SET user_id = :b WHERE transaction_id = :t", b=b, t=tx)
    sql("DELETE FROM users WHERE user_id = :u", u=gone)
    wait_until(lambda: online_matches_source(stack, [a, b, gone]), "the online store converging")

    response = function_client("read_features").get(f"/api/v1/features/user/{b}")
    body = response.get_json()
    assert response.status_code == 200 and body["cache_hit"] is True
    assert body["features"]["velocity"]["orders_1h"] == 1 and body["features"]["risk"]["risk_score"] == 0.42
    assert function_client("read_features").get(f"/api/v1/features/user/{gone}").status_code == 404

    client, dataset = stack["client"], stack["dataset"]

    def landed() -> list[tuple[str, str, Decimal]]:
        return [(r["change_op"], r["user_id"], r["amount"]) for r in client.query(
            f"SELECT change_op, user_id, amount FROM `{dataset}.changelog_transactions_dedup` "
            f"WHERE JSON_VALUE(row_key, '$[0]') = '{tx}' ORDER BY lsn").result()]

    def deleted() -> list[str]:
        return [r["change_op"] for r in client.query(f"SELECT change_op FROM `{dataset}.changelog_users_dedup` "
                                                     f"WHERE user_id = '{gone}' ORDER BY lsn").result()]

    # Redis is written first and BigQuery right after (docs/cdc.md): the offline rows may trail by a moment.
    wait_until(lambda: len(landed()) >= 2 and len(deleted()) >= 2, "the changelog rows landing in BigQuery")
    assert landed() == [("insert", a, Decimal("80.25")), ("update", b, Decimal("80.25"))]
    assert deleted() == ["insert", "delete"]


def test_the_relay_resumes_after_a_restart(stack: dict[str, Any], sql: Callable[..., Any],
                                           use_env: Callable[[dict[str, str]], None]) -> None:
    use_env(stack["env"])
    stack["relay"].stop()
    uid = f"u{secrets.token_hex(4)}"
    sql("INSERT INTO users (user_id, age, signup_date) VALUES (:u, 22, '2025-01-01')", u=uid)
    sql("INSERT INTO installment_plans (plan_id, user_id, transaction_id, principal, status, created_at) "
        "VALUES (:p, :u, 'tx', 100, 'active', now())", p=f"p{uid}", u=uid)
    time.sleep(0.5)
    assert not online_matches_source(stack, [uid])  # nobody relays while it is down
    stack["relay"] = stack["start_relay"]()
    wait_until(lambda: online_matches_source(stack, [uid]), "the restarted relay delivering the backlog")
