"""The captured source tables (sql/postgres/0001_core_tables.sql) as the change stream sees them.

Each column says how its wire value is decoded (``kind``), which values the source's constraints
allow (NOT NULL, CHECK ranges) and each table its primary key. A CockroachDB changefeed's ``key``
array follows the CockroachDB form of the primary key (docs/cockroachdb.md), which for
``transactions`` leads with ``user_id``; ``changefeed_key`` names those columns in that order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

Kind = Literal["text", "int", "decimal", "date", "timestamp"]


@dataclass(frozen=True, slots=True)
class Column:
    """One captured column: how its wire value is decoded and which values are possible."""

    name: str
    kind: Kind
    scale: int = 0  # digits after the point of a NUMERIC(p, s) column
    lo: Decimal | None = None
    hi: Decimal | None = None
    required: bool = False  # NOT NULL in the source


@dataclass(frozen=True)
class SourceTable:
    """A captured table, keyed by its primary key (PostgreSQL's order; ``changefeed_key`` is CockroachDB's)."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    changefeed_key: tuple[str, ...] = ()
    by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})
        if not self.changefeed_key:
            object.__setattr__(self, "changefeed_key", self.primary_key)


def _c(name: str, kind: Kind, scale: int = 0, lo: str | None = None, hi: str | None = None,
       required: bool = False) -> Column:
    return Column(name, kind, scale, None if lo is None else Decimal(lo), None if hi is None else Decimal(hi),
                  required)


_USER_ID = _c("user_id", "text", required=True)


def _score(name: str) -> Column:
    return _c(name, "decimal", 3, lo="0", hi="1")


def _money(name: str) -> Column:
    """NUMERIC(12, 2) NOT NULL CHECK (>= 0)."""
    return _c(name, "decimal", 2, lo="0", hi="9999999999.99", required=True)


TABLES: Mapping[str, SourceTable] = {t.name: t for t in (
    SourceTable("users", (
        _USER_ID, _c("age", "int", lo="0", hi="150"), _c("location_country", "text"),
        _c("signup_date", "date", required=True), _c("verification_status", "text", required=True),
        _c("income_bracket", "text"), _c("created_at", "timestamp"), _c("updated_at", "timestamp"),
    ), ("user_id",)),
    SourceTable("transactions", (
        _c("transaction_id", "text", required=True), _USER_ID, _money("amount"),
        _c("currency", "text"), _c("merchant", "text", required=True), _c("category", "text", required=True),
        _c("status", "text", required=True), _c("created_at", "timestamp", required=True),
    ), ("transaction_id", "created_at"), ("user_id", "created_at", "transaction_id")),
    SourceTable("risk_scores", (
        _USER_ID, _score("risk_score"), _score("fraud_probability"),
        _c("payment_delays", "int", lo="0"), _score("device_trust_score"),
        _score("credit_utilization"), _c("calculated_at", "timestamp"),
    ), ("user_id",)),
    SourceTable("installment_plans", (
        _c("plan_id", "text", required=True), _USER_ID, _c("transaction_id", "text", required=True),
        _money("principal"), _c("n_installments", "int", lo="1"),
        _c("status", "text", required=True), _c("created_at", "timestamp", required=True),
        _c("updated_at", "timestamp"),
    ), ("plan_id",)),
    SourceTable("installments", (
        _c("plan_id", "text", required=True), _c("seq", "int", lo="1", required=True), _USER_ID,
        _c("due_date", "date", required=True), _money("amount"),
        _c("paid_at", "timestamp"), _c("updated_at", "timestamp"),
    ), ("plan_id", "seq")),
)}

# Logical decoding names the partition a row lives in; Debezium with publish.via.partition.root
# (and the local relay) name the parent. Both are accepted.
_PARTITION = re.compile(r"^(transactions)_\d{4}_\d{2}$")


def source_table(name: str) -> SourceTable | None:
    """The captured table of a name from the change stream (a partition maps to its parent)."""
    match = _PARTITION.match(name)
    return TABLES.get(match.group(1) if match else name)
