"""Change events as the local change source publishes them: Debezium's JSON envelope, built by the relay's own
encoder (emulators/debezium_wire.py, which follows Debezium's PostgreSQL connector documentation), pushed
the way a Pub/Sub push subscription delivers them."""

from __future__ import annotations

import base64
import sys
from typing import Any

from conftest import ROOT, admin_connection

sys.path.insert(0, str(ROOT / "emulators"))

from debezium_wire import debezium_event

TOPIC = "//pubsub.googleapis.com/projects/local-project/topics/cdc-changes"


def columns(database: str, table: str) -> dict[str, tuple[str, bool]]:
    conn = admin_connection(database)
    try:
        rows = conn.run("SELECT attname::text, format_type(atttypid, atttypmod), NOT attnotnull FROM pg_attribute "
                        "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                        t=f"public.{table}")
    finally:
        conn.close()
    return {str(n): (str(t), bool(o)) for n, t, o in rows}


def event(database: str, table: str, op: str, lsn: int, before: dict[str, Any] | None = None,
          after: dict[str, Any] | None = None, ts_ms: int = 1_793_000_000_000) -> bytes:
    return debezium_event(server="fs", db=database, table=table, op=op, lsn=lsn, commit_lsn=lsn + 8, tx_id=lsn // 16,
                          ts_ms=ts_ms, before=before, after=after, columns=columns(database, table))


def push(client: Any, data: bytes, message_id: str) -> Any:
    body = {"message": {"data": base64.b64encode(data).decode(), "messageId": message_id,
                        "publishTime": "2026-11-02T10:00:00Z", "attributes": {}},
            "subscription": "projects/local-project/subscriptions/cdc-changes-replicate"}
    return client.post("/", json=body, headers={"ce-id": message_id, "ce-specversion": "1.0",
                                               "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
                                               "ce-source": TOPIC})
