"""An independent recomputation of credit_decision (v1, and v2's two velocity features) straight from a user's raw rows.

Written without the catalog, the state or the user-state SQL, so that tests comparing the
two catch a mistake in either. Plain Python over plain SELECTs.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pg8000.native

DAY = 86400


def _epoch(t: datetime) -> float:
    return t.replace(tzinfo=t.tzinfo or UTC).timestamp()


def reference_features(conn: pg8000.native.Connection, user_id: str, at: float,
                       version: int = 1) -> dict[str, dict[str, Any]] | None:
    """The feature values of ``user_id`` at instant ``at`` (epoch seconds) in credit_decision ``version``,
    or None for no such user."""
    users = conn.run("SELECT age, location_country, verification_status, income_bracket, signup_date "
                     "FROM users WHERE user_id = :u", u=user_id)
    if not users:
        return None
    age, country, verification, income, signup = users[0]
    today = math.floor(at / DAY)
    epoch_day = datetime(1970, 1, 1).date()
    txs = conn.run("SELECT amount, merchant, category, status, created_at FROM transactions WHERE user_id = :u",
                   u=user_id)
    completed = [t for t in txs if t[3] == "completed"]
    spent = sum((t[0] for t in completed), Decimal(0))
    counts: dict[str, int] = {}
    for t in completed:
        counts[t[2]] = counts.get(t[2], 0) + 1
    favorite = min(counts, key=lambda c: (-counts[c], c)) if counts else None

    def window(seconds: int) -> list[Any]:
        return [t for t in txs if t[3] in ("completed", "pending") and at - seconds < _epoch(t[4]) <= at]

    risk = conn.run("SELECT risk_score, fraud_probability, payment_delays, device_trust_score, credit_utilization "
                    "FROM risk_scores WHERE user_id = :u", u=user_id)
    plans = conn.run("SELECT status FROM installment_plans WHERE user_id = :u", u=user_id)
    inst = conn.run("SELECT due_date, amount, paid_at FROM installments WHERE user_id = :u", u=user_id)
    unpaid = [i for i in inst if i[2] is None]
    overdue = [today - (i[0] - epoch_day).days for i in unpaid if (i[0] - epoch_day).days < today]
    paid = [i for i in inst if i[2] is not None]
    on_time = sum(1 for i in paid if i[2].astimezone(UTC).date() <= i[0])
    late = [i for i in paid if i[2].astimezone(UTC).date() > i[0]]
    fell_due = len(paid) + len(overdue)

    def f(x: Any) -> float | None:
        return None if x is None else float(x)

    r = risk[0] if risk else (None, None, None, None, None)
    values: dict[str, dict[str, Any]] = {
        "demographics": {"age": age, "location_country": country, "verification_status": verification,
                         "income_bracket": income, "days_since_signup": max(0, today - (signup - epoch_day).days)},
        "behavior": {
            "total_orders": len(completed),
            "avg_order_value": round(float(spent) / len(completed), 2) if completed else 0.0,
            "total_spent": round(float(spent), 2),
            "last_order_days": (max(0, math.floor((at - max(_epoch(t[4]) for t in completed)) / DAY))
                                if completed else None),
            "favorite_category": favorite,
        },
        "risk": {"risk_score": f(r[0]), "fraud_probability": f(r[1]), "payment_delays": r[2] if risk else 0,
                 "device_trust_score": f(r[3]), "credit_utilization": f(r[4])},
        "repayment": {
            "outstanding_balance": round(float(sum((i[1] for i in unpaid), Decimal(0))), 2),
            "open_plans": sum(1 for p in plans if p[0] == "active"),
            "max_days_past_due": max(overdue, default=0),
            "late_payments_90d": sum(1 for i in late if at - 90 * DAY < _epoch(i[2]) <= at),
            "on_time_rate": round(on_time / fell_due, 3) if fell_due else None,
        },
        "velocity": {
            "orders_1h": len(window(3600)),
            "orders_24h": len(window(DAY)),
            "orders_7d": len(window(7 * DAY)),
            "amount_24h": round(float(sum((t[0] for t in window(DAY)), Decimal(0))), 2),
            "amount_7d": round(float(sum((t[0] for t in window(7 * DAY)), Decimal(0))), 2),
            "distinct_merchants_7d": len({t[1] for t in window(7 * DAY)}),
        },
    }
    if version >= 2:
        # Amounts are NUMERIC(12, 2): whole cents, summed exactly as Decimals; the mean of the week's
        # orders is the cents' quotient rounded to cents (Python's round), 0 when there is none.
        hour, week = window(3600), window(7 * DAY)
        cents = sum(int(t[0] * 100) for t in week)
        values["velocity"]["amount_1h"] = round(float(sum((t[0] for t in hour), Decimal(0))), 2)
        values["velocity"]["avg_order_value_7d"] = round(cents / (100 * len(week)), 2) if week else 0.0
    return values
