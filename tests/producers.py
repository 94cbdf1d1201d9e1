"""Change-stream messages built by hand from each producer's documentation, independently of our
relay (emulators/debezium_wire.py) and of the parser under test (domain/changes.py).

Debezium 2.x, PostgreSQL connector, JSON converter (``schemas.enable`` on or off):
- change event envelope and ``source`` block:
  https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-events
- value encodings (NUMERIC ``decimal.handling.mode`` precise/string/double, DATE days since the
  epoch, TIMESTAMPTZ ``io.debezium.time.ZonedTimestamp`` ISO text, ``infinity``/``-infinity`` included):
  https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-data-types
- heartbeat (``heartbeat.interval.ms``): value ``{"ts_ms": ...}`` with schema
  ``io.debezium.connector.common.Heartbeat`` (Debezium's SchemaFactory.heartbeatValueSchema);
- transaction metadata (``provide.transaction.metadata``), BEGIN/END records and the envelope's
  ``transaction`` block: https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-transaction-metadata

CockroachDB changefeeds into the Google Cloud Pub/Sub sink:
- the Pub/Sub message ``{"Key": [...], "Value": {...}, "Topic": ...}`` (lowercase fields before
  v23.2): https://www.cockroachlabs.com/docs/v25.1/changefeed-sinks#pub-sub-sink-messages
- the wrapped and bare envelopes, ``diff``, ``updated``, ``mvcc_timestamp``, resolved messages:
  https://www.cockroachlabs.com/docs/stable/changefeed-messages
- DECIMAL as a JSON number, DATE and TIMESTAMPTZ as ISO text (the examples on those pages).

Pub/Sub push delivery (https://cloud.google.com/pubsub/docs/push): the wrapped push body; the
CloudEvent shapes (binary, structured) are made with the cloudevents SDK, as Eventarc sends them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

# Column types of sql/postgres/0001_core_tables.sql: (SQL type, NUMERIC scale).
PG_TYPES: Mapping[str, Mapping[str, tuple[str, int]]] = {
    "users": {"user_id": ("varchar", 0), "age": ("int4", 0), "location_country": ("varchar", 0),
              "signup_date": ("date", 0), "verification_status": ("varchar", 0), "income_bracket": ("varchar", 0),
              "created_at": ("timestamptz", 0), "updated_at": ("timestamptz", 0)},
    "transactions": {"transaction_id": ("varchar", 0), "user_id": ("varchar", 0), "amount": ("numeric", 2),
                     "currency": ("varchar", 0), "merchant": ("varchar", 0), "category": ("varchar", 0),
                     "status": ("varchar", 0), "created_at": ("timestamptz", 0)},
    "risk_scores": {"user_id": ("varchar", 0), "risk_score": ("numeric", 3), "fraud_probability": ("numeric", 3),
                    "payment_delays": ("int4", 0), "device_trust_score": ("numeric", 3),
                    "credit_utilization": ("numeric", 3), "calculated_at": ("timestamptz", 0)},
    "installment_plans": {"plan_id": ("varchar", 0), "user_id": ("varchar", 0), "transaction_id": ("varchar", 0),
                          "principal": ("numeric", 2), "n_installments": ("int4", 0), "status": ("varchar", 0),
                          "created_at": ("timestamptz", 0), "updated_at": ("timestamptz", 0)},
    "installments": {"plan_id": ("varchar", 0), "seq": ("int4", 0), "user_id": ("varchar", 0),
                     "due_date": ("date", 0), "amount": ("numeric", 2), "paid_at": ("timestamptz", 0)},
}
TOPIC = "//pubsub.googleapis.com/projects/local-project/topics/cdc-changes"
MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
EPOCH = date(1970, 1, 1)


# --- Debezium ------------------------------------------------------------------------------------

def zoned(t: datetime | str) -> str:
    """io.debezium.time.ZonedTimestamp: ISO-8601 with the offset, UTC written as Z (or the text infinity)."""
    return t if isinstance(t, str) else t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def precise(value: Decimal, scale: int) -> str:
    """decimal.handling.mode=precise: the unscaled value, big-endian two's complement, base64."""
    unscaled = int(value.scaleb(scale))
    return base64.b64encode(unscaled.to_bytes(unscaled.bit_length() // 8 + 1, "big", signed=True)).decode()


def debezium_value(table: str, column: str, value: Any, decimals: str = "precise") -> Any:
    if value is None:
        return None
    kind, scale = PG_TYPES[table][column]
    if kind == "numeric":
        return {"precise": precise(value, scale), "string": str(value), "double": float(value)}[decimals]
    if kind == "date":
        return (value - EPOCH).days if isinstance(value, date) else value
    if kind == "timestamptz":
        return zoned(value)
    return value


def _field_schema(table: str, column: str, decimals: str) -> dict[str, Any]:
    kind, scale = PG_TYPES[table][column]
    schema: dict[str, Any] = {"type": "string", "optional": True, "field": column}
    if kind == "int4":
        schema["type"] = "int32"
    elif kind == "date":
        schema.update(type="int32", name="io.debezium.time.Date", version=1)
    elif kind == "timestamptz":
        schema.update(name="io.debezium.time.ZonedTimestamp", version=1)
    elif kind == "numeric" and decimals == "precise":
        schema.update(type="bytes", name="org.apache.kafka.connect.data.Decimal", version=1,
                      parameters={"scale": str(scale), "connect.decimal.precision": "12"})
    elif kind == "numeric" and decimals == "double":
        schema["type"] = "double"
    return schema


def debezium_change(table: str, op: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, *,
                    lsn: int, tx_id: int = 771, ts_ms: int = 1_793_000_000_000, with_schema: bool = False,
                    decimals: str = "precise", transaction: Mapping[str, Any] | None = None) -> bytes:
    """One Debezium change event of ``table`` (row values as Python values, encoded here)."""
    def image(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if row is None else {c: debezium_value(table, c, v, decimals) for c, v in row.items()}

    payload = {
        "before": image(before), "after": image(after),
        "source": {"version": "2.7.3.Final", "connector": "postgresql", "name": "fs", "ts_ms": ts_ms,
                   "snapshot": "false", "db": "feature_store", "sequence": json.dumps([str(lsn - 8), str(lsn)]),
                   "schema": "public", "table": table, "txId": tx_id, "lsn": lsn, "xmin": None},
        "op": op, "ts_ms": ts_ms + 12, "transaction": dict(transaction) if transaction else None,
    }
    if not with_schema:
        return json.dumps(payload).encode()
    columns = [_field_schema(table, c, decimals) for c in PG_TYPES[table]]
    schema = {"type": "struct", "optional": False, "name": f"fs.public.{table}.Envelope", "version": 1, "fields": [
        {"type": "struct", "fields": columns, "optional": True, "name": f"fs.public.{table}.Value", "field": "before"},
        {"type": "struct", "fields": columns, "optional": True, "name": f"fs.public.{table}.Value", "field": "after"},
        {"type": "struct", "optional": False, "name": "io.debezium.connector.postgresql.Source", "field": "source",
         "fields": [{"type": "string", "optional": False, "field": "version"},
                    {"type": "int64", "optional": False, "field": "ts_ms"},
                    {"type": "string", "optional": False, "field": "table"},
                    {"type": "int64", "optional": True, "field": "txId"},
                    {"type": "int64", "optional": True, "field": "lsn"}]},
        {"type": "string", "optional": False, "field": "op"},
        {"type": "int64", "optional": True, "field": "ts_ms"},
        {"type": "struct", "optional": True, "name": "event.block", "version": 1, "field": "transaction",
         "fields": [{"type": "string", "optional": False, "field": "id"},
                    {"type": "int64", "optional": False, "field": "total_order"},
                    {"type": "int64", "optional": False, "field": "data_collection_order"}]},
    ]}
    return json.dumps({"schema": schema, "payload": payload}).encode()


def debezium_heartbeat(ts_ms: int, with_schema: bool = False) -> bytes:
    """A heartbeat record's value (heartbeat.interval.ms)."""
    if not with_schema:
        return json.dumps({"ts_ms": ts_ms}).encode()
    schema = {"type": "struct", "optional": False, "name": "io.debezium.connector.common.Heartbeat", "version": 1,
              "fields": [{"type": "int64", "optional": False, "field": "ts_ms"}]}
    return json.dumps({"schema": schema, "payload": {"ts_ms": ts_ms}}).encode()


def debezium_logical_message(ts_ms: int, lsn: int) -> bytes:
    """A logical decoding message event (op m), what heartbeat.action.query with pg_logical_emit_message gives."""
    return json.dumps({"op": "m", "ts_ms": ts_ms,
                       "source": {"version": "2.7.3.Final", "connector": "postgresql", "name": "fs", "ts_ms": ts_ms,
                                  "snapshot": "false", "db": "feature_store", "schema": "", "table": "",
                                  "txId": None, "lsn": lsn, "xmin": None},
                       "message": {"prefix": "heartbeat", "content": base64.b64encode(b"1").decode()}}).encode()


def debezium_transaction(status: str, tx_id: str, ts_ms: int, counts: Mapping[str, int] | None = None,
                         with_schema: bool = False) -> bytes:
    """A BEGIN or END record of provide.transaction.metadata (END carries the event counts)."""
    payload = {"status": status, "id": tx_id,
               "event_count": sum(counts.values()) if counts else None,
               "data_collections": [{"data_collection": f"public.{t}", "event_count": n}
                                    for t, n in counts.items()] if counts else None,
               "ts_ms": ts_ms}
    if not with_schema:
        return json.dumps(payload).encode()
    schema = {"type": "struct", "optional": False, "name": "io.debezium.connector.common.TransactionMetadataValue",
              "version": 1, "fields": [
                  {"type": "string", "optional": False, "field": "status"},
                  {"type": "string", "optional": False, "field": "id"},
                  {"type": "int64", "optional": True, "field": "event_count"},
                  {"type": "array", "optional": True, "field": "data_collections", "items": {
                      "type": "struct", "optional": True, "name": "event.collection", "version": 1, "fields": [
                          {"type": "string", "optional": False, "field": "data_collection"},
                          {"type": "int64", "optional": False, "field": "event_count"}]}},
                  {"type": "int64", "optional": False, "field": "ts_ms"}]}
    return json.dumps({"schema": schema, "payload": payload}).encode()


# --- CockroachDB changefeeds ---------------------------------------------------------------------

def _crdb_value(value: Any) -> Any:
    """DECIMAL as a JSON number (marked here, written unquoted by _dumps), DATE/TIMESTAMPTZ as ISO text."""
    if isinstance(value, Decimal):
        return f"\x00{value}\x00"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _dumps(obj: Any) -> bytes:
    text = json.dumps(obj)
    return text.replace('"\\u0000', "").replace('\\u0000"', "").encode()


def _crdb_row(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {c: _crdb_value(v) for c, v in row.items()}


def hlc(wall_ns: int, logical: int = 0) -> str:
    """An HLC timestamp as changefeeds write updated/mvcc_timestamp/resolved: wall nanoseconds, 10 logical digits."""
    return f"{wall_ns}.{logical:010d}"


def changefeed_message(topic: str, key: list[Any], after: Mapping[str, Any] | None, *,
                       before: Mapping[str, Any] | None = None, diff: bool = False, updated: str | None = None,
                       mvcc: str | None = None, envelope: str = "wrapped", capitalized: bool = True) -> bytes:
    """One row message of a changefeed into the Pub/Sub sink."""
    if envelope == "wrapped":
        value: Any = {"after": _crdb_row(after)}
        if diff:
            value["before"] = _crdb_row(before)
        if updated is not None:
            value["updated"] = updated
        if mvcc is not None:
            value["mvcc_timestamp"] = mvcc
    else:  # bare: the columns at the top, the metadata under __crdb__
        meta = {k: v for k, v in (("updated", updated), ("mvcc_timestamp", mvcc)) if v is not None}
        value = {**(_crdb_row(after) or {}), **({"__crdb__": meta} if meta else {})} or None
    names = ("Key", "Value", "Topic") if capitalized else ("key", "value", "topic")
    return _dumps(dict(zip(names, ([_crdb_value(k) for k in key], value, topic), strict=True)))


def changefeed_resolved(resolved: str, envelope: str = "wrapped") -> bytes:
    """A resolved-timestamp message, published to every topic as the encoder writes it."""
    body = {"resolved": resolved} if envelope == "wrapped" else {"__crdb__": {"resolved": resolved}}
    return json.dumps(body).encode()


# --- Pub/Sub push --------------------------------------------------------------------------------

def push_body(data: bytes | None, message_id: str, attributes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The wrapped push body; ``data`` None is a message with attributes only (no data field at all)."""
    message: dict[str, Any] = {"attributes": dict(attributes or {}), "messageId": message_id,
                               "message_id": message_id, "publishTime": "2026-11-02T10:00:00.123Z",
                               "publish_time": "2026-11-02T10:00:00.123Z"}
    if data is not None:
        message["data"] = base64.b64encode(data).decode()
    return {"message": message, "subscription": "projects/local-project/subscriptions/cdc-changes-push",
            "deliveryAttempt": 1}


def push(client: Any, shape: str, data: bytes | None, message_id: str,
         attributes: Mapping[str, str] | None = None) -> Any:
    """POST one message to a function's test client as a raw push body or a binary/structured CloudEvent."""
    body = push_body(data, message_id, attributes)
    if shape == "raw":
        return client.post("/", json=body)
    event = CloudEvent({"type": MESSAGE_PUBLISHED, "source": TOPIC, "id": message_id}, body)
    headers, payload = to_binary(event) if shape == "binary" else to_structured(event)
    return client.post("/", headers=headers, data=payload)
