"""Debezium's JSON messages: row change events, heartbeats and transaction metadata.

Debezium (Debezium Server's Pub/Sub sink, or emulators/cdc_relay.py locally) publishes one JSON
value per message, ``{"schema": ..., "payload": ...}`` with the JSON converter's
``schemas.enable=true`` or the bare payload without it:

- a change event (https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-events):
  ``before``/``after`` row images, ``source`` (``table``, ``lsn``, ``ts_ms``, ``txId``, ...), ``op``
  (``c`` create, ``u`` update, ``d`` delete, ``r`` snapshot read, ``t`` truncate, ``m`` logical
  decoding message) and, with ``provide.transaction.metadata``, a ``transaction`` block
  (``id``, ``total_order``, ``data_collection_order``);
- a heartbeat (``heartbeat.interval.ms``): ``{"ts_ms": ...}``, schema ``io.debezium.connector.common.Heartbeat``;
- a transaction-metadata record (https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-transaction-metadata):
  ``{"status": "BEGIN"|"END", "id": ..., "event_count": ..., "data_collections": [...], "ts_ms": ...}``,
  schema ``io.debezium.connector.common.TransactionMetadataValue``.

Field names and schema names are those of Debezium's SchemaFactory.
"""

from __future__ import annotations

from typing import Any

from feature_store.domain.change_messages import (
    OPS,
    Change,
    Heartbeat,
    Parsed,
    Tombstone,
    TransactionBoundary,
    invalid,
    key_of,
    row_image,
)
from feature_store.domain.column_values import DecimalMode, is_int
from feature_store.domain.source_tables import TABLES, source_table
from feature_store.errors import PoisonMessage

HEARTBEAT_SCHEMA = "io.debezium.connector.common.Heartbeat"
TRANSACTION_SCHEMA = "io.debezium.connector.common.TransactionMetadataValue"
_TRANSACTION_FIELDS = frozenset({"status", "id", "event_count", "data_collections", "ts_ms"})


def is_debezium(value: dict[str, Any]) -> bool:
    """Whether a JSON object has one of the shapes above (its content is judged by ``parse_debezium``)."""
    if "payload" in value and set(value) <= {"schema", "payload"}:
        return True
    return ("op" in value or "source" in value or set(value) == {"ts_ms"}
            or ("status" in value and "id" in value and set(value) <= _TRANSACTION_FIELDS))


def parse_debezium(value: dict[str, Any], decimals: DecimalMode) -> Parsed:
    """The message a Debezium value carries; PoisonMessage when it breaks the format."""
    schema: Any = None
    payload: Any = value
    if "payload" in value and set(value) <= {"schema", "payload"}:
        schema, payload = value.get("schema"), value["payload"]
        if payload is None:
            return Tombstone()
    if not isinstance(payload, dict):
        raise not_debezium("payload is not an object")
    if schema is not None and not isinstance(schema, dict):
        raise not_debezium("the schema part is not an object")
    name = schema.get("name") if schema is not None else None
    if name == HEARTBEAT_SCHEMA or (name is None and set(payload) == {"ts_ms"}):
        return Heartbeat(_int_or_none(payload.get("ts_ms")))
    if name == TRANSACTION_SCHEMA or (name is None and "status" in payload and "op" not in payload):
        return _transaction(payload)
    return _change(payload, _field_schemas(schema), decimals)


def not_debezium(why: str) -> PoisonMessage:
    return PoisonMessage(f"not a Debezium change event: {why}", code="poison_not_debezium")


def _int_or_none(value: Any) -> int | None:
    return value if is_int(value) else None


def _transaction(payload: dict[str, Any]) -> TransactionBoundary:
    status, tx_id = payload.get("status"), payload.get("id")
    if status not in ("BEGIN", "END") or not isinstance(tx_id, str):
        raise not_debezium("a transaction record needs status BEGIN or END and a text id")
    return TransactionBoundary(status, tx_id, _int_or_none(payload.get("event_count")),
                               _int_or_none(payload.get("ts_ms")))


def _change(payload: dict[str, Any], schemas: dict[str, dict[str, Any]], decimals: DecimalMode) -> Parsed:
    op, source = payload.get("op"), payload.get("source")
    if not isinstance(op, str) or not isinstance(source, dict):
        raise not_debezium("payload.op or payload.source is missing")
    if op == "m":  # a logical decoding message: the heartbeat.action.query kind of heartbeat
        return Heartbeat(_int_or_none(payload.get("ts_ms")))
    if op == "t":
        raise PoisonMessage("op 't' (truncate) names no row: refresh the table's users with refresh_cache instead",
                            code="poison_unsupported_op")
    if op not in OPS:
        raise not_debezium(f"unknown op {op[:8]!r}")
    name = source.get("table")
    if not isinstance(name, str):
        raise not_debezium("source.table is missing")
    table = source_table(name)
    if table is None:
        raise PoisonMessage(f"table {name[:64]!r} is not captured; known tables: {', '.join(TABLES)}",
                            code="poison_unknown_table")
    lsn, ts_ms, tx_id = source.get("lsn"), source.get("ts_ms"), source.get("txId")
    if not (is_int(lsn) and 0 <= lsn < 2**64):
        raise invalid("source.lsn must be a 64-bit log position")
    if not (is_int(ts_ms) and 0 <= ts_ms < 2**53):
        raise invalid("source.ts_ms must be epoch milliseconds")
    if tx_id is not None and not is_int(tx_id):
        raise invalid("source.txId must be a number")
    transaction, order = _transaction_block(payload.get("transaction"))
    before = row_image(payload.get("before"), "payload.before", table, schemas.get("before", {}), decimals,
                       complete=False, malformed=not_debezium("payload.before is not an object"))
    after = row_image(payload.get("after"), "payload.after", table, schemas.get("after", {}), decimals,
                      complete=True, malformed=not_debezium("payload.after is not an object"))
    needed = "before" if op == "d" else "after"
    key = key_of(table, before if op == "d" else after)
    if key is None:
        raise invalid(f"op {op!r} needs payload.{needed} with the primary key of {table.name}")
    return Change(table.name, op, key, lsn, ts_ms, before, after, "debezium",
                  tx_id=tx_id, transaction=transaction, order=order)


def _transaction_block(block: Any) -> tuple[str | None, int | None]:
    """``transaction.id`` and ``total_order`` (int64, written as text by some converters)."""
    if block is None:
        return None, None
    if not isinstance(block, dict) or not isinstance(block.get("id"), str):
        raise not_debezium("payload.transaction needs a text id")
    order = block.get("total_order")
    if isinstance(order, str) and order.isdigit() and len(order) <= 19:
        order = int(order)
    return block["id"], order if is_int(order) else None


def _field_schemas(schema: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"before"|"after": {column: field schema}}`` from the envelope schema, if it has one."""
    if schema is None:
        return {}
    parts = schema.get("fields", [])
    if not isinstance(parts, list) or not all(isinstance(p, dict) and isinstance(p.get("field"), str)
                                              for p in parts):
        raise not_debezium("the schema part's fields are malformed")
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        if part["field"] in ("before", "after"):
            cols = part.get("fields", [])
            if not isinstance(cols, list) or not all(isinstance(c, dict) and isinstance(c.get("field"), str)
                                                     for c in cols):
                raise not_debezium(f"the schema of payload.{part['field']} is malformed")
            out[part["field"]] = {c["field"]: c for c in cols}
    return out
