"""The Redis key layout and value encoding, pinned byte for byte (docs/redis-keys.md)."""

from __future__ import annotations

from feature_store.domain.state import LAYOUT, RecentOrder, UnpaidInstallment, UserState
from feature_store.stores.ports import Tombstone, Undecodable
from feature_store.stores.redis_online import KeyLayout, decode, encode


def test_keys_are_exactly_as_documented() -> None:
    layout = KeyLayout("fs")
    assert LAYOUT == 2
    assert layout.user("u000000042") == "fs:s2:u:u000000042"
    assert layout.user_pattern() == "fs:s2:u:*"
    assert layout.active("credit_decision") == "fs:credit_decision:active"
    assert KeyLayout("fs", 3).user("u1") == "fs:s3:u:u1"


def test_value_is_fixed_width_watermark_then_flat_json() -> None:
    s = UserState(user_id="u1", computed_at=1.5, watermark=0x16B374D848, age=30, location_country="DE",
                  recent_orders=(RecentOrder(2.0, 9.99, "m00001"),), late_paid_at=(1.25,),
                  unpaid=(UnpaidInstallment(20700, 25.0),))
    assert encode(s) == (
        "00000000000000016b374d848"[1:]
        + '[2,1.5,30,"DE",null,null,null,0,0.0,null,null,[[2.0,9.99,"m00001"]],'
        'null,null,null,null,null,0,0,0,[1.25],[[20700,25.0]]]'
    )
    assert decode("u1", encode(s).encode()) == s


def test_tombstone_encoding() -> None:
    t = Tombstone("u1", 255)
    assert encode(t) == "0000000000000000000000ff-"
    assert decode("u1", encode(t).encode()) == t


def test_a_value_that_cannot_be_read_is_undecodable_never_an_error() -> None:
    layout_1 = ("00000000000000016b374d848"[1:] + '[1,1.5,[30,"DE",null,null,null],[0,0.0,null,null],[],'
                '[null,null,null,null,null],[0,0,0,[],[]]]').encode()
    for raw in (layout_1, b"not-a-watermark" + b"x" * 20, b"\xff\xfe", b"0" * 24 + b"{}", b"0" * 24 + b"[2,1]",
                b"0" * 24 + b"[2" + b",1" * 21 + b"]", b""):
        assert decode("u1", raw) == Undecodable("u1", raw), raw
