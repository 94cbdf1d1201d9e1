"""The relay's decoding of logical-decoding output (wal2json v2, test_decoding) and Debezium value encoding."""

from __future__ import annotations

import base64
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "emulators"))
from debezium_wire import (
    debezium_value,
    decode_test_decoding,
    decode_wal2json,
    format_lsn,
    parse_lsn,
    parse_timestamptz,
)

# As PostgreSQL 15 + wal2json 2.5 print them (format-version 2, include-xids/timestamp/lsn, no types).
WAL2JSON_ROWS = [
    ("1/F48F9C80", "2545", '{"action":"B","xid":2545,"timestamp":"2026-11-23 15:22:22.965353+00",'
                           '"lsn":"1/F48F9D08","nextlsn":"1/F48F9D38"}'),
    ("1/F48F9C80", "2545", '{"action":"U","xid":2545,"lsn":"1/F48F9C80","schema":"public",'
                           '"table":"transactions_2026_11",'
                           '"columns":[{"name":"user_id","value":"u3"},{"name":"amount","value":12.50}],'
                           '"identity":[{"name":"user_id","value":"u1"},{"name":"amount","value":12.50}]}'),
    ("1/F48F9D38", "2545", '{"action":"C","xid":2545,"timestamp":"2026-11-23 15:22:22.965353+00",'
                           '"lsn":"1/F48F9D08","nextlsn":"1/F48F9D38"}'),
    ("1/F48F9D38", "2546", '{"action":"B","xid":2546,"timestamp":"2026-11-23 15:22:23+00"}'),
    ("1/F48F9D38", "2546", '{"action":"D","xid":2546,"lsn":"1/F48F9D38","schema":"public","table":"users",'
                           '"identity":[{"name":"user_id","value":"u2"}]}'),
    ("1/F48F9DB0", "2546", '{"action":"C","xid":2546,"timestamp":"2026-11-23 15:22:23+00"}'),
    ("1/F48F9DB0", "2547", '{"action":"B","xid":2547,"timestamp":"2026-11-23 15:22:23+00"}'),
    ("1/F48F9F38", "2547", '{"action":"M","xid":2547,"transactional":true,"prefix":"hb","content":""}'),
    ("1/F48F9F68", "2547", '{"action":"C","xid":2547,"timestamp":"2026-11-23 15:22:23+00"}'),
]

TEST_DECODING_ROWS = [
    ("1/F48FA250", "2551", "BEGIN 2551"),
    ("1/F48FA250", "2551", "table public.users: INSERT: user_id[character varying]:'u''5 x' age[integer]:30 "
                           "income_bracket[character varying]:null"),
    ("1/F48FA478", "2551", "COMMIT 2551 (at 2026-11-23 15:22:26.311867+00)"),
    ("1/F48FA478", "2552", "BEGIN 2552"),
    ("1/F48FA480", "2552", "table public.transactions_2026_11: UPDATE: old-key: user_id[character varying]:'u1' "
                           "amount[numeric]:1.50 new-tuple: user_id[character varying]:'u6' amount[numeric]:1.50"),
    ("1/F48FA4F0", "2552", "table public.users: DELETE: user_id[character varying]:'u9' age[integer]:null"),
    ("1/F48FA530", "2552", "COMMIT 2552 (at 2026-11-23 15:22:26.312839+00)"),
]


def test_wal2json_transactions_carry_commit_positions_and_row_images() -> None:
    txns = decode_wal2json(WAL2JSON_ROWS)
    assert [t.xid for t in txns] == [2545, 2546, 2547]
    assert [format_lsn(t.commit_lsn) for t in txns] == ["1/F48F9D38", "1/F48F9DB0", "1/F48F9F68"]
    update, delete = txns[0].changes[0], txns[1].changes[0]
    assert (update.table, update.op, format_lsn(update.lsn)) == ("transactions_2026_11", "u", "1/F48F9C80")
    assert update.before == {"user_id": "u1", "amount": Decimal("12.50")}
    assert update.after == {"user_id": "u3", "amount": Decimal("12.50")}
    assert (delete.op, delete.before, delete.after) == ("d", {"user_id": "u2"}, None)
    assert txns[2].changes == []  # a heartbeat: a commit to confirm, nothing to deliver
    assert txns[0].commit_ts_ms == 1795447342965


def test_test_decoding_transactions() -> None:
    txns = decode_test_decoding(TEST_DECODING_ROWS)
    assert [format_lsn(t.commit_lsn) for t in txns] == ["1/F48FA478", "1/F48FA530"]
    insert, (update, delete) = txns[0].changes[0], txns[1].changes
    assert insert.after == {"user_id": "u'5 x", "age": "30", "income_bracket": None}
    assert (update.op, update.before, update.after) == ("u", {"user_id": "u1", "amount": "1.50"},
                                                        {"user_id": "u6", "amount": "1.50"})
    assert (delete.op, delete.before, format_lsn(delete.lsn)) == ("d", {"user_id": "u9", "age": None}, "1/F48FA4F0")
    assert txns[1].commit_ts_ms == 1795447346312


@pytest.mark.parametrize(("pg_type", "value", "wire"), [
    ("numeric(12,2)", Decimal("12.50"), base64.b64encode(b"\x04\xe2").decode()),
    ("numeric(12,2)", "0.00", base64.b64encode(b"\x00").decode()),
    ("numeric(5,3)", Decimal("0.128"), base64.b64encode(b"\x00\x80").decode()),  # sign bit needs a byte
    ("numeric", Decimal("-1.5"), {"scale": 1, "value": base64.b64encode(b"\xf1").decode()}),
    ("date", "2026-11-02", (date(2026, 11, 2) - date(1970, 1, 1)).days),
    ("timestamp with time zone", "2026-11-02 10:00:00.5+01", "2026-11-02T09:00:00.500000Z"),
    ("integer", "30", 30),
    ("character(2)", "DE", "DE"),
    ("integer", None, None),
])
def test_debezium_value_encodings(pg_type: str, value: object, wire: object) -> None:
    assert debezium_value(pg_type, value) == wire


def test_lsn_text_round_trip() -> None:
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert parse_timestamptz("2026-11-23 15:22:22+00") == datetime(2026, 11, 23, 15, 22, 22, tzinfo=UTC)
