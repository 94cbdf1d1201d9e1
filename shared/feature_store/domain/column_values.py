"""Column values as CDC producers write them, decoded by the column's kind and the value's own shape.

Debezium's JSON converter (https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-data-types)
writes NUMERIC as base64 two's-complement unscaled bytes (``decimal.handling.mode=precise``), as
text (``string``), as a JSON number (``double``) or, for a NUMERIC without scale, as a
``VariableScaleDecimal`` struct ``{"scale": s, "value": <base64>}``; DATE as days since the epoch;
TIMESTAMPTZ as ISO-8601 text (``io.debezium.time.ZonedTimestamp``), ``infinity``/``-infinity``
included. A CockroachDB changefeed (https://www.cockroachlabs.com/docs/stable/changefeed-messages)
writes DECIMAL as a JSON number, DATE and TIMESTAMPTZ as ISO text. Messages are parsed with
``parse_float=Decimal``, so a JSON number is never rounded through a float.

Three outcomes per value:

- a Python value (str, int, Decimal, date, datetime);
- a ``RawValue``: legal at the source but without a Python form here (``infinity``, NaN, a year
  beyond 9999). It is kept as the producer wrote it, so a replicator can write it back, and
  ingestion ignores it (it only needs the table and the key);
- ``InvalidValue``: a value the producer's documented encoding cannot give (bad base64, a decimal
  struct missing a field, a JSON type the column cannot have, outside the column's CHECK range):
  the message is malformed: poison.

The NUMERIC encoding is decided by the schema part when the message has one; without it, by the
value's shape (a JSON number, a struct, text that only base64 or only a decimal literal can be).
Text that could be either (``"1250"``) is read in the order ``FS_CDC_DECIMAL_HANDLING_MODE`` gives,
and the first reading inside the column's CHECK range wins.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeGuard

from feature_store.domain.source_tables import Column, Kind

DecimalMode = Literal["precise", "string", "double"]

_EPOCH_DAY = date(1970, 1, 1)
_INT32 = (-(2**31), 2**31 - 1)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,6})?")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})+|(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)")
_NUMERIC_SPECIALS = frozenset({"NaN", "Infinity", "-Infinity"})  # PostgreSQL NUMERIC's special values as text
_INFINITIES = frozenset({"infinity", "-infinity"})  # DATE and TIMESTAMPTZ as PostgreSQL (and Debezium) write them
# An ISO date or timestamp whose year Python cannot hold (PostgreSQL goes to 294276 AD and before 1 AD).
_FAR_TIME = re.compile(r"[+-]?\d{4,}-\d{2}-\d{2}(?:[T ][0-9:.]+)?(?:Z|[+-]\d{2}(?::?\d{2}){0,2})?(?: BC)?")
_INT_TIMESTAMPS = {"io.debezium.time.Timestamp": 10**3, "org.apache.kafka.connect.data.Timestamp": 10**3,
                   "io.debezium.time.MicroTimestamp": 10**6, "io.debezium.time.NanoTimestamp": 10**9}
# Debezium writes PostgreSQL's +-infinity timestamps as these when it has to write a number (DBZ-2565).
_INT_INFINITIES = frozenset({2**63 - 1, -(2**63)})
_MAX_SCALE = 1000  # PostgreSQL's NUMERIC scale limit


class InvalidValue(ValueError):
    """A value no documented encoding of its column gives; its message is poison."""


@dataclass(frozen=True, slots=True)
class RawValue:
    """A captured value kept as its producer wrote it: legal at the source, no Python form here.

    ``wire`` is the JSON value as received (``"infinity"``, ``"NaN"``, a day number past year 9999),
    ``why`` one of ``infinity``, ``not_finite``, ``out_of_range``.
    """

    wire: Any
    kind: Kind
    why: str


def is_int(value: Any) -> TypeGuard[int]:
    """An int that is not a bool (JSON true/false are bools in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def decode_value(col: Column, value: Any, schema: Any, decimals: DecimalMode) -> Any:
    """The Python value of a non-null wire value of ``col``, a RawValue, or InvalidValue."""
    try:
        if col.kind == "text":
            # PostgreSQL text holds no NUL and only valid UTF-8 (a lone surrogate cannot be encoded).
            if not isinstance(value, str) or "\x00" in value or (col.name == "user_id" and not 0 < len(value) <= 64):
                raise InvalidValue
            value.encode()
            return value
        if col.kind == "int":
            if not is_int(value) or not _INT32[0] <= value <= _INT32[1] or not _within(col, value):
                raise InvalidValue
            return value
        if col.kind == "decimal":
            return _decimal(value, col, schema, decimals)
        if col.kind == "date":
            return _date(value)
        return _timestamp(value, schema)
    except (ValueError, TypeError, ArithmeticError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidValue from exc


def _within(col: Column, value: int | Decimal) -> bool:
    return (col.lo is None or value >= col.lo) and (col.hi is None or value <= col.hi)


def _decimal(value: Any, col: Column, schema: Any, mode: DecimalMode) -> Decimal | RawValue:
    """The first reading of the value that decodes and satisfies the column's CHECK range."""
    for read in _decimal_readings(value, col, schema, mode):
        try:
            out = read()
        except (ValueError, ArithmeticError, binascii.Error):
            continue
        if not out.is_finite():
            return RawValue(value, "decimal", "not_finite")
        if _within(col, out):
            return out
    raise InvalidValue


def _decimal_readings(value: Any, col: Column, schema: Any, mode: DecimalMode) -> list[Callable[[], Decimal]]:
    """How a NUMERIC wire value can be read: by the schema part if any, else by its own shape.

    Only text that is both a decimal literal and base64 (``"1250"``) has two readings; the configured
    mode orders them, and the column's range rejects the wrong one (for every NUMERIC column here, the
    base64 reading of such text is negative: its first byte is 0xD0 or above).
    """
    if is_int(value):
        return [lambda: Decimal(value)]
    if isinstance(value, Decimal):  # a JSON number (double mode, CockroachDB) or NaN/Infinity
        return [lambda: value]
    if isinstance(value, dict):  # io.debezium.data.VariableScaleDecimal
        scale, digits = value.get("scale"), value.get("value")
        if not is_int(scale) or not isinstance(digits, str):
            raise InvalidValue
        return [lambda: _unscaled(digits, scale)]
    if not isinstance(value, str):
        raise InvalidValue
    field_type = schema.get("type") if isinstance(schema, dict) else None
    if field_type == "bytes":
        params = schema.get("parameters")
        scale = params.get("scale") if isinstance(params, dict) else None
        return [lambda: _unscaled(value, col.scale if scale is None else int(scale))]
    as_text = (lambda: Decimal(value)) if value in _NUMERIC_SPECIALS or _NUMBER.fullmatch(value) else None
    if field_type == "string":
        return [as_text] if as_text else []
    as_bytes = (lambda: _unscaled(value, col.scale)) if _BASE64.fullmatch(value) else None
    ordered = [as_bytes, as_text] if mode == "precise" else [as_text, as_bytes]
    return [read for read in ordered if read is not None]


def _unscaled(text: str, scale: int) -> Decimal:
    if not -_MAX_SCALE <= scale <= _MAX_SCALE:
        raise InvalidValue
    raw = base64.b64decode(text, validate=True)
    if not raw:
        raise InvalidValue
    return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale)


def _date(value: Any) -> date | RawValue:
    if is_int(value):  # io.debezium.time.Date: days since the epoch
        try:
            return _EPOCH_DAY + timedelta(days=value)
        except OverflowError:
            return RawValue(value, "date", "out_of_range")
    if isinstance(value, str):
        if value in _INFINITIES:
            return RawValue(value, "date", "infinity")
        try:
            return date.fromisoformat(value)
        except ValueError:
            return _far_time(value, "date")
    raise InvalidValue


def _timestamp(value: Any, schema: Any) -> datetime | RawValue:
    if isinstance(value, str):
        if value in _INFINITIES:
            return RawValue(value, "timestamp", "infinity")
        try:
            parsed = datetime.fromisoformat(value)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except ValueError:
            return _far_time(value, "timestamp")
        except OverflowError:
            return RawValue(value, "timestamp", "out_of_range")
    per_second = _INT_TIMESTAMPS.get(schema.get("name", "")) if isinstance(schema, dict) else None
    if is_int(value) and per_second:
        if value in _INT_INFINITIES:
            return RawValue(value, "timestamp", "infinity")
        try:
            return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=value * 10**6 // per_second)
        except OverflowError:
            return RawValue(value, "timestamp", "out_of_range")
    raise InvalidValue


def _far_time(text: str, kind: Kind) -> RawValue:
    if _FAR_TIME.fullmatch(text):
        return RawValue(text, kind, "out_of_range")
    raise InvalidValue


def plain(value: Any) -> Any:
    """A decoded value with a RawValue as None: what a store that needs a typed value can take."""
    return None if isinstance(value, RawValue) else value
