"""The feature catalog: every feature set, version, group and feature, as code.

Each feature declares its type, the value for a user with no data, a one-line description
and how it is finished from a ``UserState`` at an instant - twice, side by side: as a Python
expression for the online path and as BigQuery SQL for the offline store (tests hold the two
equal, and both equal to an independent recomputation from PostgreSQL). The read path, CDC
ingestion, bulk refresh and the offline store all use these definitions; changing what a
feature means requires a new version of its feature set.

A selection of features is compiled once into one plain function (``Selection.finish``): each
time window is cut once and every value is computed inline, because finishing 26 features
through 26 small functions cost more than the Redis round trip of a whole batch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
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
    # The value as a Python expression over the state ``s``, the instant ``at`` (epoch seconds) and
    # ``day`` (UTC day), and the windows of _WINDOWS; None means "no value" and becomes the default.
    py: str
    # The same value in BigQuery SQL over one row of sql/bigquery/queries/user_state_asof.sql (the
    # state's columns), with {at} (epoch seconds) and {day} (UTC day) for the instant; py_round(x, n)
    # rounds as Python's round() does. Offline snapshots and training sets are built from it.
    bq_sql: str = ""


# Values several features share, cut once per user: name -> Python expression (may use earlier ones).
# The velocity windows nest - an order in the last hour is in the last day, which is in the last week -
# so each is cut from the next wider one. ``recent_orders`` may hold orders after ``at``; none counts.
# Orders are (at, amount, merchant) and unpaid installments (due_day, amount): see domain/state.py.
_WINDOWS: dict[str, str] = {
    "o7d": "[o for o in s.recent_orders if at - 604800 < o[0] <= at]",
    "o24h": "[o for o in o7d if at - 86400 < o[0]]",
    "o1h": "[o for o in o24h if at - 3600 < o[0]]",
    "overdue": "[day - u[0] for u in s.unpaid if u[0] < day]",  # days past due of each
    "fell_due": "s.paid_on_time + s.paid_late + len(overdue)",  # installments that fell due
}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# States every feature set is run over once when it is defined (see FeatureSet.__post_init__).
_PROBES = (UserState("probe", 0, 0.0),
           UserState("probe", 0, 1e9, age=30, signup_day=10_000, total_orders=2, total_spent=10.0,
                     last_order_at=1e9 - 10, recent_orders=((1e9 - 10, 5.0, "m"),), risk_score=0.5, open_plans=1,
                     paid_on_time=1, paid_late=1, late_paid_at=(1e9 - 20,), unpaid=((11_570, 2.5),)))
_MAX_SELECTIONS = 1024

Finish = Callable[[UserState, float, int], dict[str, dict[str, Any]]]


def _compile(features: tuple[Feature, ...], groups: tuple[tuple[str, tuple[Feature, ...]], ...],
             label: str) -> Finish:
    """One function computing ``{group: {name: value}}`` for these features, defaults applied."""
    needed: set[str] = set()
    pending = [f.py for f in features]
    while pending:
        for name in _IDENT.findall(pending.pop()):
            if name in _WINDOWS and name not in needed:
                needed.add(name)
                pending.append(_WINDOWS[name])
    lines = ["def finish(s, at, day):"]
    lines += [f"    {name} = {expr}" for name, expr in _WINDOWS.items() if name in needed]
    parts = []
    for group, members in groups:
        values = ", ".join(
            f"{f.name!r}: ({f.py})" if f.default is None
            else f"{f.name!r}: (_v if (_v := ({f.py})) is not None else {f.default!r})"
            for f in members)
        parts.append(f"{group!r}: {{{values}}}")
    lines.append(f"    return {{{', '.join(parts)}}}")
    namespace: dict[str, Any] = {"floor": math.floor}
    # The source is this module's own expressions and validated feature names, never request text.
    exec(compile("\n".join(lines), f"<finish {label}>", "exec"), namespace)
    return namespace["finish"]  # type: ignore[no-any-return]


class Selection:
    """Some features of a set, laid out by group and compiled into one finishing function."""

    __slots__ = ("features", "finish", "groups")

    def __init__(self, features: tuple[Feature, ...], label: str = "selection") -> None:
        self.features = features
        by_group: dict[str, list[Feature]] = {}
        for f in features:
            by_group.setdefault(f.group, []).append(f)
        self.groups = tuple((g, tuple(members)) for g, members in by_group.items())
        self.finish: Finish = _compile(features, self.groups, label)

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
        # Compile every expression and run it once over an empty and a busy state: an expression that does
        # not compile, names something undefined or mistypes a field fails at import, not at a request.
        finish = self.select(None).finish
        for probe in _PROBES:
            finish(probe, probe.computed_at, math.floor(probe.computed_at / 86400))

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
        chosen = self._selections[key] = Selection(features, f"{self.name} v{self.version}")
        return chosen

    def evaluate(self, state: UserState, at: Instant, selection: Selection | None = None) -> dict[str, dict[str, Any]]:
        """Feature values grouped as ``{group: {name: value}}``; a missing value becomes the default."""
        return (selection or self.select(None)).finish(state, at.epoch, at.day)


def _f(name: str, group: str, dtype: DType, default: Any, description: str, py: str, bq: str = "") -> Feature:
    return Feature(name, group, dtype, default, description, py, bq)


def _bq_orders(seconds: int, select: str) -> str:
    """BigQuery: ``select`` over the velocity-eligible orders in ``(at - seconds, at]``."""
    return f"(SELECT {select} FROM UNNEST(recent_orders) AS o WHERE o.ts > {{at}} - {seconds} AND o.ts <= {{at}})"


_BQ_OVERDUE = "(SELECT COUNT(*) FROM UNNEST(unpaid) AS u WHERE u.due_day < {day})"
_1H, _24H, _7D = 3600, 86400, 7 * 86400


def _py_amount(window: str) -> str:
    """Python: the amount of a window's orders, rounded to cents."""
    return f"round(sum([o[1] for o in {window}], 0.0), 2)"


CREDIT_DECISION_V1 = FeatureSet(
    name="credit_decision",
    version=1,
    features=(
        # demographics
        _f("age", "demographics", "int64", None, "Age in years as declared at signup.",
           "s.age",
           bq="age"),
        _f("location_country", "demographics", "string", None, "ISO 3166-1 alpha-2 country of residence.",
           "s.location_country",
           bq="location_country"),
        _f("verification_status", "demographics", "string", "pending",
           "Identity verification state: verified, pending or rejected.",
           "s.verification_status",
           bq="verification_status"),
        _f("income_bracket", "demographics", "string", None, "Declared income bracket (low, medium, high).",
           "s.income_bracket",
           bq="income_bracket"),
        _f("days_since_signup", "demographics", "int64", 0, "Whole UTC days since the signup date.",
           "None if s.signup_day is None else max(0, day - s.signup_day)",
           bq="IF(signup_day IS NULL, NULL, GREATEST(0, {day} - signup_day))"),
        # behavior: completed orders over the whole history
        _f("total_orders", "behavior", "int64", 0, "Number of completed orders ever.",
           "s.total_orders",
           bq="total_orders"),
        _f("avg_order_value", "behavior", "float64", 0.0, "Mean amount of completed orders.",
           "round(s.total_spent / s.total_orders, 2) if s.total_orders else None",
           bq="IF(total_orders > 0, py_round(total_spent / total_orders, 2), NULL)"),
        _f("total_spent", "behavior", "float64", 0.0, "Sum of completed order amounts.",
           "round(s.total_spent, 2)",
           bq="py_round(total_spent, 2)"),
        _f("last_order_days", "behavior", "int64", None,
           "Whole days since the latest completed order; null when there is none.",
           "None if s.last_order_at is None else max(0, floor((at - s.last_order_at) / 86400))",
           bq="IF(last_order_at IS NULL, NULL, GREATEST(0, CAST(FLOOR(({at} - last_order_at) / 86400) AS INT64)))"),
        _f("favorite_category", "behavior", "string", None,
           "Most frequent category of completed orders (ties: alphabetical first).",
           "s.favorite_category",
           bq="favorite_category"),
        # risk: the latest score row
        _f("risk_score", "risk", "float64", None, "Latest model risk score in [0, 1].",
           "s.risk_score",
           bq="risk_score"),
        _f("fraud_probability", "risk", "float64", None, "Latest fraud probability in [0, 1].",
           "s.fraud_probability",
           bq="fraud_probability"),
        _f("payment_delays", "risk", "int64", 0, "Payment delays counted by the risk model.",
           "s.payment_delays",
           bq="payment_delays"),
        _f("device_trust_score", "risk", "float64", None, "Trust in the user's devices in [0, 1].",
           "s.device_trust_score",
           bq="device_trust_score"),
        _f("credit_utilization", "risk", "float64", None, "Share of the credit limit in use, [0, 1].",
           "s.credit_utilization",
           bq="credit_utilization"),
        # repayment: BNPL installment plans
        _f("outstanding_balance", "repayment", "float64", 0.0, "Sum of unpaid installment amounts.",
           "round(sum([u[1] for u in s.unpaid], 0.0), 2)",
           bq="py_round((SELECT COALESCE(SUM(u.amount), 0) FROM UNNEST(unpaid) AS u), 2)"),
        _f("open_plans", "repayment", "int64", 0, "Installment plans still active.",
           "s.open_plans",
           bq="open_plans"),
        _f("max_days_past_due", "repayment", "int64", 0,
           "Days the oldest unpaid, overdue installment is past its due date.",
           "max(overdue, default=0)",
           bq="(SELECT MAX({day} - u.due_day) FROM UNNEST(unpaid) AS u WHERE u.due_day < {day})"),
        _f("late_payments_90d", "repayment", "int64", 0,
           "Installments paid after their due date, paid in the last 90 days.",
           "len([t for t in s.late_paid_at if at - 7776000 < t <= at])",
           bq="(SELECT COUNT(*) FROM UNNEST(late_paid_at) AS t WHERE t > {at} - 7776000 AND t <= {at})"),
        _f("on_time_rate", "repayment", "float64", None,
           "Share of installments that fell due and were paid by their due date; null when none did.",
           "round(s.paid_on_time / fell_due, 3) if fell_due else None",
           bq="py_round(SAFE_DIVIDE(paid_on_time, paid_on_time + paid_late + " + _BQ_OVERDUE + "), 3)"),
        # velocity: exact at the instant of the request
        _f("orders_1h", "velocity", "int64", 0, "Completed or pending orders in the last hour.",
           "len(o1h)",
           bq=_bq_orders(_1H, "COUNT(*)")),
        _f("orders_24h", "velocity", "int64", 0, "Completed or pending orders in the last 24 hours.",
           "len(o24h)",
           bq=_bq_orders(_24H, "COUNT(*)")),
        _f("orders_7d", "velocity", "int64", 0, "Completed or pending orders in the last 7 days.",
           "len(o7d)",
           bq=_bq_orders(_7D, "COUNT(*)")),
        _f("amount_24h", "velocity", "float64", 0.0, "Amount of completed or pending orders, last 24 hours.",
           _py_amount("o24h"),
           bq="py_round(" + _bq_orders(_24H, "COALESCE(SUM(o.amount), 0)") + ", 2)"),
        _f("amount_7d", "velocity", "float64", 0.0, "Amount of completed or pending orders, last 7 days.",
           _py_amount("o7d"),
           bq="py_round(" + _bq_orders(_7D, "COALESCE(SUM(o.amount), 0)") + ", 2)"),
        _f("distinct_merchants_7d", "velocity", "int64", 0, "Distinct merchants ordered from, last 7 days.",
           "len({o[2] for o in o7d})",
           bq=_bq_orders(_7D, "COUNT(DISTINCT o.merchant)")),
    ),
)


# v2: v1 unchanged plus two velocity features finished from the same state, so its vectors are
# the same cached state as v1's: serving it costs no Redis memory and no materialization (docs/redis-keys.md).
CREDIT_DECISION_V2 = FeatureSet(
    name="credit_decision",
    version=2,
    features=(
        *CREDIT_DECISION_V1.features,
        _f("amount_1h", "velocity", "float64", 0.0, "Amount of completed or pending orders, last hour.",
           _py_amount("o1h"),
           bq="py_round(" + _bq_orders(_1H, "COALESCE(SUM(o.amount), 0)") + ", 2)"),
        # Whole cents, summed exactly: a float sum depends on the order of the terms, and a mean that
        # lands on a half cent then rounds either way. BigQuery sums in no set order, so only an exact
        # sum lets the offline value (bq_sql) equal this one.
        _f("avg_order_value_7d", "velocity", "float64", 0.0,
           "Mean amount of completed or pending orders of the last 7 days; 0 when there is none.",
           "round(sum([round(o[1] * 100) for o in o7d]) / (100 * len(o7d)), 2) if o7d else None",
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
