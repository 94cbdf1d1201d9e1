"""Parsing Debezium change events (domain/changes.py): envelope shapes, value encodings, poison."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from feature_store.domain.changes import TABLES, parse_change, source_table
from feature_store.errors import PoisonMessage

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "emulators"))
from debezium_wire import debezium_event

COLUMNS: dict[str, dict[str, tuple[str, bool]]] = {
    "users": {"user_id": ("character varying(64)", False), "age": ("integer", True),
              "location_country": ("character(2)", True), "signup_date": ("date", False),
              "verification_status": ("character varying(20)", False),
              "income_bracket": ("character varying(20)", True),
              "created_at": ("timestamp with time zone", False), "updated_at": ("timestamp with time zone", False)},
    "transactions": {"transaction_id": ("character varying(64)", False), "user_id": ("character varying(64)", False),
                     "amount": ("numeric(12,2)", False), "currency": ("character(3)", False),
                     "merchant": ("character varying(100)", False), "category": ("character varying(50)", False),
                     "status": ("character varying(20)", False), "created_at": ("timestamp with time zone", False)},
}
T0 = datetime(2026, 11, 2, 10, 0, 0, 123456, tzinfo=UTC)
TX = {"transaction_id": "t1", "user_id": "u000000001", "amount": Decimal("12.50"), "currency": "USD",
      "merchant": "m1", "category": "books", "status": "completed", "created_at": T0}
USER = {"user_id": "u000000001", "age": 31, "location_country": "DE", "signup_date": date(2024, 2, 29),
        "verification_status": "verified", "income_bracket": None, "created_at": T0, "updated_at": T0}


def event(table: str = "transactions", op: str = "c", before: dict[str, Any] | None = None,
          after: dict[str, Any] | None = None, lsn: int = 0x16B374D848, with_schema: bool = False,
          source_table_name: str | None = None) -> bytes:
    data = debezium_event(server="fs", db="feature_store", table=table, op=op, lsn=lsn, commit_lsn=lsn + 100,
                          tx_id=777, ts_ms=1_793_000_000_000, before=before, after=after,
                          columns=COLUMNS[table], with_schema=with_schema)
    if source_table_name:
        body = json.loads(data)
        (body.get("payload") or body)["source"]["table"] = source_table_name
        data = json.dumps(body).encode()
    return data


def mutate(data: bytes, fn: Any) -> bytes:
    body = json.loads(data)
    fn(body)
    return json.dumps(body).encode()


@pytest.mark.parametrize("with_schema", [False, True])
def test_round_trip_of_every_debezium_encoding(with_schema: bool) -> None:
    tx = parse_change(event(after=TX, with_schema=with_schema))
    user = parse_change(event("users", "u", before={**USER, "age": 30}, after=USER, with_schema=with_schema))
    assert tx is not None and user is not None
    assert (tx.table, tx.op, tx.lsn, tx.ts_ms, tx.tx_id) == ("transactions", "c", 0x16B374D848, 1_793_000_000_000, 777)
    assert dict(tx.row) == TX
    assert dict(user.row) == USER and user.before is not None and user.before["age"] == 30


def test_debezium_wire_values_are_decoded_independently_of_the_relay() -> None:
    # 12.50 at scale 2 is the unscaled 1250 = 0x04E2; DATE is days since the epoch; TIMESTAMPTZ is ISO text.
    payload = {"op": "c", "before": None, "source": {"table": "transactions", "lsn": 5, "ts_ms": 1, "txId": None},
               "after": {"transaction_id": "t", "user_id": "u1", "amount": base64.b64encode(b"\x04\xe2").decode(),
                         "merchant": "m", "category": "c", "status": "pending", "created_at": "2026-11-02T10:00:00Z"}}
    change = parse_change(json.dumps(payload).encode())
    assert change is not None
    assert change.row["amount"] == Decimal("12.50")
    assert change.row["created_at"] == datetime(2026, 11, 2, 10, tzinfo=UTC)
    users = {"op": "r", "source": {"table": "users", "lsn": 5, "ts_ms": 1},
             "after": {"user_id": "u1", "signup_date": 19000, "verification_status": "pending"}}
    snap = parse_change(json.dumps(users).encode())
    assert snap is not None and snap.row["signup_date"] == date(2022, 1, 8)


def test_scale_comes_from_the_schema_part_when_present() -> None:
    def rescale(body: dict[str, Any]) -> None:
        for part in body["schema"]["fields"]:
            for col in part.get("fields", []) if part["field"] == "after" else []:
                if col["field"] == "amount":
                    col["parameters"]["scale"] = "3"

    change = parse_change(mutate(event(after=TX, with_schema=True), rescale))
    assert change is not None and change.row["amount"] == Decimal("1.250")


@pytest.mark.parametrize(("mode", "wire", "expected"), [
    ("string", "12.50", Decimal("12.50")), ("double", 12.5, Decimal("12.5")),
    ("precise", {"scale": 1, "value": base64.b64encode(b"\x7d").decode()}, Decimal("12.5")),
])
def test_other_decimal_handling_modes(mode: str, wire: Any, expected: Decimal) -> None:
    data = mutate(event(after=TX), lambda b: b["after"].__setitem__("amount", wire))
    change = parse_change(data, mode)  # type: ignore[arg-type]
    assert change is not None and change.row["amount"] == expected


def test_partitions_map_to_their_parent_table() -> None:
    change = parse_change(event(after=TX, source_table_name="transactions_2026_11"))
    assert change is not None and change.table == "transactions"
    assert source_table("transactions_2026_11") is TABLES["transactions"]
    assert source_table("transactions_archive") is None


@pytest.mark.parametrize("data", [b"", b"  ", b"null", b'{"schema": null, "payload": null}'])
def test_tombstones_are_not_changes(data: bytes) -> None:
    assert parse_change(data) is None


def test_affected_users_of_updates_and_deletes() -> None:
    moved = parse_change(event(op="u", before=TX, after={**TX, "user_id": "u000000002"}))
    deleted = parse_change(event(op="d", before=TX))
    assert moved is not None and moved.user_ids == ("u000000001", "u000000002")
    assert deleted is not None and deleted.user_ids == ("u000000001",) and deleted.row == deleted.before


def test_insert_id_is_stable_and_distinguishes_changes() -> None:
    a, again = parse_change(event(after=TX)), parse_change(event(after=TX, with_schema=True))
    later = parse_change(event(after=TX, lsn=0x16B374D900))
    other = parse_change(event(after={**TX, "transaction_id": "t2"}))
    assert a is not None and again is not None and later is not None and other is not None
    assert a.insert_id == again.insert_id
    assert len({a.insert_id, later.insert_id, other.insert_id}) == 3
    assert a.row_key == '["t1","2026-11-02T10:00:00.123456+00:00"]'


def _set(path: str, value: Any) -> Any:
    def apply(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for p in parents:
            node = node[p]
        if value is _DROP:
            del node[last]
        else:
            node[last] = value
    return apply


_DROP = object()


@pytest.mark.parametrize(("data", "code"), [
    (b"\xff\xfe not json", "poison_not_json"),
    (b"{not json", "poison_not_json"),
    (b"[1, 2]", "poison_not_debezium"),
    (b'{"hello": "world"}', "poison_not_debezium"),
    (mutate(event(after=TX), _set("op", "x")), "poison_not_debezium"),
    (mutate(event(after=TX), _set("op", "t")), "poison_unsupported_op"),
    (mutate(event(after=TX), _set("source.table", "schema_migrations")), "poison_unknown_table"),
    (mutate(event(after=TX), _set("source.lsn", "16/B374D848")), "poison_invalid_value"),
    (mutate(event(after=TX), _set("source.lsn", -1)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("source.ts_ms", _DROP)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after", None)), "poison_invalid_value"),
    (event(op="d", before=None, after=None), "poison_invalid_value"),
    (mutate(event(op="d", before=TX), _set("before.user_id", _DROP)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.transaction_id", _DROP)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.amount", "not base64!")), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.amount", base64.b64encode(b"\xff").decode())), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.status", None)), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.user_id", "")), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.created_at", "yesterday")), "poison_invalid_value"),
    (mutate(event(after=TX), _set("after.created_at", 1_793_000_000_000)), "poison_invalid_value"),
    (mutate(event("users", after=USER), _set("after.age", 200)), "poison_invalid_value"),
    (mutate(event("users", after=USER), _set("after.age", "31")), "poison_invalid_value"),
    (mutate(event("users", after=USER), _set("after.signup_date", 10**9)), "poison_invalid_value"),
])
def test_poison_messages_say_why(data: bytes, code: str) -> None:
    with pytest.raises(PoisonMessage) as raised:
        parse_change(data)
    assert raised.value.code == code
    assert raised.value.message


def test_unknown_columns_are_ignored_but_known_ones_checked() -> None:
    change = parse_change(mutate(event(after=TX), _set("after.new_column", {"any": "thing"})))
    assert change is not None and "new_column" not in change.row


def test_the_cdc_page_names_only_real_settings_and_poison_codes() -> None:
    import re

    from feature_store.settings import known_env_vars

    page = (Path(__file__).resolve().parents[2] / "docs" / "cdc.md").read_text()
    named = set(re.findall(r"FS_[A-Z_]+[A-Z]", page))
    assert named and named <= known_env_vars(), sorted(named - known_env_vars())
    source = (Path(__file__).resolve().parents[2] / "shared" / "feature_store").rglob("*.py")
    codes = set(re.findall(r'"(poison_[a-z_]+)"', "".join(p.read_text() for p in source)))
    assert codes and all(f"`{c}`" in page for c in codes), sorted(c for c in codes if f"`{c}`" not in page)
