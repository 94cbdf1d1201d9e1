"""The feature catalog: every feature set, version, group and feature, as code.

Each feature declares its type, the value for a user with no data, a one-line description
and how it is finished from a ``UserState`` at an instant. The read path, CDC ingestion,
bulk refresh and the offline store all use these definitions; changing what a feature
means requires a new version of its feature set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from feature_store.domain.state import UserState
from feature_store.errors import NotFound, UnknownFeature

DType = Literal["int64", "float64", "string"]


@dataclass(frozen=True, slots=True)
class Instant:
    """The moment features are evaluated at: epoch seconds and the UTC day number."""

    epoch: float

    @property
    def day(self) -> int:
        return math.floor(self.epoch / 86400)


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    group: str
    dtype: DType
    default: Any
    description: str
    compute: Callable[[UserState, Instant], Any]


@dataclass(frozen=True)
class FeatureSet:
    name: str
    version: int
    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate feature names in {self.name} v{self.version}")

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.group for f in self.features))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def select(self, names: Iterable[str] | None) -> tuple[Feature, ...]:
        """The features named (in catalog order), or all; UnknownFeature for a name not here."""
        if names is None:
            return self.features
        wanted = set(names)
        unknown = sorted(wanted - set(self.names))
        if unknown:
            raise UnknownFeature(
                f"{self.name} v{self.version} has no feature named {', '.join(map(repr, unknown))}; "
                f"known features: {', '.join(self.names)}"
            )
        return tuple(f for f in self.features if f.name in wanted)

    def evaluate(
        self, state: UserState, at: Instant, features: tuple[Feature, ...] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Feature values grouped as ``{group: {name: value}}``; a missing value becomes the default."""
        out: dict[str, dict[str, Any]] = {}
        for feature in self.features if features is None else features:
            value = feature.compute(state, at)
            out.setdefault(feature.group, {})[feature.name] = feature.default if value is None else value
        return out


# --- finishing functions: pure, small, and exact at the instant given -------------------------


def _money(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _ratio(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _days_since_signup(s: UserState, at: Instant) -> int | None:
    return None if s.signup_day is None else max(0, at.day - s.signup_day)


def _avg_order_value(s: UserState, at: Instant) -> float | None:
    return _money(s.total_spent / s.total_orders) if s.total_orders else None


def _last_order_days(s: UserState, at: Instant) -> int | None:
    if s.last_order_at is None:
        return None
    return max(0, math.floor((at.epoch - s.last_order_at) / 86400))


def _window(seconds: int) -> Callable[[UserState, Instant], list[Any]]:
    """Orders in ``(at - seconds, at]``: the velocity window ending at the instant."""

    def orders(s: UserState, at: Instant) -> list[Any]:
        lo = at.epoch - seconds
        return [o for o in s.recent_orders if lo < o.at <= at.epoch]

    return orders


_1H, _24H, _7D = _window(3600), _window(86400), _window(7 * 86400)


def _overdue_days(s: UserState, at: Instant) -> list[int]:
    return [at.day - u.due_day for u in s.unpaid if u.due_day < at.day]


def _max_days_past_due(s: UserState, at: Instant) -> int:
    return max(_overdue_days(s, at), default=0)


def _late_payments_90d(s: UserState, at: Instant) -> int:
    lo = at.epoch - 90 * 86400
    return sum(1 for t in s.late_paid_at if lo < t <= at.epoch)


def _on_time_rate(s: UserState, at: Instant) -> float | None:
    fell_due = s.paid_on_time + s.paid_late + len(_overdue_days(s, at))
    return _ratio(s.paid_on_time / fell_due) if fell_due else None


def _f(name: str, group: str, dtype: DType, default: Any, description: str,
       compute: Callable[[UserState, Instant], Any]) -> Feature:
    return Feature(name, group, dtype, default, description, compute)


CREDIT_DECISION_V1 = FeatureSet(
    name="credit_decision",
    version=1,
    features=(
        # demographics
        _f("age", "demographics", "int64", None, "Age in years as declared at signup.",
           lambda s, at: s.age),
        _f("location_country", "demographics", "string", None, "ISO 3166-1 alpha-2 country of residence.",
           lambda s, at: s.location_country),
        _f("verification_status", "demographics", "string", "pending",
           "Identity verification state: verified, pending or rejected.",
           lambda s, at: s.verification_status),
        _f("income_bracket", "demographics", "string", None, "Declared income bracket (low, medium, high).",
           lambda s, at: s.income_bracket),
        _f("days_since_signup", "demographics", "int64", 0, "Whole UTC days since the signup date.",
           _days_since_signup),
        # behavior: completed orders over the whole history
        _f("total_orders", "behavior", "int64", 0, "Number of completed orders ever.",
           lambda s, at: s.total_orders),
        _f("avg_order_value", "behavior", "float64", 0.0, "Mean amount of completed orders.",
           _avg_order_value),
        _f("total_spent", "behavior", "float64", 0.0, "Sum of completed order amounts.",
           lambda s, at: _money(s.total_spent)),
        _f("last_order_days", "behavior", "int64", None,
           "Whole days since the latest completed order; null when there is none.", _last_order_days),
        _f("favorite_category", "behavior", "string", None,
           "Most frequent category of completed orders (ties: alphabetical first).",
           lambda s, at: s.favorite_category),
        # risk: the latest score row
        _f("risk_score", "risk", "float64", None, "Latest model risk score in [0, 1].",
           lambda s, at: s.risk_score),
        _f("fraud_probability", "risk", "float64", None, "Latest fraud probability in [0, 1].",
           lambda s, at: s.fraud_probability),
        _f("payment_delays", "risk", "int64", 0, "Payment delays counted by the risk model.",
           lambda s, at: s.payment_delays),
        _f("device_trust_score", "risk", "float64", None, "Trust in the user's devices in [0, 1].",
           lambda s, at: s.device_trust_score),
        _f("credit_utilization", "risk", "float64", None, "Share of the credit limit in use, [0, 1].",
           lambda s, at: s.credit_utilization),
        # repayment: BNPL installment plans
        _f("outstanding_balance", "repayment", "float64", 0.0, "Sum of unpaid installment amounts.",
           lambda s, at: _money(sum((u.amount for u in s.unpaid), 0.0))),
        _f("open_plans", "repayment", "int64", 0, "Installment plans still active.",
           lambda s, at: s.open_plans),
        _f("max_days_past_due", "repayment", "int64", 0,
           "Days the oldest unpaid, overdue installment is past its due date.", _max_days_past_due),
        _f("late_payments_90d", "repayment", "int64", 0,
           "Installments paid after their due date, paid in the last 90 days.", _late_payments_90d),
        _f("on_time_rate", "repayment", "float64", None,
           "Share of installments that fell due and were paid by their due date; null when none did.",
           _on_time_rate),
        # velocity: exact at the instant of the request
        _f("orders_1h", "velocity", "int64", 0, "Completed or pending orders in the last hour.",
           lambda s, at: len(_1H(s, at))),
        _f("orders_24h", "velocity", "int64", 0, "Completed or pending orders in the last 24 hours.",
           lambda s, at: len(_24H(s, at))),
        _f("orders_7d", "velocity", "int64", 0, "Completed or pending orders in the last 7 days.",
           lambda s, at: len(_7D(s, at))),
        _f("amount_24h", "velocity", "float64", 0.0, "Amount of completed or pending orders, last 24 hours.",
           lambda s, at: _money(sum((o.amount for o in _24H(s, at)), 0.0))),
        _f("amount_7d", "velocity", "float64", 0.0, "Amount of completed or pending orders, last 7 days.",
           lambda s, at: _money(sum((o.amount for o in _7D(s, at)), 0.0))),
        _f("distinct_merchants_7d", "velocity", "int64", 0, "Distinct merchants ordered from, last 7 days.",
           lambda s, at: len({o.merchant for o in _7D(s, at)})),
    ),
)

CATALOG: Mapping[tuple[str, int], FeatureSet] = {
    (fs.name, fs.version): fs for fs in (CREDIT_DECISION_V1,)
}


def get_feature_set(name: str, version: int | None = None) -> FeatureSet:
    """A feature set by name and version (the newest when version is None)."""
    versions = sorted(v for (n, v) in CATALOG if n == name)
    if not versions:
        raise NotFound(f"no feature set named {name!r}", code="unknown_feature_set")
    chosen = versions[-1] if version is None else version
    if (name, chosen) not in CATALOG:
        raise NotFound(f"feature set {name!r} has no version {chosen}; versions: {versions}",
                       code="unknown_feature_set")
    return CATALOG[(name, chosen)]
