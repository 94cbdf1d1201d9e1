"""Row changes of the source tables, parsed from Debezium's JSON change-event envelope.

A Debezium PostgreSQL connector (Debezium Server, or emulators/cdc_relay.py locally) publishes
one JSON value per row change: ``{"schema": ..., "payload": {...}}`` with the JSON converter's
``schemas.enable=true``, or the bare payload without it. The payload holds ``before``/``after``
row images, ``source`` (``table``, ``lsn``, ``ts_ms``, ``txId``, ...) and ``op`` (``c`` create,
``u`` update, ``d`` delete, ``r`` snapshot read). Column values use Debezium's default
encodings: NUMERIC(p,s) as base64 big-endian two's-complement unscaled bytes (``precise``),
DATE as days since the epoch (``io.debezium.time.Date``), TIMESTAMPTZ as an ISO-8601 string
(``io.debezium.time.ZonedTimestamp``). A null value is Debezium's tombstone after a delete.

``parse_change`` turns one message into a ``Change`` or raises ``PoisonMessage``; it does no I/O.
Invariant: a ``Change`` always names at least one user (``user_ids``) and its ``row_key``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from feature_store.errors import PoisonMessage

Op = Literal["c", "u", "d", "r"]
Kind = Literal["text", "int", "decimal", "date", "timestamp"]
DecimalMode = Literal["precise", "string", "double"]
Row = Mapping[str, Any]

OPS: tuple[Op, ...] = ("c", "u", "d", "r")
OP_NAMES: Mapping[str, str] = {"c": "insert", "u": "update", "d": "delete", "r": "snapshot"}
_EPOCH_DAY = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Column:
    """One captured column: how its Debezium value is decoded and which values are possible."""

    name: str
    kind: Kind
    scale: int = 0  # digits after the point of a NUMERIC(p, s) column
    lo: Decimal | None = None
    hi: Decimal | None = None
    required: bool = False  # NOT NULL in the source


@dataclass(frozen=True)
class SourceTable:
    """A captured source table (sql/postgres/0001_core_tables.sql), keyed by its primary key."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})


def _c(name: str, kind: Kind, scale: int = 0, lo: str | None = None, hi: str | None = None,
       required: bool = False) -> Column:
    return Column(name, kind, scale, None if lo is None else Decimal(lo), None if hi is None else Decimal(hi),
                  required)


_USER_ID = _c("user_id", "text", required=True)


def _score(name: str) -> Column:
    return _c(name, "decimal", 3, lo="0", hi="1")


TABLES: Mapping[str, SourceTable] = {t.name: t for t in (
    SourceTable("users", (
        _USER_ID, _c("age", "int", lo="0", hi="150"), _c("location_country", "text"),
        _c("signup_date", "date", required=True), _c("verification_status", "text", required=True),
        _c("income_bracket", "text"), _c("created_at", "timestamp"), _c("updated_at", "timestamp"),
    ), ("user_id",)),
    SourceTable("transactions", (
        _c("transaction_id", "text", required=True), _USER_ID, _c("amount", "decimal", 2, lo="0", required=True),
        _c("currency", "text"), _c("merchant", "text", required=True), _c("category", "text", required=True),
        _c("status", "text", required=True), _c("created_at", "timestamp", required=True),
    ), ("transaction_id", "created_at")),
    SourceTable("risk_scores", (
        _USER_ID, _score("risk_score"), _score("fraud_probability"),
        _c("payment_delays", "int", lo="0"), _score("device_trust_score"),
        _score("credit_utilization"), _c("calculated_at", "timestamp"),
    ), ("user_id",)),
    SourceTable("installment_plans", (
        _c("plan_id", "text", required=True), _USER_ID, _c("transaction_id", "text", required=True),
        _c("principal", "decimal", 2, lo="0", required=True), _c("n_installments", "int", lo="1"),
        _c("status", "text", required=True), _c("created_at", "timestamp", required=True),
        _c("updated_at", "timestamp"),
    ), ("plan_id",)),
    SourceTable("installments", (
        _c("plan_id", "text", required=True), _c("seq", "int", lo="1", required=True), _USER_ID,
        _c("due_date", "date", required=True), _c("amount", "decimal", 2, lo="0", required=True),
        _c("paid_at", "timestamp"),
    ), ("plan_id", "seq")),
)}

# Logical decoding names the partition a row lives in; Debezium with publish.via.partition.root
# (and the local relay) name the parent. Both are accepted.
_PARTITION = re.compile(r"^(transactions)_\d{4}_\d{2}$")
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True, slots=True)
class Change:
    """One row change of a captured table, with the row images decoded to Python values."""

    table: str
    op: Op
    lsn: int  # source.lsn: the position of this change in the source's log
    ts_ms: int  # source.ts_ms: when the change was made in the source
    tx_id: int | None
    before: Row | None
    after: Row | None

    @property
    def row(self) -> Row:
        """The row as the change leaves it: ``after``, or ``before`` for a delete."""
        image = self.before if self.op == "d" else self.after
        assert image is not None  # parse_change guarantees it
        return image

    @property
    def user_ids(self) -> tuple[str, ...]:
        """Every user whose state the change can alter: an update that moves a row affects both."""
        ids = {img["user_id"] for img in (self.before, self.after) if img is not None and "user_id" in img}
        return tuple(sorted(ids))

    @property
    def row_key(self) -> str:
        """The primary key of the changed row as compact JSON text."""
        pk = TABLES[self.table].primary_key
        return json.dumps([_text(self.row[c]) for c in pk], separators=(",", ":"))

    @property
    def insert_id(self) -> str:
        """A stable id of this change (table, lsn, key): the same on every redelivery."""
        raw = f"{self.table}|{self.lsn}|{self.row_key}".encode()
        return hashlib.sha256(raw).hexdigest()[:40]


def _text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else value


def source_table(name: str) -> SourceTable | None:
    """The captured table of a name from the change stream (a partition maps to its parent)."""
    match = _PARTITION.match(name)
    return TABLES.get(match.group(1) if match else name)


def parse_change(data: bytes, decimals: DecimalMode = "precise") -> Change | None:
    """The change carried by one message, None for a Debezium tombstone, or PoisonMessage."""
    if not data.strip():
        return None
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise PoisonMessage("the message data is not JSON", code="poison_not_json") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _not_debezium("the message is JSON but not an object")
    schema: Any = None
    payload: Any = value
    if "payload" in value and set(value) <= {"schema", "payload"}:
        schema, payload = value.get("schema"), value["payload"]
        if payload is None:
            return None
    if not isinstance(payload, dict):
        raise _not_debezium("payload is not an object")
    return _parse_payload(payload, _field_schemas(schema), decimals)


def _not_debezium(why: str) -> PoisonMessage:
    return PoisonMessage(f"not a Debezium change event: {why}", code="poison_not_debezium")


def _invalid(why: str) -> PoisonMessage:
    return PoisonMessage(f"impossible change event: {why}", code="poison_invalid_value")


def _parse_payload(payload: dict[str, Any], schemas: dict[str, dict[str, Any]], decimals: DecimalMode) -> Change:
    op, source = payload.get("op"), payload.get("source")
    if not isinstance(op, str) or not isinstance(source, dict):
        raise _not_debezium("payload.op or payload.source is missing")
    if op not in OPS:
        if op in ("t", "m"):
            raise PoisonMessage(f"op {op!r} (truncate/message) is not applied; skip it at the connector",
                                code="poison_unsupported_op")
        raise _not_debezium(f"unknown op {op!r}")
    name = source.get("table")
    if not isinstance(name, str):
        raise _not_debezium("source.table is missing")
    table = source_table(name)
    if table is None:
        raise PoisonMessage(f"table {name!r} is not captured; known tables: {', '.join(TABLES)}",
                            code="poison_unknown_table")
    lsn, ts_ms, tx_id = source.get("lsn"), source.get("ts_ms"), source.get("txId")
    if not _int_within(lsn, 0, 2**64):
        raise _invalid(f"source.lsn must be a 64-bit position, got {lsn!r}")
    if not _int_within(ts_ms, 0, 2**53):
        raise _invalid(f"source.ts_ms must be epoch milliseconds, got {ts_ms!r}")
    if tx_id is not None and not _is_int(tx_id):
        raise _invalid(f"source.txId must be a number, got {tx_id!r}")
    before = _image(payload.get("before"), "before", table, schemas.get("before", {}), decimals)
    after = _image(payload.get("after"), "after", table, schemas.get("after", {}), decimals)
    needed = "before" if op == "d" else "after"
    if (before if op == "d" else after) is None:
        raise _invalid(f"op {op!r} needs payload.{needed}")
    change = Change(table.name, op, lsn, ts_ms, tx_id, before, after)  # type: ignore[arg-type]
    for col in table.primary_key:
        if change.row.get(col) is None:
            raise _invalid(f"payload.{needed}.{col} (primary key of {table.name}) is missing")
    for img, label in ((before, "before"), (after, "after")):
        if img is not None and "user_id" not in img:
            raise _invalid(f"payload.{label} has no user_id (the table needs REPLICA IDENTITY FULL)")
    return change


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_within(value: Any, lo: int, hi: int) -> bool:
    """An int (not a bool) with ``lo <= value < hi``."""
    return _is_int(value) and bool(lo <= value < hi)


def _field_schemas(schema: Any) -> dict[str, dict[str, Any]]:
    """``{"before"|"after": {column: field schema}}`` from the envelope schema, if it has one."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list):
        return out
    for part in schema["fields"]:
        if isinstance(part, dict) and part.get("field") in ("before", "after"):
            cols = part.get("fields")
            if isinstance(cols, list):
                out[part["field"]] = {c["field"]: c for c in cols if isinstance(c, dict) and "field" in c}
    return out


def _image(raw: Any, label: str, table: SourceTable, schemas: dict[str, Any], decimals: DecimalMode) -> Row | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _not_debezium(f"payload.{label} is not an object")
    row: dict[str, Any] = {}
    for name, value in raw.items():
        col = table.by_name.get(name)
        if col is None:
            continue  # a column added to the source later: not ours to judge
        where = f"payload.{label}.{name}"
        if value is None:
            if col.required:
                raise _invalid(f"{where} is null but the column is NOT NULL")
            row[name] = None
            continue
        row[name] = _check_range(col, where, _decode(col, value, schemas.get(name), decimals, where))
    return row


def _decode(col: Column, value: Any, schema: Any, decimals: DecimalMode, where: str) -> Any:
    try:
        if col.kind == "text":
            if not isinstance(value, str) or (col.name == "user_id" and not 0 < len(value) <= 64):
                raise ValueError
            return value
        if col.kind == "int":
            if not _is_int(value) or not _INT32[0] <= value <= _INT32[1]:
                raise ValueError
            return value
        if col.kind == "decimal":
            return _decimal(value, col.scale, schema, decimals)
        if col.kind == "date":
            return _date(value)
        return _timestamp(value, schema)
    except (ValueError, TypeError, ArithmeticError, binascii.Error, OverflowError):
        raise _invalid(f"{where} is not a valid {col.kind}: {str(value)[:40]!r}") from None


def _decimal(value: Any, scale: int, schema: Any, mode: DecimalMode) -> Decimal:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):  # decimal.handling.mode=double
        out = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    elif isinstance(value, dict):  # io.debezium.data.VariableScaleDecimal
        out = _unscaled(value["value"], int(value["scale"]))
    elif isinstance(value, str):
        field_type = schema.get("type") if isinstance(schema, dict) else None
        if field_type == "bytes" or (field_type is None and mode == "precise"):
            params = schema.get("parameters") if isinstance(schema, dict) else None
            out = _unscaled(value, int(params["scale"]) if isinstance(params, dict) and "scale" in params else scale)
        else:  # decimal.handling.mode=string
            out = Decimal(value)
    else:
        raise ValueError
    if not out.is_finite():
        raise ValueError
    return out


def _unscaled(text: str, scale: int) -> Decimal:
    raw = base64.b64decode(text, validate=True)
    if not raw:
        raise ValueError
    return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale)


def _date(value: Any) -> date:
    if _is_int(value):
        return _EPOCH_DAY + timedelta(days=value)
    if isinstance(value, str):
        return date.fromisoformat(value)
    raise ValueError


_INT_TIMESTAMPS = {"io.debezium.time.Timestamp": 10**3, "org.apache.kafka.connect.data.Timestamp": 10**3,
                   "io.debezium.time.MicroTimestamp": 10**6, "io.debezium.time.NanoTimestamp": 10**9}


def _timestamp(value: Any, schema: Any) -> datetime:
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    per_second = _INT_TIMESTAMPS.get(schema.get("name", "")) if isinstance(schema, dict) else None
    if _is_int(value) and per_second:
        return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=value * 10**6 // per_second)
    raise ValueError


def _check_range(col: Column, where: str, value: Any) -> Any:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        if col.lo is not None and value < col.lo:
            raise _invalid(f"{where} = {value} is below {col.lo}")
        if col.hi is not None and value > col.hi:
            raise _invalid(f"{where} = {value} is above {col.hi}")
    return value
