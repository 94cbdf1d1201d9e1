"""The offline side of receipts: a read's audit rows, how far the offline store has landed, states as of instants.

Reads ``audit_reads`` (sql/bigquery/0004_audit_reads.sql) by request id, pruned to the partitions of
the days around the instant the id was made (a request id is a ULID: domain/audit.py), and computes
user states as of given instants with sql/bigquery/queries/user_state_asof.sql, as the daily
snapshot and training sets do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from feature_store.domain.audit import request_id_time
from feature_store.domain.state import UserState
from feature_store.stores.bigquery_bulk import MIRRORED, state_of_row
from feature_store.stores.bigquery_features import identifier, literal, state_template

if TYPE_CHECKING:
    from feature_store.stores.bigquery_offline import OfflineStore

# A row is written after its read was served; the id was made when the request arrived.
_SERVED_WITHIN = timedelta(hours=1)


class AuditTrail:
    """Audit rows and point-in-time states from the offline dataset."""

    def __init__(self, offline: OfflineStore, table: str = "audit_reads") -> None:
        self.offline = offline
        self.table = identifier(table)

    def rows(self, request_id: str) -> list[dict[str, Any]]:
        """The audit rows of a request, one per position (a row delivered twice is kept once)."""
        try:
            made = datetime.fromtimestamp(request_id_time(request_id), UTC)
            low, high = made - _SERVED_WITHIN, made + _SERVED_WITHIN
        except (OverflowError, ValueError, OSError):  # a well-formed id of a year no read was made in
            return []
        if self.offline.columns(self.table) is None:
            return []
        found = self.offline.run(
            f"SELECT * FROM {self.offline.table(self.table)} WHERE request_id = @request_id "
            "AND served_at >= @low AND served_at < @high",
            {"request_id": request_id, "low": low, "high": high})
        by_position: dict[int, dict[str, Any]] = {}
        for row in found:
            by_position.setdefault(int(row["position"]), row)
        return [by_position[p] for p in sorted(by_position)]

    def landed_until(self) -> float | None:
        """Epoch seconds up to which every mirrored table is exported (the oldest table's last export), or None."""
        if self.offline.columns("etl_watermarks") is None:
            return None
        rows = self.offline.run(f"SELECT source_table, updated_at FROM {self.offline.table('etl_watermarks')}")
        marks = {r["source_table"]: r["updated_at"] for r in rows}
        if any(t not in marks for t in MIRRORED):
            return None
        return min(_epoch(marks[t]) for t in MIRRORED)

    def states_at(self, requests: Sequence[tuple[str, float]]) -> list[UserState | None]:
        """The state of each (user id, epoch seconds) as the offline store knows it then; None for an unknown user."""
        if not requests:
            return []
        dataset = identifier(self.offline.dataset)
        union = " UNION ALL ".join(
            f"SELECT {i} AS req_id, {literal(user_id)} AS user_id, "
            f"TIMESTAMP_MICROS({round(at * 1_000_000)}) AS as_of"
            for i, (user_id, at) in enumerate(requests))
        known = f"(SELECT r.* FROM ({union}) AS r JOIN `{dataset}.users` AS u ON u.user_id = r.user_id)"
        rows = self.offline.run(state_template().format(dataset=dataset, requests=known))
        by_req = {int(r["req_id"]): state_of_row(r) for r in rows}
        return [by_req.get(i) for i in range(len(requests))]


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
