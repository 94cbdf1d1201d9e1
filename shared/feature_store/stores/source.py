"""The source of truth read as user states: one set-based statement per call.

``states_for(ids)`` serves reads and CDC (``user_id = ANY($1)``, one query for one user or
for all misses of a batch); ``states_in_range(lo, hi)`` serves bulk refresh chunks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from feature_store.domain.state import RecentOrder, UnpaidInstallment, UserState
from feature_store.stores.dialect import Dialect
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.sql_files import query

_BY_IDS = "{c} = ANY(CAST(:ids AS text[]))"
_BY_RANGE = "{c} >= :lo AND {c} < :hi"


def _render(scope: str) -> str:
    return query("user_state").format(scope=scope.format(c="user_id"), scope_u=scope.format(c="u.user_id"))


class SourceStore:
    """Reads user states from PostgreSQL or CockroachDB."""

    def __init__(self, pool: PostgresPool, dialect: Dialect) -> None:
        self.pool = pool
        self.dialect = dialect
        self._by_ids = _render(_BY_IDS)
        self._by_range = _render(_BY_RANGE)

    def states_for(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """States of the users that exist among ``user_ids`` (absent ones are simply missing)."""
        if not user_ids:
            return {}
        return self.snapshot_states(user_ids)[1]

    def snapshot_states(self, user_ids: Sequence[str]) -> tuple[int, dict[str, UserState]]:
        """A watermark and the states of the users that exist among ``user_ids``, every state tagged with it.

        The watermark holds even when no user exists (deletes write tombstones with it). On PostgreSQL
        it is the WAL flush position read BEFORE the state statement takes its snapshot, so every
        commit at or below it is in the snapshot (read inside the statement, a commit could land between
        snapshot and read, and a state missing it would outrank a newer one). On CockroachDB both
        statements run in one transaction, whose timestamp is the snapshot. Every path (read-through,
        CDC, bulk refresh) tags states this way, so their compare-and-set writes agree.
        """
        mark, rows = self._snapshot(self._by_ids, ids=list(user_ids)) if user_ids else (self._mark_only(), [])
        return mark, {row[0]: self._to_state(row, mark) for row in rows}

    def states_in_range(self, lo: str, hi: str) -> list[UserState]:
        """States of every user with ``lo <= user_id < hi``, ordered by user_id."""
        mark, rows = self._snapshot(self._by_range, lo=lo, hi=hi)
        return [self._to_state(row, mark) for row in rows]

    def _snapshot(self, sql: str, **params: Any) -> tuple[int, list[list[Any]]]:
        """The watermark, then the rows of ``sql`` from a snapshot taken after it (see Dialect)."""
        with self.pool.connection() as conn:
            if self.dialect.watermark_in_transaction:
                conn.execute("BEGIN")
            mark = self.dialect.watermark(conn.run(self.dialect.watermark_sql)[0][0])
            rows = conn.run(sql, **params)
            if self.dialect.watermark_in_transaction:
                conn.execute("COMMIT")
        return mark, rows

    def _mark_only(self) -> int:
        with self.pool.connection() as conn:
            return self.dialect.watermark(conn.run(self.dialect.watermark_sql)[0][0])

    def _to_state(self, row: Sequence[Any], watermark: int) -> UserState:
        (user_id, computed_at, age, country, verification, income, signup_day,
         total_orders, total_spent, last_order_at, favorite, recent, risk_score, fraud, delays,
         device, utilization, open_plans, on_time, late, late_paid_at, unpaid) = row
        return UserState(
            user_id=user_id,
            computed_at=float(computed_at),
            watermark=watermark,
            age=age,
            location_country=country.strip() if country else None,
            verification_status=verification,
            income_bracket=income,
            signup_day=signup_day,
            total_orders=int(total_orders),
            total_spent=float(total_spent),
            last_order_at=None if last_order_at is None else float(last_order_at),
            favorite_category=favorite,
            recent_orders=tuple(RecentOrder(float(a), float(m), str(n)) for a, m, n in _json(recent)),
            risk_score=_float(risk_score),
            fraud_probability=_float(fraud),
            payment_delays=delays,
            device_trust_score=_float(device),
            credit_utilization=_float(utilization),
            open_plans=int(open_plans),
            paid_on_time=int(on_time),
            paid_late=int(late),
            late_paid_at=tuple(float(t) for t in _json(late_paid_at)),
            unpaid=tuple(UnpaidInstallment(int(d), float(a)) for d, a in _json(unpaid)),
        )


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


def _json(value: Any) -> Iterable[Any]:
    if value is None:
        return ()
    if isinstance(value, str):
        parsed: Iterable[Any] = json.loads(value)
        return parsed
    return value  # type: ignore[no-any-return]
