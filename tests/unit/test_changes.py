"""Parsing Debezium messages (domain/changes.py): envelope shapes, value encodings, the messages
around row changes, unusual values kept, poison. Messages come from tests/producers.py, built from
Debezium's documentation (cited there), not from our relay."""

from __future__ import annotations

import base64
import json
import re
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.domain.changes import (
    TABLES,
    Change,
    Heartbeat,
    RawValue,
    Tombstone,
    TransactionBoundary,
    parse_change,
    source_table,
)
from feature_store.errors import PoisonMessage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from producers import debezium_change, debezium_heartbeat, debezium_logical_message, debezium_transaction, precise

T0 = datetime(2026, 11, 2, 10, 0, 0, 123456, tzinfo=UTC)
TX = {"transaction_id": "t1", "user_id": "u000000001", "amount": Decimal("12.50"), "currency": "USD",
      "merchant": "m1", "category": "books", "status": "completed", "created_at": T0}
USER = {"user_id": "u000000001", "age": 31, "location_country": "DE", "signup_date": date(2024, 2, 29),
        "verification_status": "verified", "income_bracket": None, "created_at": T0, "updated_at": T0}
LSN = 0x16B374D848


def event(table: str = "transactions", op: str = "c", before: dict[str, Any] | None = None,
          after: dict[str, Any] | None = None, **options: Any) -> bytes:
    return debezium_change(table, op, before, after, lsn=options.pop("lsn", LSN), **options)


def change(data: bytes, *args: Any) -> Change:
    parsed = parse_change(data, *args)
    assert isinstance(parsed, Change), parsed
    return parsed


def mutate(data: bytes, fn: Any) -> bytes:
    body = json.loads(data)
    fn(body)
    return json.dumps(body).encode()


_DROP = object()


def _set(path: str, value: Any) -> Any:
    def apply(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        key: Any = int(last) if isinstance(node, list) else last
        if value is _DROP:
            del node[key]
        else:
            node[key] = value
    return apply


@pytest.mark.parametrize("with_schema", [False, True])
@pytest.mark.parametrize("decimals", ["precise", "string", "double"])
def test_round_trip_of_every_debezium_encoding(with_schema: bool, decimals: str) -> None:
    tx = change(event(after=TX, with_schema=with_schema, decimals=decimals), decimals)
    user = change(event("users", "u", before={**USER, "age": 30}, after=USER, with_schema=with_schema))
    assert (tx.table, tx.op, tx.position, tx.ts_ms, tx.tx_id) == ("transactions", "c", LSN, 1_793_000_000_000, 771)
    assert dict(tx.after or {}) == TX and tx.before is None and tx.producer == "debezium"
    assert dict(tx.key) == {"transaction_id": "t1", "created_at": T0}
    assert dict(user.row) == USER and user.before is not None and user.before["age"] == 30


def test_debezium_wire_values_are_decoded_independently_of_any_encoder() -> None:
    # 12.50 at scale 2 is the unscaled 1250 = 0x04E2; DATE is days since the epoch; TIMESTAMPTZ is ISO text.
    payload = {"op": "c", "before": None, "source": {"table": "transactions", "lsn": 5, "ts_ms": 1, "txId": None},
               "after": {"transaction_id": "t", "user_id": "u1", "amount": base64.b64encode(b"\x04\xe2").decode(),
                         "merchant": "m", "category": "c", "status": "pending", "created_at": "2026-11-02T10:00:00Z"}}
    tx = change(json.dumps(payload).encode())
    assert tx.row["amount"] == Decimal("12.50")
    assert tx.row["created_at"] == datetime(2026, 11, 2, 10, tzinfo=UTC)
    users = {"op": "r", "source": {"table": "users", "lsn": 5, "ts_ms": 1},
             "after": {"user_id": "u1", "signup_date": 19000, "verification_status": "pending"}}
    assert change(json.dumps(users).encode()).row["signup_date"] == date(2022, 1, 8)


def test_scale_comes_from_the_schema_part_when_present() -> None:
    def rescale(body: dict[str, Any]) -> None:
        for col in body["schema"]["fields"][1]["fields"]:
            if col["field"] == "amount":
                col["parameters"]["scale"] = "3"

    assert change(mutate(event(after=TX, with_schema=True), rescale)).row["amount"] == Decimal("1.250")


@pytest.mark.parametrize(("configured", "wire", "expected"), [
    # The connector's mode and FS_CDC_DECIMAL_HANDLING_MODE disagree, no schema part: the value's shape decides.
    ("precise", "12.50", Decimal("12.50")),  # string mode: a decimal literal is no base64
    ("precise", 12.5, Decimal("12.5")),  # double mode: a JSON number
    ("string", precise(Decimal("12.50"), 2), Decimal("12.50")),  # precise: base64 that is no decimal literal
    ("double", precise(Decimal("12.50"), 2), Decimal("12.50")),
    ("string", {"scale": 1, "value": base64.b64encode(b"\x7d").decode()}, Decimal("12.5")),  # VariableScaleDecimal
    # "1250" is both a decimal literal and base64: only there the configured mode decides.
    ("string", "1250", Decimal("1250")),
    ("precise", "AAAE4g==", Decimal("12.50")),
])
def test_a_decimal_is_read_from_its_own_shape_whatever_the_configured_mode(configured: str, wire: Any,
                                                                          expected: Decimal) -> None:
    data = mutate(event(after=TX), _set("after.amount", wire))
    assert change(data, configured).row["amount"] == expected


def test_text_that_is_both_base64_and_a_number_is_read_the_way_that_fits_the_column() -> None:
    # "1250" in string mode under FS_CDC_DECIMAL_HANDLING_MODE=precise: as base64 it is 0xD76E74, a
    # negative unscaled value that CHECK (amount >= 0) rules out, so the decimal literal is meant.
    data = mutate(event(after=TX), _set("after.amount", "1250"))
    assert change(data, "precise").row["amount"] == Decimal("1250")
    assert change(data, "string").row["amount"] == Decimal("1250")


def test_partitions_map_to_their_parent_table() -> None:
    tx = change(mutate(event(after=TX), _set("source.table", "transactions_2026_11")))
    assert tx.table == "transactions"
    assert source_table("transactions_2026_11") is TABLES["transactions"]
    assert source_table("transactions_archive") is None


@pytest.mark.parametrize("data", [b"", b"  ", b"null", b'{"schema": null, "payload": null}'])
def test_tombstones_are_recognised(data: bytes) -> None:
    assert parse_change(data) == Tombstone()


@pytest.mark.parametrize("with_schema", [False, True])
def test_heartbeats_are_recognised(with_schema: bool) -> None:
    assert parse_change(debezium_heartbeat(1_793_000_000_000, with_schema)) == Heartbeat(1_793_000_000_000)
    assert parse_change(debezium_logical_message(1_793_000_000_001, LSN)) == Heartbeat(1_793_000_000_001)


@pytest.mark.parametrize("with_schema", [False, True])
def test_transaction_metadata_is_recognised(with_schema: bool) -> None:
    begin = parse_change(debezium_transaction("BEGIN", "571:53736280", 1_793_000_000_000, None, with_schema))
    end = parse_change(debezium_transaction("END", "571:53736280", 1_793_000_000_005,
                                            {"transactions": 2, "users": 1}, with_schema))
    assert begin == TransactionBoundary("BEGIN", "571:53736280", None, 1_793_000_000_000)
    assert end == TransactionBoundary("END", "571:53736280", 3, 1_793_000_000_005)
    tx = change(event(after=TX, transaction={"id": "571:53736280", "total_order": 2, "data_collection_order": 1}))
    assert (tx.transaction, tx.order) == ("571:53736280", 2)


@pytest.mark.parametrize("wire", ["infinity", "-infinity"])
def test_an_infinite_timestamp_is_kept_raw_and_the_change_applies(wire: str) -> None:
    user = change(event("users", "u", before=USER, after={**USER, "updated_at": wire}))
    assert user.after is not None and user.after["updated_at"] == RawValue(wire, "timestamp", "infinity")
    assert user.raw_values == ("after.updated_at",)
    assert user.row["updated_at"] is None and user.user_ids == ("u000000001",)


def test_values_past_what_python_holds_are_kept_raw() -> None:
    far = 3_000_000  # days after 1970: year 10183, a legal PostgreSQL DATE
    user = change(mutate(event("users", after=USER), _set("after.signup_date", far)))
    assert user.row["signup_date"] is None and user.after is not None
    assert user.after["signup_date"] == RawValue(far, "date", "out_of_range")
    stamp = change(mutate(event("users", after=USER), _set("after.created_at", "12026-11-02T10:00:00Z")))
    assert stamp.raw_values == ("after.created_at",)
    nan = change(mutate(event(after=TX), _set("after.amount", "NaN")), "string")
    assert nan.after is not None and nan.after["amount"] == RawValue("NaN", "decimal", "not_finite")


def test_micro_timestamps_with_a_schema_and_debeziums_infinity_sentinel() -> None:
    def micro(value: int) -> Any:
        def apply(body: dict[str, Any]) -> None:
            for part in body["schema"]["fields"][:2]:
                for col in part["fields"]:
                    if col["field"] == "created_at":
                        col.update(type="int64", name="io.debezium.time.MicroTimestamp")
            body["payload"]["after"]["created_at"] = value
        return apply

    at = int(T0.timestamp() * 10**6)
    assert change(mutate(event(after=TX, with_schema=True), micro(at))).row["created_at"] == T0
    raw = change(mutate(event(after=TX, with_schema=True), micro(2**63 - 1)))
    assert raw.after is not None and raw.after["created_at"] == RawValue(2**63 - 1, "timestamp", "infinity")


def test_affected_users_of_updates_moves_and_deletes() -> None:
    moved = change(event(op="u", before=TX, after={**TX, "user_id": "u000000002"}))
    deleted = change(event(op="d", before=TX))
    assert moved.user_ids == ("u000000001", "u000000002")
    assert deleted.user_ids == ("u000000001",) and dict(deleted.row) == TX and deleted.after is None


def test_a_delete_with_only_its_key_is_a_change_that_may_name_no_user() -> None:
    # REPLICA IDENTITY DEFAULT: Debezium's before holds the primary key only.
    plan = change(event("installment_plans", "d", before={"plan_id": "p1"}))
    user = change(event("users", "d", before={"user_id": "u9"}))
    assert (plan.op, dict(plan.key), plan.user_ids) == ("d", {"plan_id": "p1"}, ())
    assert user.user_ids == ("u9",) and dict(user.row) == {"user_id": "u9"}


def test_insert_id_is_stable_and_distinguishes_changes() -> None:
    a, again = change(event(after=TX)), change(event(after=TX, with_schema=True))
    later = change(event(after=TX, lsn=LSN + 200))
    other = change(event(after={**TX, "transaction_id": "t2"}))
    assert a.insert_id == again.insert_id
    assert len({a.insert_id, later.insert_id, other.insert_id}) == 3
    assert a.row_key == '["t1","2026-11-02T10:00:00.123456+00:00"]' and a.lsn == LSN


@pytest.mark.parametrize(("data", "code"), [
    (b"\xff\xfe not json", "poison_not_json"),
    (b"{not json", "poison_not_json"),
    (b"[" * 5000 + b"]" * 5000, "poison_too_deep"),  # json.loads itself would hit RecursionError at ~1000
    (b"[" * 40 + b"]" * 40, "poison_too_deep"),
    (b"[1, 2]", "poison_unknown_format"),
    (b'{"hello": "world"}', "poison_unknown_format"),
    (mutate(event(after=TX), _set("op", "x")), "poison_not_debezium"),
    (mutate(event(after=TX), _set("op", "t")), "poison_unsupported_op"),
    (mutate(event(after=TX), _set("source", "fs")), "poison_not_debezium"),
    (mutate(event(after=TX), _set("after", [1])), "poison_not_debezium"),
    (mutate(event(after=TX, with_schema=True), _set("schema.fields.1.fields.0.field", ["x"])), "poison_not_debezium"),
    (mutate(event(after=TX, with_schema=True), _set("schema.fields", {"a": 1})), "poison_not_debezium"),
    (mutate(event(after=TX), _set("source.table", "schema_migrations")), "poison_unknown_table"),
    (mutate(event(after=TX), _set("source.lsn", "16/B374D848")), "poison_invalid_value"),
    (mutate(event(after=TX), _set("source.lsn", -1)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("source.ts_ms", _DROP)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after", None)), "poison_invalid_value"),
    (event(op="d", before=None, after=None), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.transaction_id", _DROP)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.amount", "not base64!")), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.amount", base64.b64encode(b"\xff").decode())), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.amount", {"scale": 2})), "poison_invalid_value"),  # struct missing value
    (mutate(event(after=TX), _set("after.amount", {"value": "BOI="})), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.status", None)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.user_id", "")), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.created_at", "yesterday")), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.created_at", 1_793_000_000_000)), "poison_invalid_value"),
    (mutate(event("users", after=USER), _set("after.age", 200)), "poison_invalid_value"),
    (mutate(event("users", after=USER), _set("after.age", "31")), "poison_invalid_value"),
    (mutate(event("users", after=USER), _set("after.signup_date", True)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("transaction", {"id": 5})), "poison_not_debezium"),
    (json.dumps({"status": "COMMIT", "id": "1"}).encode(), "poison_not_debezium"),
])
def test_poison_messages_say_why(data: bytes, code: str) -> None:
    with pytest.raises(PoisonMessage) as raised:
        parse_change(data)
    assert raised.value.code == code
    assert raised.value.message


SECRET_USER = "u-secret-4242"


@pytest.mark.parametrize("breaks", [
    _set("after.amount", "1e999"), _set("after.amount", {"scale": 2}), _set("after.created_at", "yesterday"),
    _set("after.status", None), _set("source.lsn", "x"), _set("after.merchant", 77),
])
def test_poison_reasons_name_fields_never_values(breaks: Any) -> None:
    data = mutate(event(after={**TX, "user_id": SECRET_USER, "merchant": "merchant-secret-99"}), breaks)
    with pytest.raises(PoisonMessage) as raised:
        parse_change(data)
    for secret in (SECRET_USER, "merchant-secret-99", "1e999", "yesterday", "77"):
        assert secret not in raised.value.message


def test_unknown_columns_are_ignored_but_known_ones_checked() -> None:
    tx = change(mutate(event(after=TX), _set("after.new_column", {"any": "thing"})))
    assert tx.after is not None and "new_column" not in tx.after


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_anything_parses_or_is_poison_never_another_exception(data: bytes) -> None:
    try:
        parse_change(data)
    except PoisonMessage as exc:
        assert exc.code.startswith("poison_")


def test_the_cdc_page_names_only_real_settings_and_poison_codes() -> None:
    from feature_store.settings import known_env_vars

    page = (Path(__file__).resolve().parents[2] / "docs" / "cdc.md").read_text()
    named = set(re.findall(r"FS_[A-Z_]+[A-Z]", page))
    assert named and named <= known_env_vars(), sorted(named - known_env_vars())
    source = (Path(__file__).resolve().parents[2] / "shared" / "feature_store").rglob("*.py")
    codes = set(re.findall(r'"(poison_[a-z_]+)"', "".join(p.read_text() for p in source)))
    assert codes and all(f"`{c}`" in page for c in codes), sorted(c for c in codes if f"`{c}`" not in page)
