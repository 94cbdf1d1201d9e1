"""The feature catalog: every feature set, version, group and feature, as code.

Each feature declares its type, the value for a user with no data, a one-line description
and how it is finished from a ``UserState`` at an instant. The read path, CDC ingestion,
bulk refresh and the offline store all use these definitions; changing what a feature
means requires a new version of its feature set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from feature_store.domain.state import RecentOrder, UserState
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
    compute: Callable[[Frame], Any]
    # The same value in BigQuery SQL over one row of sql/bigquery/queries/user_state_asof.sql (the
    # state's columns), with {at} (epoch seconds) and {day} (UTC day) for the instant; py_round(x, n)
    # rounds as Python's round() does. Offline snapshots and training sets are built from it.
    bq_sql: str = ""


class Frame:
    """A user's state seen at one instant; each time window is cut once however many features use it."""

    __slots__ = ("_cache", "at", "s")

    def __init__(self, state: UserState, at: Instant) -> None:
        self.s = state
        self.at = at
        self._cache: dict[int, list[RecentOrder]] = {}

    def orders_within(self, seconds: int) -> list[RecentOrder]:
        """Velocity-eligible orders in ``(at - seconds, at]``."""
        window = self._cache.get(seconds)
        if window is None:
            lo, hi = self.at.epoch - seconds, self.at.epoch
            window = self._cache[seconds] = [o for o in self.s.recent_orders if lo < o.at <= hi]
        return window

    def overdue_days(self) -> list[int]:
        """Days past due of each unpaid installment whose due date has passed."""
        today = self.at.day
        return [today - u.due_day for u in self.s.unpaid if u.due_day < today]


_MAX_SELECTIONS = 1024


class Selection:
    """Some features of a set, laid out by group once so that evaluating them is a plain loop."""

    __slots__ = ("features", "groups")

    def __init__(self, features: tuple[Feature, ...]) -> None:
        self.features = features
        by_group: dict[str, list[Feature]] = {}
        for f in features:
            by_group.setdefault(f.group, []).append(f)
        self.groups = tuple((g, tuple(members)) for g, members in by_group.items())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


@dataclass(frozen=True)
class FeatureSet:
    name: str
    version: int
    features: tuple[Feature, ...]
    # Selections already made, by the set of names asked (None: all); bounded by _MAX_SELECTIONS.
    _selections: dict[frozenset[str] | None, Selection] = field(
        default_factory=dict, init=False, compare=False, repr=False)

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

    def select(self, names: Iterable[str] | None) -> Selection:
        """The features named (in catalog order), or all; UnknownFeature for a name not here."""
        key = None if names is None else frozenset(names)
        chosen = self._selections.get(key)
        if chosen is not None:
            return chosen
        if key is None:
            features = self.features
        else:
            unknown = sorted(key - set(self.names))
            if unknown:
                raise UnknownFeature(
                    f"{self.name} v{self.version} has no feature named {', '.join(map(repr, unknown))}; "
                    f"known features: {', '.join(self.names)}"
                )
            features = tuple(f for f in self.features if f.name in key)
        if len(self._selections) >= _MAX_SELECTIONS:
            self._selections.clear()  # bounded: a caller inventing subsets cannot grow it forever
        chosen = self._selections[key] = Selection(features)
        return chosen

    def evaluate(self, state: UserState, at: Instant, selection: Selection | None = None) -> dict[str, dict[str, Any]]:
        """Feature values grouped as ``{group: {name: value}}``; a missing value becomes the default."""
        frame = Frame(state, at)
        out: dict[str, dict[str, Any]] = {}
        for group, members in (selection or self.select(None)).groups:
            values = out[group] = {}
            for f in members:
                value = f.compute(frame)
                values[f.name] = f.default if value is None else value
        return out


# --- finishing functions: pure, small, and exact at the instant given -------------------------


def _money(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _ratio(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _days_since_signup(f: Frame) -> int | None:
    return None if f.s.signup_day is None else max(0, f.at.day - f.s.signup_day)


def _avg_order_value(f: Frame) -> float | None:
    return _money(f.s.total_spent / f.s.total_orders) if f.s.total_orders else None


def _last_order_days(f: Frame) -> int | None:
    if f.s.last_order_at is None:
        return None
    return max(0, math.floor((f.at.epoch - f.s.last_order_at) / 86400))


_1H, _24H, _7D = 3600, 86400, 7 * 86400


def _count(seconds: int) -> Callable[[Frame], int]:
    return lambda f: len(f.orders_within(seconds))


def _amount(seconds: int) -> Callable[[Frame], float | None]:
    return lambda f: _money(sum((o.amount for o in f.orders_within(seconds)), 0.0))


def _late_payments_90d(f: Frame) -> int:
    lo, hi = f.at.epoch - 90 * 86400, f.at.epoch
    return sum(1 for t in f.s.late_paid_at if lo < t <= hi)


def _on_time_rate(f: Frame) -> float | None:
    fell_due = f.s.paid_on_time + f.s.paid_late + len(f.overdue_days())
    return _ratio(f.s.paid_on_time / fell_due) if fell_due else None


def _f(name: str, group: str, dtype: DType, default: Any, description: str,
       compute: Callable[[Frame], Any], bq: str = "") -> Feature:
    return Feature(name, group, dtype, default, description, compute, bq)


def _bq_orders(seconds: int, select: str) -> str:
    """BigQuery: ``select`` over the velocity-eligible orders in ``(at - seconds, at]``."""
    return f"(SELECT {select} FROM UNNEST(recent_orders) AS o WHERE o.ts > {{at}} - {seconds} AND o.ts <= {{at}})"


_BQ_OVERDUE = "(SELECT COUNT(*) FROM UNNEST(unpaid) AS u WHERE u.due_day < {day})"


CREDIT_DECISION_V1 = FeatureSet(
    name="credit_decision",
    version=1,
    features=(
        # demographics
        _f("age", "demographics", "int64", None, "Age in years as declared at signup.",
           lambda f: f.s.age,
           bq="age"),
        _f("location_country", "demographics", "string", None, "ISO 3166-1 alpha-2 country of residence.",
           lambda f: f.s.location_country,
           bq="location_country"),
        _f("verification_status", "demographics", "string", "pending",
           "Identity verification state: verified, pending or rejected.",
           lambda f: f.s.verification_status,
           bq="verification_status"),
        _f("income_bracket", "demographics", "string", None, "Declared income bracket (low, medium, high).",
           lambda f: f.s.income_bracket,
           bq="income_bracket"),
        _f("days_since_signup", "demographics", "int64", 0, "Whole UTC days since the signup date.",
           _days_since_signup,
           bq="IF(signup_day IS NULL, NULL, GREATEST(0, {day} - signup_day))"),
        # behavior: completed orders over the whole history
        _f("total_orders", "behavior", "int64", 0, "Number of completed orders ever.",
           lambda f: f.s.total_orders,
           bq="total_orders"),
        _f("avg_order_value", "behavior", "float64", 0.0, "Mean amount of completed orders.",
           _avg_order_value,
           bq="IF(total_orders > 0, py_round(total_spent / total_orders, 2), NULL)"),
        _f("total_spent", "behavior", "float64", 0.0, "Sum of completed order amounts.",
           lambda f: _money(f.s.total_spent),
           bq="py_round(total_spent, 2)"),
        _f("last_order_days", "behavior", "int64", None,
           "Whole days since the latest completed order; null when there is none.", _last_order_days,
           bq="IF(last_order_at IS NULL, NULL, GREATEST(0, CAST(FLOOR(({at} - last_order_at) / 86400) AS INT64)))"),
        _f("favorite_category", "behavior", "string", None,
           "Most frequent category of completed orders (ties: alphabetical first).",
           lambda f: f.s.favorite_category,
           bq="favorite_category"),
        # risk: the latest score row
        _f("risk_score", "risk", "float64", None, "Latest model risk score in [0, 1].",
           lambda f: f.s.risk_score,
           bq="risk_score"),
        _f("fraud_probability", "risk", "float64", None, "Latest fraud probability in [0, 1].",
           lambda f: f.s.fraud_probability,
           bq="fraud_probability"),
        _f("payment_delays", "risk", "int64", 0, "Payment delays counted by the risk model.",
           lambda f: f.s.payment_delays,
           bq="payment_delays"),
        _f("device_trust_score", "risk", "float64", None, "Trust in the user's devices in [0, 1].",
           lambda f: f.s.device_trust_score,
           bq="device_trust_score"),
        _f("credit_utilization", "risk", "float64", None, "Share of the credit limit in use, [0, 1].",
           lambda f: f.s.credit_utilization,
           bq="credit_utilization"),
        # repayment: BNPL installment plans
        _f("outstanding_balance", "repayment", "float64", 0.0, "Sum of unpaid installment amounts.",
           lambda f: _money(sum((u.amount for u in f.s.unpaid), 0.0)),
           bq="py_round((SELECT COALESCE(SUM(u.amount), 0) FROM UNNEST(unpaid) AS u), 2)"),
        _f("open_plans", "repayment", "int64", 0, "Installment plans still active.",
           lambda f: f.s.open_plans,
           bq="open_plans"),
        _f("max_days_past_due", "repayment", "int64", 0,
           "Days the oldest unpaid, overdue installment is past its due date.",
           lambda f: max(f.overdue_days(), default=0),
           bq="(SELECT MAX({day} - u.due_day) FROM UNNEST(unpaid) AS u WHERE u.due_day < {day})"),
        _f("late_payments_90d", "repayment", "int64", 0,
           "Installments paid after their due date, paid in the last 90 days.", _late_payments_90d,
           bq="(SELECT COUNT(*) FROM UNNEST(late_paid_at) AS t WHERE t > {at} - 7776000 AND t <= {at})"),
        _f("on_time_rate", "repayment", "float64", None,
           "Share of installments that fell due and were paid by their due date; null when none did.",
           _on_time_rate,
           bq="py_round(SAFE_DIVIDE(paid_on_time, paid_on_time + paid_late + " + _BQ_OVERDUE + "), 3)"),
        # velocity: exact at the instant of the request
        _f("orders_1h", "velocity", "int64", 0, "Completed or pending orders in the last hour.",
           _count(_1H),
           bq=_bq_orders(_1H, "COUNT(*)")),
        _f("orders_24h", "velocity", "int64", 0, "Completed or pending orders in the last 24 hours.",
           _count(_24H),
           bq=_bq_orders(_24H, "COUNT(*)")),
        _f("orders_7d", "velocity", "int64", 0, "Completed or pending orders in the last 7 days.",
           _count(_7D),
           bq=_bq_orders(_7D, "COUNT(*)")),
        _f("amount_24h", "velocity", "float64", 0.0, "Amount of completed or pending orders, last 24 hours.",
           _amount(_24H),
           bq="py_round(" + _bq_orders(_24H, "COALESCE(SUM(o.amount), 0)") + ", 2)"),
        _f("amount_7d", "velocity", "float64", 0.0, "Amount of completed or pending orders, last 7 days.",
           _amount(_7D),
           bq="py_round(" + _bq_orders(_7D, "COALESCE(SUM(o.amount), 0)") + ", 2)"),
        _f("distinct_merchants_7d", "velocity", "int64", 0, "Distinct merchants ordered from, last 7 days.",
           lambda f: len({o.merchant for o in f.orders_within(_7D)}),
           bq=_bq_orders(_7D, "COUNT(DISTINCT o.merchant)")),
    ),
)


def _avg_amount(seconds: int) -> Callable[[Frame], float | None]:
    def compute(f: Frame) -> float | None:
        orders = f.orders_within(seconds)
        # Whole cents, summed exactly: a float sum depends on the order of the terms, and a mean that
        # lands on a half cent then rounds either way. BigQuery sums in no set order, so only an exact
        # sum lets the offline value (bq_sql) equal this one.
        cents = sum(round(o.amount * 100) for o in orders)
        return _money(cents / (100 * len(orders))) if orders else None

    return compute


# v2: v1 unchanged plus two velocity features finished from the same state, so its vectors are
# byte-for-byte v1's and materializing it costs Redis memory, not source queries per version.
CREDIT_DECISION_V2 = FeatureSet(
    name="credit_decision",
    version=2,
    features=(
        *CREDIT_DECISION_V1.features,
        _f("amount_1h", "velocity", "float64", 0.0, "Amount of completed or pending orders, last hour.",
           _amount(_1H),
           bq="py_round(" + _bq_orders(_1H, "COALESCE(SUM(o.amount), 0)") + ", 2)"),
        _f("avg_order_value_7d", "velocity", "float64", 0.0,
           "Mean amount of completed or pending orders of the last 7 days; 0 when there is none.",
           _avg_amount(_7D),
           bq=_bq_orders(_7D, "IF(COUNT(*) > 0, py_round(SUM(CAST(ROUND(o.amount * 100) AS INT64)) "
                              "/ (100 * COUNT(*)), 2), NULL)")),
    ),
)

CATALOG: Mapping[tuple[str, int], FeatureSet] = {
    (fs.name, fs.version): fs for fs in (CREDIT_DECISION_V1, CREDIT_DECISION_V2)
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
