"""The one parser of change-stream messages: Debezium (PostgreSQL) and CockroachDB changefeeds.

``parse_change`` reads the data of one Pub/Sub message and returns what it is (domain/change_messages.py):
a row ``Change``, a ``Tombstone``, a ``Heartbeat``, a ``TransactionBoundary`` or a CockroachDB
``Resolved`` timestamp; or it raises ``PoisonMessage`` with a stable code when the message can never
be applied. It does no I/O and never raises anything else, whatever the bytes: the message's content
must not turn into a 5xx (Pub/Sub would redeliver it until the dead-letter topic).

The shapes: domain/debezium.py and domain/changefeed.py; the column encodings: domain/column_values.py.
A message nested deeper than ``MAX_DEPTH`` is poison before anything reads it (no producer writes
one; it would only exhaust the stack of whatever walks it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from feature_store.domain.change_messages import (
    OP_NAMES,
    OPS,
    Change,
    Heartbeat,
    Op,
    Parsed,
    Resolved,
    Row,
    Tombstone,
    TransactionBoundary,
)
from feature_store.domain.changefeed import hlc_position, is_changefeed, parse_changefeed
from feature_store.domain.column_values import DecimalMode, RawValue
from feature_store.domain.debezium import is_debezium, parse_debezium
from feature_store.domain.source_tables import TABLES, Column, SourceTable, source_table
from feature_store.errors import PoisonMessage

__all__ = ["MAX_DEPTH", "OPS", "OP_NAMES", "TABLES", "Change", "Column", "DecimalMode", "Heartbeat", "Op",
           "Parsed", "RawValue", "Resolved", "Row", "SourceTable", "Tombstone", "TransactionBoundary",
           "hlc_position", "parse_change", "source_table"]

MAX_DEPTH = 32  # a Debezium value with its schema part nests 7 deep, a changefeed message 3


def parse_change(data: bytes, decimals: DecimalMode = "precise", attributes: Mapping[str, str] | None = None,
                 published_ms: int | None = None) -> Parsed:
    """What one message's data is; PoisonMessage (with its code) when it can never be applied.

    ``attributes`` are the Pub/Sub message's (CockroachDB's ``TABLE_NAME``), ``published_ms`` its
    publish time (the commit time of a changefeed change that carries no timestamp option).
    """
    try:
        return _parse(data, decimals, attributes or {}, published_ms)
    except PoisonMessage:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, ArithmeticError, RecursionError) as exc:
        # A shape no rule above foresaw: still the message's fault, so poison, never a 5xx.
        raise PoisonMessage(f"malformed message ({type(exc).__name__})", code="poison_malformed") from None


def _parse(data: bytes, decimals: DecimalMode, attributes: Mapping[str, str], published_ms: int | None) -> Parsed:
    if not data.strip():
        return Tombstone()
    value = _load(data)
    if value is None:
        return Tombstone()
    if not isinstance(value, dict):
        raise _unknown("the message is JSON but not an object")
    if is_changefeed(value):
        return parse_changefeed(value, decimals, attributes, published_ms)
    if is_debezium(value):
        return parse_debezium(value, decimals)
    raise _unknown("neither a Debezium event nor a CockroachDB changefeed message")


def _unknown(why: str) -> PoisonMessage:
    return PoisonMessage(f"unknown message format: {why}", code="poison_unknown_format")


def _load(data: bytes) -> Any:
    """JSON with every number exact (Decimal) and nesting bounded."""
    try:
        value = json.loads(data, parse_float=Decimal, parse_constant=Decimal)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise PoisonMessage("the message data is not JSON", code="poison_not_json") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    raise _too_deep()
                stack.append((child, depth + 1))
    return value


def _too_deep() -> PoisonMessage:
    return PoisonMessage(f"the message nests deeper than {MAX_DEPTH} levels", code="poison_too_deep")
