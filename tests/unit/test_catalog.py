"""The feature catalog and the pure finishing of a user state into feature values."""

from __future__ import annotations

import pytest

from feature_store.domain.catalog import CATALOG, CREDIT_DECISION_V1, Instant, get_feature_set
from feature_store.domain.state import RecentOrder, UnpaidInstallment, UserState
from feature_store.errors import NotFound, UnknownFeature

NOW = 1_790_000_000.0  # a fixed instant
DAY = 86400

GROUPS = {
    "demographics": ["age", "location_country", "verification_status", "income_bracket", "days_since_signup"],
    "behavior": ["total_orders", "avg_order_value", "total_spent", "last_order_days", "favorite_category"],
    "risk": ["risk_score", "fraud_probability", "payment_delays", "device_trust_score", "credit_utilization"],
    "repayment": ["outstanding_balance", "open_plans", "max_days_past_due", "late_payments_90d", "on_time_rate"],
    "velocity": ["orders_1h", "orders_24h", "orders_7d", "amount_24h", "amount_7d", "distinct_merchants_7d"],
}


def state(**kw: object) -> UserState:
    return UserState(user_id="u1", computed_at=NOW, watermark=1, **kw)  # type: ignore[arg-type]


def test_credit_decision_v1_has_exactly_the_issue_groups() -> None:
    fs = get_feature_set("credit_decision", 1)
    got: dict[str, list[str]] = {}
    for f in fs.features:
        got.setdefault(f.group, []).append(f.name)
    assert got == GROUPS


def test_every_feature_declares_type_default_and_description() -> None:
    for fs in CATALOG.values():
        for f in fs.features:
            assert f.dtype in {"int64", "float64", "string"}
            assert f.description.endswith(".") and len(f.description) > 10
            if f.default is not None:
                assert isinstance(f.default, {"int64": int, "float64": float, "string": str}[f.dtype])


def test_a_user_with_no_data_gets_each_declared_default() -> None:
    values = CREDIT_DECISION_V1.evaluate(state(), Instant(NOW))
    for f in CREDIT_DECISION_V1.features:
        assert values[f.group][f.name] == f.default, f.name


def test_velocity_is_exact_at_the_instant_asked() -> None:
    placed = NOW - 59 * 60
    s = state(recent_orders=(RecentOrder(placed, 50.0, "m1"), RecentOrder(NOW - 2 * DAY, 20.0, "m2")))

    before = CREDIT_DECISION_V1.evaluate(s, Instant(NOW))["velocity"]
    after = CREDIT_DECISION_V1.evaluate(s, Instant(NOW + 61))["velocity"]
    week_later = CREDIT_DECISION_V1.evaluate(s, Instant(placed + 7 * DAY + 1))["velocity"]

    assert before == {"orders_1h": 1, "orders_24h": 1, "orders_7d": 2, "amount_24h": 50.0, "amount_7d": 70.0,
                      "distinct_merchants_7d": 2}
    assert after["orders_1h"] == 0 and after["orders_24h"] == 1
    assert week_later["orders_7d"] == 0 and week_later["amount_7d"] == 0.0


def test_repayment_features_move_with_the_calendar() -> None:
    today = int(NOW // DAY)
    s = state(unpaid=(UnpaidInstallment(today - 10, 25.0), UnpaidInstallment(today + 4, 25.0)),
              paid_on_time=6, paid_late=1, late_paid_at=(NOW - 30 * DAY, NOW - 100 * DAY), open_plans=1)

    now = CREDIT_DECISION_V1.evaluate(s, Instant(NOW))["repayment"]
    later = CREDIT_DECISION_V1.evaluate(s, Instant(NOW + 5 * DAY))["repayment"]

    assert now == {"outstanding_balance": 50.0, "open_plans": 1, "max_days_past_due": 10,
                   "late_payments_90d": 1, "on_time_rate": round(6 / 8, 3)}
    assert later["max_days_past_due"] == 15
    assert later["on_time_rate"] == round(6 / 9, 3)  # the second installment fell due unpaid


def test_behavior_and_demographics_finish_from_anchors() -> None:
    s = state(total_orders=4, total_spent=100.0, last_order_at=NOW - 3.5 * DAY, favorite_category="books",
              signup_day=int(NOW // DAY) - 400, age=30)
    values = CREDIT_DECISION_V1.evaluate(s, Instant(NOW))
    assert values["behavior"] == {"total_orders": 4, "avg_order_value": 25.0, "total_spent": 100.0,
                                  "last_order_days": 3, "favorite_category": "books"}
    assert values["demographics"]["days_since_signup"] == 400


def test_selecting_features_keeps_catalog_order_and_rejects_unknown_names() -> None:
    picked = CREDIT_DECISION_V1.select(["orders_1h", "age"])
    assert picked.names == ("age", "orders_1h")
    assert CREDIT_DECISION_V1.select(["age", "orders_1h"]) is picked
    with pytest.raises(UnknownFeature) as caught:
        CREDIT_DECISION_V1.select(["age", "credit_scroe"])
    assert "'credit_scroe'" in caught.value.message


def test_unknown_feature_set_or_version() -> None:
    with pytest.raises(NotFound):
        get_feature_set("nope")
    with pytest.raises(NotFound):
        get_feature_set("credit_decision", 99)


def test_state_round_trips_through_its_compact_form() -> None:
    s = state(age=40, recent_orders=(RecentOrder(NOW, 1.5, "m"),), unpaid=(UnpaidInstallment(3, 2.5),),
              late_paid_at=(NOW,), favorite_category="x")
    assert UserState.from_compact("u1", 1, s.to_compact()) == s


def test_a_selection_computes_exactly_the_full_vectors_values() -> None:
    today = int(NOW // DAY)
    s = state(recent_orders=(RecentOrder(NOW - 600, 10.005, "m1"), RecentOrder(NOW - 5 * 3600, 20.0, "m2"),
                             RecentOrder(NOW - 3 * DAY, 7.5, "m1"), RecentOrder(NOW + 60, 99.0, "m3")),
              unpaid=(UnpaidInstallment(today - 3, 12.5),), paid_on_time=2, total_orders=3, total_spent=37.5)
    for fs in CATALOG.values():
        full = fs.evaluate(s, Instant(NOW))
        for f in fs.features:
            assert fs.evaluate(s, Instant(NOW), fs.select([f.name])) == {f.group: {f.name: full[f.group][f.name]}}
        pair = fs.select(["orders_1h", "on_time_rate"])
        assert fs.evaluate(s, Instant(NOW), pair) == {"repayment": {"on_time_rate": round(2 / 3, 3)},
                                                      "velocity": {"orders_1h": 1}}
