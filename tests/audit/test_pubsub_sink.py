"""The production sink on the wire: google-cloud-pubsub's PublisherClient against a Publish stand-in.

No Pub/Sub emulator exists here; tests/pubsub_standin.py implements google.pubsub.v1.Publisher/Publish
with the library's own messages, so what is checked is exactly what the client sends: the topic, one
message per audit row, its data the row as JSON with the columns and modes of audit_reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from pubsub_standin import PubSubStandIn

from conftest import ROOT
from feature_store.domain.audit import ReadAudit, VectorAudit, vector_digest
from feature_store.errors import AuditUnavailable
from feature_store.settings import Settings
from feature_store.wiring import Services

from .conftest import wait_for

SCHEMA = json.loads((ROOT / "terraform" / "modules" / "bigquery" / "schemas" / "audit_reads.json").read_text())
JSON_TYPES = {"STRING": str, "INTEGER": int, "BOOLEAN": bool, "TIMESTAMP": str}


@pytest.fixture
def services_over(standin: PubSubStandIn) -> Iterator[Services]:
    svc = Services(Settings.from_env({
        "FS_POSTGRES_HOST": "127.0.0.1", "FS_AUDIT_SINK": "pubsub", "FS_PUBSUB_PROJECT": "audit-project",
        "FS_PUBSUB_EMULATOR_HOST": standin.address, "FS_AUDIT_MAX_UNSENT_AGE_S": "0.5",
        "FS_AUDIT_RETRY_BACKOFF_S": "0.05", "FS_AUDIT_PUBLISH_TIMEOUT_S": "1", "FS_AUDIT_LINGER_S": "0.001"}))
    yield svc
    recorder = svc.audit
    assert recorder is not None
    recorder.close()
    svc.close()


def read(n: int, users: int) -> ReadAudit:
    return ReadAudit(f"01HF7YAT0060RK4CSM6MV{n:05d}", "lender-checkout", "batch", "grpc", "credit_decision", 2,
                     ("orders_1h",), 1_764_680_401.5, 1_764_680_401.6,
                     tuple(VectorAudit(f"u{i}", "ok", False, "0/16B3748", "2025-12-02T13:00:00.123+00:00",
                                       1_764_680_400.123, features={"velocity": {"orders_1h": i}})
                           for i in range(users)), purpose="credit_decision")


def test_each_row_is_one_message_of_the_audit_topic_its_data_the_row_as_json(
        standin: PubSubStandIn, services_over: Services) -> None:
    recorder = services_over.audit
    assert recorder is not None
    for n in range(5):
        recorder.record(read(n, users=3))

    wait_for(lambda: len(standin.messages) == 15)

    assert {topic for topic, _, _ in standin.messages} == {"projects/audit-project/topics/audit-reads"}
    assert standin.requests < 15, "the client batches messages into few Publish calls"
    rows = standin.rows()
    assert sorted((r["request_id"], r["position"]) for r in rows) == sorted(
        (f"01HF7YAT0060RK4CSM6MV{n:05d}", p) for n in range(5) for p in range(3))
    columns = {c["name"]: c for c in SCHEMA}
    for row in rows:
        assert set(row) == set(columns)
        for name, value in row.items():
            column = columns[name]
            if value is None:
                assert column["mode"] == "NULLABLE", name
            elif column["mode"] == "REPEATED":
                assert all(isinstance(v, JSON_TYPES[column["type"]]) for v in value), name
            else:
                assert isinstance(value, JSON_TYPES[column["type"]]), name
    row = next(r for r in rows if r["position"] == 2)
    assert row["digest"] == vector_digest({"velocity": {"orders_1h": 2}}, "0/16B3748", "2025-12-02T13:00:00.123+00:00")


def test_an_outage_refuses_reads_past_the_bound_keeps_every_row_and_delivers_each_once_after(
        standin: PubSubStandIn, services_over: Services) -> None:
    recorder = services_over.audit
    assert recorder is not None
    standin.fail = True
    for n in range(4):
        recorder.record(read(n, users=2))

    time.sleep(0.7)
    with pytest.raises(AuditUnavailable):
        recorder.check()
    assert standin.messages == [] and recorder.pending_rows == 8 and standin.requests > 0

    standin.fail = False
    wait_for(lambda: recorder.pending_rows == 0)
    recorder.check()
    keys = [(r["request_id"], r["position"]) for r in standin.rows()]
    assert len(keys) == len(set(keys)) == 8

