"""The Redis key layout and value encoding, pinned byte for byte (docs/redis-keys.md)."""

from __future__ import annotations

import math
import struct

import pytest

from feature_store.domain.state import COUNTRIES, LAYOUT, RecentOrder, UnpaidInstallment, UserState
from feature_store.domain.state_binary import HEAD, pack
from feature_store.stores.ports import Tombstone, Undecodable
from feature_store.stores.redis_online import KeyLayout, decode, encode

WATERMARK = b"0000000000000016b374d848"


def test_keys_are_exactly_as_documented() -> None:
    layout = KeyLayout("fs")
    assert LAYOUT == 3
    assert layout.user("u000000042") == "fs:s3:u:u000000042"
    assert layout.user_pattern() == "fs:s3:u:*"
    assert layout.active("credit_decision") == "fs:credit_decision:active"
    assert layout.rate("lender-a") == "fs:rl:lender-a"
    assert KeyLayout("fs", 2).user("u1") == "fs:s2:u:u1"


def _state() -> UserState:
    return UserState(user_id="u1", computed_at=1.5, watermark=0x16B374D848, age=30, location_country="DE",
                     verification_status="verified", total_orders=2, total_spent=12.5, last_order_at=2.0,
                     favorite_category="books", recent_orders=(RecentOrder(2.0, 9.99, "m00001"),
                                                               RecentOrder(3.25, 0.01, "Café")),
                     risk_score=0.078, late_paid_at=(1.25,), unpaid=(UnpaidInstallment(20700, 25.0),))


def test_value_is_fixed_width_watermark_then_the_binary_body() -> None:
    de, books = COUNTRIES.index("DE") + 1, 9
    assert encode(_state()) == (
        WATERMARK
        + bytes([3])                                          # layout
        + struct.pack(">d", 1.5)                              # computed_at
        + b"\x00\x1e" + bytes([de, 2, 0])                     # age 30, DE, verified, income null
        + b"\xff\xff" + b"\x00\x02" + struct.pack(">I", 1250)  # signup_day null, 2 orders, 12.50 spent
        + struct.pack(">d", 2.0) + bytes([books, 2])          # last_order_at, books, 2 recent orders
        + b"\x00\x4e" + b"\xff\xff" * 4                       # risk 0.078, the other risk fields null
        + b"\x00\x00" * 3 + bytes([1, 1])                     # plans, on time, late; 1 late payment, 1 unpaid
        + struct.pack(">dd", 2.0, 3.25) + struct.pack(">II", 999, 1)   # recent orders: at, cents
        + struct.pack(">d", 1.25)                             # late_paid_at
        + struct.pack(">H", 20700) + struct.pack(">I", 2500)  # unpaid: due day, cents
        + "m00001\0Café".encode()                             # the merchants, NUL-separated
    )
    assert HEAD.size == 50
    assert decode("u1", encode(_state())) == _state()


def test_decoded_values_are_exactly_the_stored_ones() -> None:
    state = decode("u1", encode(_state()))
    assert isinstance(state, UserState)
    assert state.total_spent == 12.5 and type(state.total_spent) is float
    assert state.recent_orders == ((2.0, 9.99, "m00001"), (3.25, 0.01, "Café"))
    assert state.risk_score == 0.078 and state.fraud_probability is None
    assert state.income_bracket is None and state.signup_day is None and state.last_order_at == 2.0


@pytest.mark.parametrize("change", [
    {"total_spent": 0.125},                       # not a whole number of cents
    {"risk_score": 0.0781},                       # not a thousandth
    {"location_country": "XX"},                   # outside the vocabulary
    {"favorite_category": "pets"},
    {"total_orders": 70_000},                     # past 16 bits
    {"signup_day": -1},                           # before 1970
    {"recent_orders": ((1.0, 2.0, "a\0b"),)},     # a merchant holding the separator
    {"recent_orders": ((1.0, 2.0, "m"),) * 256},  # more elements than a count byte holds
    {"unpaid": ((1, 2.001),)},
    {"total_spent": 3},                           # an int where a float is declared
])
def test_a_state_the_binary_body_cannot_hold_is_cached_exactly_as_json(change: dict[str, object]) -> None:
    state = UserState(user_id="u1", computed_at=1.5, watermark=255, **change)  # type: ignore[arg-type]
    assert pack(state) is None
    value = encode(state)
    assert value[24:25] == b"[" and value.startswith(b"0000000000000000000000ff[3,1.5,")
    back = decode("u1", value)
    assert back == state and [type(getattr(back, k)) for k in change] == [type(v) for v in change.values()]


def test_a_value_json_cannot_hold_either_is_not_packed() -> None:
    assert pack(UserState(user_id="u1", computed_at=1.5, watermark=1, last_order_at=math.inf)) is None


def test_json_form_is_layout_2s_list_with_the_new_layout_number() -> None:
    state = UserState(user_id="u1", computed_at=1.5, watermark=0x16B374D848, age=30, location_country="ZZ",
                      recent_orders=(RecentOrder(2.0, 9.99, "m00001"),), late_paid_at=(1.25,),
                      unpaid=(UnpaidInstallment(20700, 25.0),))
    assert encode(state) == (
        WATERMARK + b'[3,1.5,30,"ZZ",null,null,null,0,0.0,null,null,[[2.0,9.99,"m00001"]],'
        b'null,null,null,null,null,0,0,0,[1.25],[[20700,25.0]]]'
    )
    assert decode("u1", encode(state)) == state


def test_tombstone_encoding() -> None:
    t = Tombstone("u1", 255)
    assert encode(t) == b"0000000000000000000000ff-"
    assert decode("u1", encode(t)) == t


def test_a_value_that_cannot_be_read_is_undecodable_never_an_error() -> None:
    layout_1 = (WATERMARK + b'[1,1.5,[30,"DE",null,null,null],[0,0.0,null,null],[],'
                b'[null,null,null,null,null],[0,0,0,[],[]]]')
    layout_2 = WATERMARK + b'[2,1.5,30,"DE",null,null,null,0,0.0,null,null,[],null,null,null,null,null,0,0,0,[],[]]'
    body = encode(_state())
    for raw in (layout_1, layout_2, b"not-a-watermark" + b"x" * 20, b"\xff\xfe", b"0" * 24 + b"{}",
                b"0" * 24 + b"[3,1]", b"0" * 24 + b"[3" + b",1" * 21 + b"]", b"", b"0" * 24, body[:-1],
                body + b"\0x", body[:70],
                body[:24] + b"\x02" + body[25:],  # another layout's byte
                body[:35] + b"\xff" + body[36:]):  # a country past the end of the vocabulary
        assert decode("u1", raw) == Undecodable("u1", raw), raw
