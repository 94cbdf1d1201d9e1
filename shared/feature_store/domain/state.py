"""UserState: everything needed to compute a user's features at any later instant - and its one declaration.

The source query (sql/queries/user_state.sql, and its BigQuery twin
sql/bigquery/queries/user_state_asof.sql) reduces a user's rows to this shape once;
``domain.catalog`` finishes it into feature values at request time. Time-dependent features
(velocity windows, days since, days past due) are kept as anchors and short event lists rather
than as numbers, so a cached state stays exact as the clock moves: an order placed 59 minutes ago
leaves ``orders_1h`` one minute later with no job running.

The dataclass below is the one declaration of the state: each field's ``kind`` (in its metadata)
says how its values look. The cached encoding (``to_compact``/``from_compact``), the column list
of the source statements (``STATE_COLUMNS``, checked against both SQL files by tests) and the row
mappers of the stores (``compile_mapper``) all follow from it, so adding a state field touches this
class, the SQL that computes it and the feature that uses it. Changing the fields changes the
encoding: bump ``LAYOUT``, which is part of every cached key (docs/redis-keys.md).

Invariants: ``recent_orders`` holds every velocity-eligible order (status completed or pending)
created less than 7 days before ``computed_at`` (and any later one); ``late_paid_at`` holds every
late payment made less than 90 days before ``computed_at``; the behaviour fields count completed
orders only (docs/features.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

# The version of the cached encoding: part of every cached key and the first element (or byte) of
# every encoded state. Layout 1 nested the fields by group; layout 2 was a flat JSON list in
# declaration order; layout 3 packs the same fields in binary (domain/state_binary.py), with the
# JSON list of layout 2 (first element 3) for a state the binary form cannot hold exactly.
LAYOUT = 3

# How a field's values look: scalars, epoch seconds, a UTC day number, or one of three event lists.
Kind = Literal["int", "float", "text", "epoch", "day", "orders", "epochs", "unpaid"]


class RecentOrder(NamedTuple):
    at: float  # epoch seconds
    amount: float
    merchant: str


class UnpaidInstallment(NamedTuple):
    due_day: int  # days since 1970-01-01 (UTC)
    amount: float


# The sources build plain tuples of these positions; a state decoded from the cache holds plain tuples
# too (four times cheaper to build on the read path's hot loop). Everything reads them by position,
# so a named tuple above is an equally valid element (tests use them for readability).
Order = tuple[float, float, str]
Unpaid = tuple[int, float]


def _field(kind: Kind, default: Any = dataclasses.MISSING, bq: str | None = None, scale: int | None = None,
           vocab: tuple[str, ...] | None = None) -> Any:
    """A state field: its kind, its column name in the BigQuery statement when that differs, and how the
    binary encoding holds it: ``scale`` for a float that is an exact multiple of 1/scale (amounts in
    cents: 100; NUMERIC(5,3) scores: 1000), ``vocab`` for a text whose usual values are known."""
    metadata = {"kind": kind, "bq": bq, "scale": scale, "vocab": vocab}
    if default is dataclasses.MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


# The known values of the text fields, in a fixed order: the binary encoding stores a value's position
# (1-based; 0 is null). A value outside its list is still cached exactly, as the JSON form. Part of
# the layout: appending to a list or reordering it is a new LAYOUT.
# ISO 3166-1 alpha-2, in alphabetical order
COUNTRIES = (
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB",
    "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY",
    "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX",
    "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK",
    "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS",
    "GT", "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR",
    "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA",
    "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE",
    "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM",
    "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG",
    "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF",
    "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY",
    "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
)
VERIFICATION_STATUSES = ("pending", "verified", "rejected")
INCOME_BRACKETS = ("low", "medium", "high")
CATEGORIES = ("electronics", "fashion", "home", "beauty", "travel", "groceries", "sports", "toys", "books",
              "health", "automotive", "jewelry")


@dataclass(slots=True)
class UserState:
    """A user's reduced source rows as of ``computed_at``, tagged with the source watermark.

    Treat it as immutable. It is not a frozen dataclass because decoding states is on the read
    path's hot loop and a frozen dataclass's ``__init__`` costs several times more. ``user_id`` and
    ``watermark`` are the key and the tag of a cached state; every other field is its body, in order.
    A field whose default is ``None`` may be null; the others never are.
    """

    user_id: str
    watermark: int  # source position of the snapshot (PostgreSQL LSN, CockroachDB HLC)
    computed_at: float = _field("epoch", bq="at_s")  # epoch seconds of the source snapshot
    # demographics
    age: int | None = _field("int", None)
    location_country: str | None = _field("text", None, vocab=COUNTRIES)
    verification_status: str | None = _field("text", None, vocab=VERIFICATION_STATUSES)
    income_bracket: str | None = _field("text", None, vocab=INCOME_BRACKETS)
    signup_day: int | None = _field("day", None)
    # behavior (completed orders)
    total_orders: int = _field("int", 0)
    total_spent: float = _field("float", 0.0, scale=100)
    last_order_at: float | None = _field("epoch", None)
    favorite_category: str | None = _field("text", None, vocab=CATEGORIES)
    # velocity
    recent_orders: tuple[Order, ...] = _field("orders", ())
    # risk
    risk_score: float | None = _field("float", None, scale=1000)
    fraud_probability: float | None = _field("float", None, scale=1000)
    payment_delays: int | None = _field("int", None)
    device_trust_score: float | None = _field("float", None, scale=1000)
    credit_utilization: float | None = _field("float", None, scale=1000)
    # repayment
    open_plans: int = _field("int", 0)
    paid_on_time: int = _field("int", 0)
    paid_late: int = _field("int", 0)
    late_paid_at: tuple[float, ...] = _field("epochs", ())
    unpaid: tuple[Unpaid, ...] = _field("unpaid", ())

    def to_compact(self) -> list[Any]:
        """A JSON-ready flat list: ``[LAYOUT, computed_at, <every body field in order>]`` (docs/redis-keys.md)."""
        return _to_compact(self)

    @classmethod
    def from_compact(cls, user_id: str, watermark: int, data: list[Any]) -> UserState:
        """The state ``to_compact`` encoded; ValueError for another layout or a list of the wrong length."""
        if type(data) is not list or len(data) != _COMPACT_LENGTH or data[0] != LAYOUT:
            raise ValueError(f"not a state of layout {LAYOUT}")
        return _from_compact(user_id, watermark, data)


@dataclass(frozen=True, slots=True)
class StateField:
    """One body field of the state as declared above."""

    name: str
    kind: Kind
    nullable: bool
    bq_column: str  # its name in sql/bigquery/queries/user_state_asof.sql's output
    scale: int | None = None  # a float held as an integer number of 1/scale (binary encoding)
    vocab: tuple[str, ...] | None = None  # a text's known values (binary encoding)


STATE_FIELDS: tuple[StateField, ...] = tuple(
    StateField(f.name, f.metadata["kind"], f.default is None, f.metadata["bq"] or f.name, f.metadata["scale"],
               f.metadata["vocab"])
    for f in dataclasses.fields(UserState) if "kind" in f.metadata)

# The columns of the source statement, in order: the key, then every body field (computed_at first).
STATE_COLUMNS: tuple[str, ...] = ("user_id", *(f.name for f in STATE_FIELDS))
# The BigQuery statement's names for the same columns.
STATE_BQ_COLUMNS: tuple[str, ...] = ("user_id", *(f.bq_column for f in STATE_FIELDS))
_COMPACT_LENGTH = 1 + len(STATE_FIELDS)


def compile_mapper(name: str, args: str, source: str, expressions: Mapping[Kind, str], result: str,
                   namespace: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """A function ``name(args)`` that maps every body field, in declaration order, and returns ``result``.

    ``source`` is where a field's raw value comes from, formatted with its position among the body
    fields (``i``), ``name`` and ``bq`` column; ``expressions`` gives, per kind, what becomes of a raw
    value ``{v}`` (a nullable field keeps None as None); ``result`` is formatted with ``{fields}``,
    the mapped values joined by commas in declaration order. Generated once at import, as the
    catalog's finishing functions are: a loop over fields costs several times more on the paths that
    decode thousands of states.
    """
    lines = [f"def {name}({args}):"]
    values = []
    for i, f in enumerate(STATE_FIELDS):
        v = f"_v{i}"
        lines.append(f"    {v} = {source.format(i=i, name=f.name, bq=f.bq_column)}")
        expr = expressions[f.kind].format(v=v)
        values.append(f"(None if {v} is None else {expr})" if f.nullable and expr != v else expr)
    lines.append(f"    return {result.format(fields=', '.join(values))}")
    scope: dict[str, Any] = {"UserState": UserState, **(namespace or {})}
    # The source is this module's declaration and the callers' fixed expressions, never input data.
    exec(compile("\n".join(lines), f"<state {name}>", "exec"), scope)
    return scope[name]  # type: ignore[no-any-return]


_SAME = "{v}"
_to_compact: Callable[[UserState], list[Any]] = compile_mapper(
    "to_compact", "s", "s.{name}",
    {"int": _SAME, "float": _SAME, "text": _SAME, "epoch": _SAME, "day": _SAME,
     "orders": "[list(o) for o in {v}]", "epochs": "list({v})", "unpaid": "[list(u) for u in {v}]"},
    f"[{LAYOUT}, {{fields}}]")

_from_compact: Callable[[str, int, list[Any]], UserState] = compile_mapper(
    "from_compact", "user_id, watermark, d", "d[{i} + 1]",
    {"int": _SAME, "float": _SAME, "text": _SAME, "epoch": _SAME, "day": _SAME,
     "orders": "tuple(map(tuple, {v}))", "epochs": "tuple({v})", "unpaid": "tuple(map(tuple, {v}))"},
    "UserState(user_id, watermark, {fields})")
