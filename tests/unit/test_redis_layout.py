"""The Redis key layout and value encoding, pinned byte for byte (docs/redis-keys.md)."""

from __future__ import annotations

from feature_store.domain.state import RecentOrder, UserState
from feature_store.stores.redis_online import KeyLayout, Tombstone, decode, encode


def test_keys_are_exactly_as_documented() -> None:
    layout = KeyLayout("fs", "credit_decision", 1)
    assert layout.user("u000000042") == "fs:credit_decision:v1:u:u000000042"
    assert layout.user_pattern() == "fs:credit_decision:v1:u:*"
    assert KeyLayout.active("fs", "credit_decision") == "fs:credit_decision:active"


def test_value_is_fixed_width_watermark_then_compact_json() -> None:
    s = UserState(user_id="u1", computed_at=1.5, watermark=0x16B374D848, age=30, location_country="DE",
                  recent_orders=(RecentOrder(2.0, 9.99, "m00001"),))
    assert encode(s) == (
        "00000000000000016b374d848"[1:]
        + '[1,1.5,[30,"DE",null,null,null],[0,0.0,null,null],[[2.0,9.99,"m00001"]],'
        '[null,null,null,null,null],[0,0,0,[],[]]]'
    )
    assert decode("u1", encode(s).encode()) == s


def test_tombstone_encoding() -> None:
    t = Tombstone("u1", 255)
    assert encode(t) == "0000000000000000000000ff-"
    assert decode("u1", encode(t)) == t
