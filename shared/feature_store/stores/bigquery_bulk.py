"""Bulk refresh from BigQuery instead of PostgreSQL: states from the offline mirrors, for warm-ups.

A full refresh with ``"source": "bigquery"`` computes each chunk with
sql/bigquery/queries/user_state_asof.sql (the BigQuery twin of the user-state statement) over the
tables run_etl mirrors, as of the newest row they hold (so no mirrored row is masked as "changed
later"), and a cold Redis is filled without loading the source of truth.

Invariant: these values carry watermark 0, below every source position, so the compare-and-set
write lands only where nothing is cached: a warm-up never replaces a vector computed from
PostgreSQL (read-through, CDC or refresh), and any change committed after the mirrors' instant
reaches Redis through CDC with a real watermark that wins. A mirror is a day old at most; what it
fills in is as stale as that until the user next changes or the key expires.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from feature_store.domain.state import UserState, compile_mapper
from feature_store.errors import Conflict
from feature_store.stores.bigquery_features import identifier, literal, state_template
from feature_store.stores.postgres_bulk import Vector
from feature_store.stores.redis_online import encode

if TYPE_CHECKING:
    from feature_store.stores.bigquery_offline import OfflineStore

WARMUP_WATERMARK = 0
MIRRORED = ("users", "transactions", "installment_plans", "installments", "risk_scores")


class BigQueryBulkSource:
    """Finished values of user-id ranges from the offline mirrors, as of one instant."""

    def __init__(self, offline: OfflineStore) -> None:
        self.offline = offline

    def mirrored_to(self) -> datetime:
        """The time of the newest row the mirrors hold; 409 when a table has never been exported."""
        if self.offline.columns("etl_watermarks") is None:  # no ETL has ever run against this dataset
            raise Conflict("BigQuery holds no export yet; run the ETL export first (or refresh from PostgreSQL)",
                           code="bigquery_not_exported")
        marks = self.offline.watermarks()
        missing = [t for t in MIRRORED if t not in marks]
        if missing:
            raise Conflict(f"BigQuery has no export of {', '.join(missing)} yet; run the ETL export first "
                           "(or refresh from PostgreSQL)", code="bigquery_not_exported")
        return max(datetime.fromisoformat(marks[t].replace("Z", "+00:00")) for t in MIRRORED).astimezone(UTC)

    def vectors_in_range(self, lo: str, hi: str | None, as_of: datetime) -> list[Vector]:
        """Values of the mirrored users with ``lo <= user_id < hi`` as of ``as_of``, by id."""
        dataset = identifier(self.offline.dataset)
        bound = "" if hi is None else f" AND user_id < {literal(hi)}"
        requests = (f"(SELECT ROW_NUMBER() OVER (ORDER BY user_id) AS req_id, user_id, {literal(as_of)} AS as_of "
                    f"FROM `{dataset}.users` WHERE user_id >= {literal(lo)}{bound})")
        rows = self.offline.run(state_template().format(dataset=dataset, requests=requests))
        rows.sort(key=lambda r: str(r["user_id"]))
        return [Vector(str(r["user_id"]), encode(_state(r))) for r in rows]


def state_of_row(row: dict[str, Any]) -> UserState:
    """The state of one row of sql/bigquery/queries/user_state_asof.sql (watermark WARMUP_WATERMARK)."""
    return _state(row)


# One state per row of sql/bigquery/queries/user_state_asof.sql (columns by the declaration's BigQuery
# names): empty event lists are NULL there, and a warm-up state carries WARMUP_WATERMARK.
_state: Callable[[dict[str, Any]], UserState] = compile_mapper(
    "from_bigquery", "r", 'r["{bq}"]',
    {"int": "int({v})", "float": "float({v})", "text": "{v}", "epoch": "float({v})", "day": "int({v})",
     "orders": "tuple((float(o['ts']), float(o['amount']), str(o['merchant'])) for o in {v} or ())",
     "epochs": "tuple(float(t) for t in {v} or ())",
     "unpaid": "tuple((int(u['due_day']), float(u['amount'])) for u in {v} or ())"},
    f"UserState(str(r['user_id']), {WARMUP_WATERMARK}, {{fields}})")
