"""UserState: everything needed to compute a user's features at any later instant.

The source query (sql/queries/user_state.sql) reduces a user's rows to this shape once;
``domain.catalog`` finishes it into feature values at request time. Time-dependent
features (velocity windows, days since, days past due) are kept as anchors and short
event lists rather than as numbers, so a cached state stays exact as the clock moves:
an order placed 59 minutes ago leaves ``orders_1h`` one minute later with no job running.

Invariants: ``recent_orders`` holds every velocity-eligible order created less than
``VELOCITY_HORIZON_S`` before ``computed_at`` (and any later one); ``late_paid_at`` holds
every late payment made less than ``LATE_HORIZON_S`` before ``computed_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

VELOCITY_HORIZON_S = 7 * 86400
LATE_HORIZON_S = 90 * 86400

# Order statuses that count for each group (documented in docs/features.md).
BEHAVIOR_STATUSES = ("completed",)
VELOCITY_STATUSES = ("completed", "pending")


class RecentOrder(NamedTuple):
    at: float  # epoch seconds
    amount: float
    merchant: str


class UnpaidInstallment(NamedTuple):
    due_day: int  # days since 1970-01-01 (UTC)
    amount: float


# The source builds the named tuples above; a state decoded from the cache holds plain tuples of
# the same positions (four times cheaper to build on the read path's hot loop). Everything reads
# them by position, so either is a valid element.
Order = tuple[float, float, str]
Unpaid = tuple[int, float]


@dataclass(slots=True)
class UserState:
    """A user's reduced source rows as of ``computed_at``, tagged with the source watermark.

    Treat it as immutable. It is not a frozen dataclass because decoding states is on the read
    path's hot loop and a frozen dataclass's ``__init__`` costs several times more.
    """

    user_id: str
    computed_at: float  # epoch seconds of the source snapshot
    watermark: int  # source position of the snapshot (PostgreSQL LSN, CockroachDB HLC)
    # demographics
    age: int | None = None
    location_country: str | None = None
    verification_status: str | None = None
    income_bracket: str | None = None
    signup_day: int | None = None  # days since epoch
    # behavior (completed orders)
    total_orders: int = 0
    total_spent: float = 0.0
    last_order_at: float | None = None
    favorite_category: str | None = None
    # velocity
    recent_orders: tuple[Order, ...] = ()
    # risk
    risk_score: float | None = None
    fraud_probability: float | None = None
    payment_delays: int | None = None
    device_trust_score: float | None = None
    credit_utilization: float | None = None
    # repayment
    open_plans: int = 0
    paid_on_time: int = 0
    paid_late: int = 0
    late_paid_at: tuple[float, ...] = ()
    unpaid: tuple[Unpaid, ...] = field(default=())

    def to_compact(self) -> list[Any]:
        """A JSON-ready list, positional to keep each cached vector small (docs/redis-keys.md)."""
        return [
            1,  # layout version of this list
            self.computed_at,
            [self.age, self.location_country, self.verification_status, self.income_bracket,
             self.signup_day],
            [self.total_orders, self.total_spent, self.last_order_at, self.favorite_category],
            [list(o) for o in self.recent_orders],
            [self.risk_score, self.fraud_probability, self.payment_delays, self.device_trust_score,
             self.credit_utilization],
            [self.open_plans, self.paid_on_time, self.paid_late, list(self.late_paid_at),
             [list(u) for u in self.unpaid]],
        ]

    @classmethod
    def from_compact(cls, user_id: str, watermark: int, data: list[Any]) -> UserState:
        if not data or data[0] != 1:
            raise ValueError("unknown state layout")
        _, computed_at, demo, beh, recent, risk, rep = data
        return cls(
            user_id=user_id,
            computed_at=computed_at,
            watermark=watermark,
            age=demo[0],
            location_country=demo[1],
            verification_status=demo[2],
            income_bracket=demo[3],
            signup_day=demo[4],
            total_orders=beh[0],
            total_spent=beh[1],
            last_order_at=beh[2],
            favorite_category=beh[3],
            recent_orders=tuple(map(tuple, recent)),
            risk_score=risk[0],
            fraud_probability=risk[1],
            payment_delays=risk[2],
            device_trust_score=risk[3],
            credit_utilization=risk[4],
            open_plans=rep[0],
            paid_on_time=rep[1],
            paid_late=rep[2],
            late_paid_at=tuple(rep[3]),
            unpaid=tuple(map(tuple, rep[4])),
        )
