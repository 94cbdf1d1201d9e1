"""The source of truth read as user states: one set-based statement per call.

``states_for(ids)`` serves reads and CDC (``user_id = ANY($1)``, one query for one user or
for all misses of a batch); ``states_in_range(lo, hi)`` serves bulk refresh chunks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from feature_store.domain.state import RecentOrder, UnpaidInstallment, UserState
from feature_store.stores.dialect import Dialect
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.sql_files import query

_BY_IDS = "{c} = ANY(CAST(:ids AS text[]))"
# Read in its own statement, before the state statement takes its snapshot (snapshot_states).
_WATERMARK_FIRST = {"postgresql": "SELECT pg_current_wal_flush_lsn() - CAST('0/0' AS pg_lsn)"}
_BY_RANGE = "{c} >= :lo AND {c} < :hi"


def _render(scope: str, dialect: Dialect) -> str:
    return query("user_state").format(
        scope=scope.format(c="user_id"),
        scope_u=scope.format(c="u.user_id"),
        watermark=dialect.watermark_sql,
    )


class SourceStore:
    """Reads user states from PostgreSQL or CockroachDB."""

    def __init__(self, pool: PostgresPool, dialect: Dialect) -> None:
        self.pool = pool
        self.dialect = dialect
        self._by_ids = _render(_BY_IDS, dialect)
        self._by_range = _render(_BY_RANGE, dialect)

    def states_for(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """States of the users that exist among ``user_ids`` (absent ones are simply missing)."""
        if not user_ids:
            return {}
        with self.pool.connection() as conn:
            rows = conn.run(self._by_ids, ids=list(user_ids))
        return {row[0]: self._to_state(row) for row in rows}

    def snapshot_states(self, user_ids: Sequence[str]) -> tuple[int, dict[str, UserState]]:
        """A watermark and the states of the users that exist among ``user_ids``, every state tagged with it.

        The watermark holds even when no user exists (deletes write tombstones with it). On PostgreSQL
        it is the WAL flush position read BEFORE the snapshot of the state statement is taken, so every
        commit at or below it is in the snapshot; reading it inside the statement (``states_for``) lets
        a commit land between snapshot and read, and such a state could outrank a newer one. On
        CockroachDB both statements run in one transaction, whose timestamp is the snapshot.
        """
        with self.pool.connection() as conn:
            if self.dialect.name != "postgresql":
                conn.execute("BEGIN")
            mark = self.dialect.watermark(conn.run(_WATERMARK_FIRST.get(self.dialect.name, "SELECT "
                                                   + self.dialect.watermark_sql))[0][0])
            rows = conn.run(self._by_ids, ids=list(user_ids)) if user_ids else []
            if self.dialect.name != "postgresql":
                conn.execute("COMMIT")
        states = {row[0]: self._to_state(row) for row in rows}
        return mark, {u: replace(s, watermark=mark) for u, s in states.items()}

    def states_in_range(self, lo: str, hi: str) -> list[UserState]:
        """States of every user with ``lo <= user_id < hi``, ordered by user_id."""
        with self.pool.connection() as conn:
            rows = conn.run(self._by_range, lo=lo, hi=hi)
        return [self._to_state(row) for row in rows]

    def _to_state(self, row: Sequence[Any]) -> UserState:
        (user_id, computed_at, watermark, age, country, verification, income, signup_day,
         total_orders, total_spent, last_order_at, favorite, recent, risk_score, fraud, delays,
         device, utilization, open_plans, on_time, late, late_paid_at, unpaid) = row
        return UserState(
            user_id=user_id,
            computed_at=float(computed_at),
            watermark=self.dialect.watermark(watermark),
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
