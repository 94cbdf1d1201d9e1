"""CockroachDB changefeed messages, as its Google Cloud Pub/Sub sink publishes them.

Formats (CockroachDB's documentation and the sink's source, pkg/ccl/changefeedccl/sink_pubsub_v2.go):

- a row message (https://www.cockroachlabs.com/docs/v25.1/changefeed-sinks#pub-sub-sink-messages):
  ``{"Key": [...primary key...], "Value": {...}, "Topic": "users"}``; the fields are lowercase
  (``key``/``value``/``topic``) when ``changefeed.new_pubsub_sink_enabled`` is off (before v23.2).
  ``Topic`` is the table name, ``db.schema.table`` with ``full_table_name``, ``table.family`` for
  column families, or the one ``topic_name`` of the sink URI; the sink URI parameter
  ``with_table_name_attribute=true`` adds the Pub/Sub attribute ``TABLE_NAME``, which wins;
- the value in the ``wrapped`` envelope, the default
  (https://www.cockroachlabs.com/docs/stable/changefeed-messages#wrapped): ``after`` (the row, null
  for a delete), ``before`` with ``diff`` (null when the row did not exist), ``updated`` with
  ``updated`` and ``mvcc_timestamp`` with ``mvcc_timestamp`` (HLC timestamps ``"<wall ns>.<logical>"``),
  ``key`` with ``key_in_value``, ``topic`` with ``topic_in_value``;
- the value in the ``bare`` envelope (https://www.cockroachlabs.com/docs/stable/changefeed-messages#bare):
  the row's columns plus ``"__crdb__": {"updated", "mvcc_timestamp", "key", "topic"}``;
- a resolved timestamp (``resolved`` option, https://www.cockroachlabs.com/docs/stable/changefeed-messages#resolved-messages):
  ``{"resolved": "<wall>.<logical>"}``, ``{"__crdb__": {"resolved": ...}}`` in the bare envelope,
  published to every topic as it is, without the Key/Value wrapper.

The position of a change is its ``updated`` timestamp (``mvcc_timestamp`` without it) as
stores/dialect.py turns an HLC into a watermark, ``(wall << 32) | logical``; a changefeed without
either option gives position 0 and the Pub/Sub publish time as commit time. Without ``diff`` an
insert and an update look alike: both are op ``u`` (an upsert).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from feature_store.domain.change_messages import Change, Op, Parsed, Resolved, invalid, key_of, row_image
from feature_store.domain.column_values import DecimalMode, InvalidValue, decode_value
from feature_store.domain.source_tables import TABLES, SourceTable, source_table
from feature_store.errors import PoisonMessage

_HLC = re.compile(r"(\d{1,19})(?:\.(\d{1,10}))?")
_PUBSUB_FIELDS = frozenset({"key", "value", "topic"})
_WRAPPED_FIELDS = frozenset({"after", "before", "updated", "mvcc_timestamp", "key", "topic"})
TABLE_NAME_ATTRIBUTE = "TABLE_NAME"


def hlc_position(text: Any) -> int | None:
    """An HLC timestamp ``"<wall ns>.<logical, 10 digits>"`` as ``(wall << 32) | logical``, or None."""
    match = _HLC.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    logical = int((match.group(2) or "").ljust(10, "0"))
    return (int(match.group(1)) << 32) | logical if logical <= 0xFFFFFFFF else None


def is_changefeed(value: dict[str, Any]) -> bool:
    """Whether a JSON object has one of the shapes above (its content is judged by ``parse_changefeed``)."""
    lower = {k.lower() for k in value}
    return (("value" in lower and lower <= _PUBSUB_FIELDS and len(lower) == len(value))
            or set(value) == {"resolved"} or "__crdb__" in value
            or ("after" in value and set(value) <= _WRAPPED_FIELDS))


def parse_changefeed(value: dict[str, Any], decimals: DecimalMode, attributes: Mapping[str, str],
                     published_ms: int | None) -> Parsed:
    """The change or resolved timestamp a changefeed message carries; PoisonMessage when it breaks the format."""
    fields = {k.lower(): v for k, v in value.items()}
    if "value" in fields and set(fields) <= _PUBSUB_FIELDS:
        key, body, topic = fields.get("key"), fields["value"], fields.get("topic")
    else:  # a value without the Pub/Sub wrapper (key_in_value), or a resolved message
        key, body, topic = None, value, None
    resolved = _resolved(body)
    if resolved is not None:
        return resolved
    if body is not None and not isinstance(body, dict):
        raise not_changefeed("Value is not an object")
    wrapped = body is not None and "__crdb__" not in body
    if wrapped and "after" not in body:  # type: ignore[operator]
        raise not_changefeed("Value has neither after (wrapped envelope) nor __crdb__ (bare envelope)")
    meta = (body if wrapped else (body or {}).get("__crdb__", {})) or {}
    if not isinstance(meta, dict):
        raise not_changefeed("Value.__crdb__ is not an object")
    table = _table((attributes.get(TABLE_NAME_ATTRIBUTE), topic, meta.get("topic")))
    updated, mvcc = meta.get("updated"), meta.get("mvcc_timestamp")
    position = _position(updated, "updated")
    if position is None:
        position = _position(mvcc, "mvcc_timestamp")
    if wrapped:
        assert body is not None
        before = row_image(body.get("before"), "Value.before", table, {}, decimals, complete=False,
                           malformed=not_changefeed("Value.before is not an object"))
        after = row_image(body["after"], "Value.after", table, {}, decimals, complete=True,
                          malformed=not_changefeed("Value.after is not an object"))
        op: Op = "d" if after is None else ("c" if "before" in body and before is None else "u")
    else:
        columns = {k: v for k, v in (body or {}).items() if k != "__crdb__"}
        before, after = None, row_image(columns or None, "Value", table, {}, decimals, complete=False,
                                        malformed=not_changefeed("Value is not an object"))
        op = "d" if after is None else "u"
    row_key = _key(table, key if key is not None else meta.get("key"), before if op == "d" else after, decimals)
    ts_ms = (position >> 32) // 10**6 if position is not None else (published_ms or 0)
    return Change(table.name, op, row_key, position or 0, ts_ms, before, after, "cockroachdb",
                  transaction=updated if isinstance(updated, str) else None,
                  mvcc=mvcc if isinstance(mvcc, str) else None)


def not_changefeed(why: str) -> PoisonMessage:
    return PoisonMessage(f"not a CockroachDB changefeed message: {why}", code="poison_not_changefeed")


def _resolved(body: Any) -> Resolved | None:
    if not isinstance(body, dict):
        return None
    crdb = body.get("__crdb__")
    if set(body) == {"resolved"}:
        text = body["resolved"]
    elif set(body) == {"__crdb__"} and isinstance(crdb, dict) and set(crdb) == {"resolved"}:
        text = crdb["resolved"]
    else:
        return None
    position = hlc_position(text)
    if position is None:
        raise invalid("resolved is not an HLC timestamp")
    return Resolved(position, text)


def _position(hlc: Any, name: str) -> int | None:
    if hlc is None:
        return None
    position = hlc_position(hlc)
    if position is None:
        raise invalid(f"Value.{name} is not an HLC timestamp")
    return position


def _table(names: tuple[Any, ...]) -> SourceTable:
    """The captured table named by the TABLE_NAME attribute or the topic (``db.schema.table``, ``table.family``)."""
    for name in names:
        if isinstance(name, str):
            for candidate in (name, *reversed(name.split("."))):
                table = source_table(candidate)
                if table is not None:
                    return table
    shown = ", ".join(repr(n[:64]) for n in names if isinstance(n, str)) or "none"
    raise PoisonMessage(f"no captured table in the TABLE_NAME attribute or the topic ({shown}); known tables: "
                        f"{', '.join(TABLES)} (a shared topic_name needs with_table_name_attribute=true)",
                        code="poison_unknown_table")


def _key(table: SourceTable, key: Any, image: Mapping[str, Any] | None, decimals: DecimalMode) -> dict[str, Any]:
    """The primary key from the row image, else from the changefeed's key array (CockroachDB's key order)."""
    from_image = key_of(table, image)
    if from_image is not None:
        return from_image
    names = table.changefeed_key
    if not isinstance(key, list) or len(key) != len(names) or any(v is None for v in key):
        raise invalid(f"the change carries neither a row nor a key of {table.name} ({', '.join(names)})")
    try:
        return {n: decode_value(table.by_name[n], v, None, decimals) for n, v in zip(names, key, strict=True)}
    except InvalidValue:
        raise invalid(f"Key is not a valid key of {table.name}") from None
