"""Parsing CockroachDB changefeed messages from the Pub/Sub sink (domain/changefeed.py through
parse_change). Messages come from tests/producers.py, built from CockroachDB's documentation:
https://www.cockroachlabs.com/docs/v25.1/changefeed-sinks#pub-sub-sink-messages and
https://www.cockroachlabs.com/docs/stable/changefeed-messages (envelopes, diff, updated, resolved)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from feature_store.domain.changes import Change, RawValue, Resolved, hlc_position, parse_change
from feature_store.errors import PoisonMessage
from feature_store.stores.dialect import COCKROACHDB

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from producers import changefeed_message, changefeed_resolved, hlc

T0 = datetime(2026, 11, 2, 10, 0, 0, 123456, tzinfo=UTC)
TX = {"transaction_id": "t1", "user_id": "u000000001", "amount": Decimal("12.50"), "currency": "USD",
      "merchant": "m1", "category": "books", "status": "completed", "created_at": T0}
TX_KEY = [TX["user_id"], T0, TX["transaction_id"]]  # CockroachDB's key order (docs/cockroachdb.md)
USER = {"user_id": "u000000001", "age": 31, "location_country": "DE", "signup_date": date(2024, 2, 29),
        "verification_status": "verified", "income_bracket": None, "created_at": T0, "updated_at": T0}
UPDATED = hlc(1_793_000_000_123_456_789, 2)


def change(data: bytes, attributes: dict[str, str] | None = None, published_ms: int | None = None) -> Change:
    parsed = parse_change(data, "precise", attributes, published_ms)
    assert isinstance(parsed, Change), parsed
    return parsed


@pytest.mark.parametrize("capitalized", [True, False])  # v23.2+ Key/Value/Topic; lowercase before
def test_wrapped_without_diff_or_updated(capitalized: bool) -> None:
    tx = change(changefeed_message("transactions", TX_KEY, TX, capitalized=capitalized), published_ms=1234)
    assert (tx.table, tx.op, tx.producer, tx.position, tx.ts_ms) == ("transactions", "u", "cockroachdb", 0, 1234)
    assert dict(tx.after or {}) == TX and tx.before is None
    assert dict(tx.key) == {"transaction_id": "t1", "created_at": T0} and tx.user_ids == ("u000000001",)


def test_the_position_is_the_updated_hlc_as_the_dialect_makes_a_watermark() -> None:
    tx = change(changefeed_message("transactions", TX_KEY, TX, updated=UPDATED, mvcc=hlc(1_793_000_000_000_000_000)))
    assert tx.position == COCKROACHDB.watermark(UPDATED) == (1_793_000_000_123_456_789 << 32) | 2
    assert tx.ts_ms == 1_793_000_000_123 and tx.transaction == UPDATED
    only_mvcc = change(changefeed_message("transactions", TX_KEY, TX, mvcc=UPDATED))
    assert only_mvcc.position == COCKROACHDB.watermark(UPDATED) and only_mvcc.mvcc == UPDATED
    assert hlc_position("1701102296662969433.0000000000") == COCKROACHDB.watermark("1701102296662969433.0000000000")


def test_wrapped_with_diff_tells_inserts_updates_and_deletes_apart() -> None:
    inserted = change(changefeed_message("users", ["u000000001"], USER, before=None, diff=True, updated=UPDATED))
    updated = change(changefeed_message("users", ["u000000001"], {**USER, "age": 32}, before=USER, diff=True))
    deleted = change(changefeed_message("users", ["u000000001"], None, before=USER, diff=True))
    assert (inserted.op, inserted.before) == ("c", None)
    assert updated.op == "u" and updated.before is not None and dict(updated.before) == USER
    assert deleted.op == "d" and deleted.after is None and dict(deleted.row) == USER


def test_a_moved_row_affects_both_users() -> None:
    moved = change(changefeed_message("transactions", TX_KEY, {**TX, "user_id": "u000000002"}, before=TX, diff=True))
    assert moved.user_ids == ("u000000001", "u000000002")


def test_a_delete_without_diff_carries_its_key_only() -> None:
    tx = change(changefeed_message("transactions", TX_KEY, None, updated=UPDATED))
    plan = change(changefeed_message("installment_plans", ["p1"], None))
    assert (tx.op, tx.before, tx.after) == ("d", None, None)
    assert dict(tx.key) == {"user_id": "u000000001", "created_at": T0, "transaction_id": "t1"}
    assert tx.user_ids == ("u000000001",) and tx.row_key == '["t1","2026-11-02T10:00:00.123456+00:00"]'
    assert plan.user_ids == () and dict(plan.key) == {"plan_id": "p1"}


def test_bare_envelope() -> None:
    user = change(changefeed_message("users", ["u000000001"], USER, updated=UPDATED, envelope="bare"))
    gone = change(changefeed_message("users", ["u000000001"], None, envelope="bare"))
    assert user.op == "u" and dict(user.after or {}) == USER and user.position == COCKROACHDB.watermark(UPDATED)
    assert gone.op == "d" and gone.user_ids == ("u000000001",)


@pytest.mark.parametrize("envelope", ["wrapped", "bare"])
def test_resolved_messages(envelope: str) -> None:
    resolved = parse_change(changefeed_resolved(UPDATED, envelope))
    assert resolved == Resolved(COCKROACHDB.watermark(UPDATED), UPDATED)


@pytest.mark.parametrize(("topic", "attributes"), [
    ("users", {}),
    ("feature_store.public.users", {}),  # full_table_name
    ("users.primary", {}),  # a column family appended to the table name
    ("cdc-changes", {"TABLE_NAME": "users"}),  # one topic_name for every table + with_table_name_attribute=true
])
def test_the_table_comes_from_the_attribute_or_the_topic(topic: str, attributes: dict[str, str]) -> None:
    assert change(changefeed_message(topic, ["u000000001"], USER), attributes).table == "users"


def test_an_infinite_timestamp_is_kept_raw() -> None:
    user = change(changefeed_message("users", ["u1"], {**USER, "user_id": "u1", "updated_at": "infinity"}))
    assert user.after is not None and user.after["updated_at"] == RawValue("infinity", "timestamp", "infinity")
    assert user.row["updated_at"] is None


def _raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize(("data", "attributes", "code"), [
    (changefeed_message("cdc-changes", ["u1"], USER), {}, "poison_unknown_table"),
    (changefeed_message("audit_log", [1], {"id": 1}), {}, "poison_unknown_table"),
    (changefeed_message("users", ["u1"], USER, updated="yesterday"), {}, "poison_invalid_value"),
    (changefeed_message("users", ["u1"], USER, mvcc="1.2.3"), {}, "poison_invalid_value"),
    (changefeed_message("users", ["u1"], {**USER, "age": "old"}), {}, "poison_invalid_value"),
    (changefeed_message("installments", ["p1"], None), {}, "poison_invalid_value"),  # key of two columns
    (changefeed_message("users", [], None), {}, "poison_invalid_value"),
    (_raw({"Key": ["u1"], "Value": "x", "Topic": "users"}), {}, "poison_not_changefeed"),
    (_raw({"Key": ["u1"], "Value": {"before": None}, "Topic": "users"}), {}, "poison_not_changefeed"),
    (_raw({"Key": ["u1"], "Value": {"after": [1]}, "Topic": "users"}), {}, "poison_not_changefeed"),
    (_raw({"Key": ["u1"], "Value": {"user_id": "u1", "__crdb__": 5}, "Topic": "users"}), {}, "poison_not_changefeed"),
    (_raw({"resolved": 17}), {}, "poison_invalid_value"),
    (_raw({"resolved": "1701102296662969433.9999999999"}), {}, "poison_invalid_value"),  # logical past 32 bits
])
def test_poison_changefeed_messages_say_why(data: bytes, attributes: dict[str, str], code: str) -> None:
    with pytest.raises(PoisonMessage) as raised:
        parse_change(data, "precise", attributes)
    assert raised.value.code == code and raised.value.message
