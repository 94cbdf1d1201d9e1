"""The wire formats the local relay translates between: logical decoding output -> Debezium events.

Reads the rows of ``pg_logical_slot_peek_changes`` as wal2json (format-version 2) or test_decoding
print them, and writes each row change as the JSON Debezium's PostgreSQL connector publishes with
default settings (payload.before/after/source/op/ts_ms, optionally with the ``schema`` part).
emulators/cdc_relay.py moves these between a replication slot and the ingest function.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

DEBEZIUM_VERSION = "2.7.3.Final"  # the envelope version this relay imitates
_EPOCH_DAY = date(1970, 1, 1)


# --- decoded changes ----------------------------------------------------------------------------


@dataclass
class RowChange:
    """One row change as decoded, values still as the server printed them (text or JSON)."""

    table: str  # as decoded: a partition name for partitioned tables
    op: str  # c | u | d
    lsn: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass
class Transaction:
    xid: int
    commit_lsn: int  # end of the commit record: advancing the slot here confirms the transaction
    commit_ts_ms: int
    changes: list[RowChange] = field(default_factory=list)


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _ts_ms(text: str) -> int:
    return int(parse_timestamptz(text).timestamp() * 1000)


def parse_timestamptz(text: str) -> datetime:
    """PostgreSQL's text output of timestamptz (``2026-11-02 10:00:00.5+00``) as an aware datetime."""
    text = text.strip()
    if re.search(r"[+-]\d\d$", text):
        text += ":00"
    return datetime.fromisoformat(text).astimezone(UTC)


def decode_wal2json(rows: Sequence[Sequence[Any]]) -> list[Transaction]:
    """Transactions from ``(lsn, xid, data)`` rows of wal2json format-version 2."""
    out: list[Transaction] = []
    current: Transaction | None = None
    for lsn_text, _xid, data in rows:
        msg = json.loads(data, parse_float=Decimal)
        action = msg["action"]
        if action == "B":
            current = Transaction(int(msg["xid"]), 0, _ts_ms(msg["timestamp"]))
        elif action == "C" and current is not None:
            current.commit_lsn = parse_lsn(lsn_text)  # the result row's lsn is the commit's end
            out.append(current)
            current = None
        elif action in ("I", "U", "D") and current is not None:
            after = {c["name"]: c["value"] for c in msg.get("columns", [])} if action != "D" else None
            before = {c["name"]: c["value"] for c in msg["identity"]} if "identity" in msg else None
            op = {"I": "c", "U": "u", "D": "d"}[action]
            current.changes.append(RowChange(msg["table"], op, parse_lsn(msg["lsn"]), before, after))
    return out


_TD_CHANGE = re.compile(r"^table (?P<schema>[^.]+)\.(?P<table>[^:]+): (?P<op>INSERT|UPDATE|DELETE): (?P<rest>.*)$",
                        re.S)
_TD_VALUE = re.compile(r"(?P<name>[^\[\s]+)\[(?P<type>[^\]]+)\]:(?P<value>'(?:[^']|'')*'|null|\S+)")
_TD_COMMIT = re.compile(r"^COMMIT (?P<xid>\d+)(?: \(at (?P<ts>[^)]+)\))?")


def _td_values(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in _TD_VALUE.finditer(text):
        raw = m.group("value")
        out[m.group("name")] = None if raw == "null" else raw[1:-1].replace("''", "'") if raw.startswith("'") else raw
    return out


def decode_test_decoding(rows: Sequence[Sequence[Any]]) -> list[Transaction]:
    """Transactions from ``(lsn, xid, data)`` rows of test_decoding (include-xids, include-timestamp)."""
    out: list[Transaction] = []
    current: Transaction | None = None
    for lsn_text, xid, data in rows:
        if data.startswith("BEGIN"):
            current = Transaction(int(xid), 0, 0)
        elif data.startswith("COMMIT") and current is not None:
            m = _TD_COMMIT.match(data)
            current.commit_lsn = parse_lsn(lsn_text)
            current.commit_ts_ms = _ts_ms(m.group("ts")) if m and m.group("ts") else int(time.time() * 1000)
            out.append(current)
            current = None
        elif current is not None and (m := _TD_CHANGE.match(data)):
            rest, op = m.group("rest"), m.group("op")
            before: dict[str, Any] | None = None
            after: dict[str, Any] | None = None
            if op == "UPDATE" and rest.startswith("old-key: "):
                old, _, new = rest[len("old-key: "):].partition(" new-tuple: ")
                before, after = _td_values(old), _td_values(new)
            elif op == "DELETE":
                before = _td_values(rest)
            else:
                after = _td_values(rest)
            code = {"INSERT": "c", "UPDATE": "u", "DELETE": "d"}[op]
            current.changes.append(RowChange(m.group("table"), code, parse_lsn(lsn_text), before, after))
    return out


# --- Debezium envelope --------------------------------------------------------------------------


def debezium_value(pg_type: str, value: Any) -> Any:
    """A column value as Debezium's PostgreSQL connector writes it with default settings."""
    if value is None:
        return None
    if pg_type.startswith("numeric"):
        dec = Decimal(str(value))
        m = re.match(r"numeric\(\d+,(\d+)\)", pg_type)
        scale = int(m.group(1)) if m else max(0, -int(dec.as_tuple().exponent))
        unscaled = int(dec.scaleb(scale).to_integral_value())
        raw = unscaled.to_bytes(max(1, (unscaled.bit_length() + 8) // 8), "big", signed=True)
        encoded = base64.b64encode(raw).decode()
        return encoded if m else {"scale": scale, "value": encoded}  # io.debezium.data.VariableScaleDecimal
    if pg_type in ("integer", "smallint", "bigint"):
        return int(value)
    if pg_type == "date":
        day = value if isinstance(value, date) else date.fromisoformat(str(value))
        return (day - _EPOCH_DAY).days
    if pg_type == "timestamp with time zone":
        t = value if isinstance(value, datetime) else parse_timestamptz(str(value))
        return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if pg_type == "boolean":
        return value if isinstance(value, bool) else str(value) in ("t", "true")
    return value if isinstance(value, str) else str(value)


def _field_schema(name: str, pg_type: str, optional: bool) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "string", "optional": optional, "field": name}
    m = re.match(r"numeric\((\d+),(\d+)\)", pg_type)
    if m:
        base.update(type="bytes", name="org.apache.kafka.connect.data.Decimal", version=1,
                    parameters={"scale": m.group(2), "connect.decimal.precision": m.group(1)})
    elif pg_type == "integer":
        base["type"] = "int32"
    elif pg_type in ("smallint", "bigint"):
        base["type"] = "int16" if pg_type == "smallint" else "int64"
    elif pg_type == "date":
        base.update(type="int32", name="io.debezium.time.Date", version=1)
    elif pg_type == "timestamp with time zone":
        base.update(name="io.debezium.time.ZonedTimestamp", version=1)
    elif pg_type == "boolean":
        base["type"] = "boolean"
    return base


def envelope_schema(server: str, table: str, columns: dict[str, tuple[str, bool]]) -> dict[str, Any]:
    """The value schema of the JSON converter with schemas.enable=true (abridged ``source``)."""
    value = {"type": "struct", "fields": [_field_schema(n, t, opt) for n, (t, opt) in columns.items()],
             "optional": True, "name": f"{server}.public.{table}.Value"}
    source_fields = [("version", "string"), ("connector", "string"), ("name", "string"), ("ts_ms", "int64"),
                     ("snapshot", "string"), ("db", "string"), ("sequence", "string"), ("schema", "string"),
                     ("table", "string"), ("txId", "int64"), ("lsn", "int64"), ("xmin", "int64")]
    return {"type": "struct", "optional": False, "name": f"{server}.public.{table}.Envelope", "version": 2,
            "fields": [{**value, "field": "before"}, {**value, "field": "after"},
                       {"type": "struct", "optional": False, "name": "io.debezium.connector.postgresql.Source",
                        "field": "source", "fields": [{"type": t, "optional": n not in ("version", "connector",
                                                       "name", "ts_ms", "db", "schema", "table"), "field": n}
                                                      for n, t in source_fields]},
                       {"type": "string", "optional": False, "field": "op"},
                       {"type": "int64", "optional": True, "field": "ts_ms"}]}


def debezium_event(*, server: str, db: str, table: str, op: str, lsn: int, commit_lsn: int, tx_id: int | None,
                   ts_ms: int, before: dict[str, Any] | None, after: dict[str, Any] | None,
                   columns: dict[str, tuple[str, bool]], with_schema: bool = False) -> bytes:
    """One change as the JSON bytes Debezium publishes (``columns``: name -> (PostgreSQL type, nullable))."""

    def image(row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {n: debezium_value(columns[n][0], v) if n in columns else v for n, v in row.items()}

    payload = {
        "before": image(before), "after": image(after),
        "source": {"version": DEBEZIUM_VERSION, "connector": "postgresql", "name": server, "ts_ms": ts_ms,
                   "snapshot": "false", "db": db, "sequence": json.dumps([str(commit_lsn), str(lsn)]),
                   "schema": "public", "table": table, "txId": tx_id, "lsn": lsn, "xmin": None},
        "op": op, "ts_ms": int(time.time() * 1000), "transaction": None,
    }
    body: dict[str, Any] = {"schema": envelope_schema(server, table, columns), "payload": payload} \
        if with_schema else payload
    return json.dumps(body, separators=(",", ":")).encode()
