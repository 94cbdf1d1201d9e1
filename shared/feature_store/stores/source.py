"""The source of truth read as user states (the ``Source`` port): one set-based statement per call.

``snapshot_states(ids)`` serves the read path's misses and CDC recomputations with
``user_id = ANY($1)``: one statement for one user or for every miss of a batch. Rows become
states through a mapper generated from the state's declaration (domain/state.py), whose column
list the statement must produce in order (tests/integration/test_source_state.py checks it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from feature_store.domain.state import UserState, compile_mapper
from feature_store.stores.dialect import Dialect
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.sql_files import query

_BY_IDS = "{c} = ANY(CAST(:ids AS text[]))"


def render_user_state(scope: str) -> str:
    """sql/queries/user_state.sql restricted to the users ``scope`` selects (a predicate on ``{c}``)."""
    return query("user_state").format(scope=scope.format(c="user_id"), scope_u=scope.format(c="u.user_id"))


def _json(value: Any) -> Iterable[Any]:
    """A JSON array column: pg8000 hands json as text; NULL (no rows) is empty."""
    if value is None:
        return ()
    return json.loads(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


# One state per row: numerics arrive as Decimal, event lists as JSON text (sql/queries/user_state.sql).
from_row: Callable[[Sequence[Any], int], UserState] = compile_mapper(
    "from_row", "row, watermark", "row[{i} + 1]",
    {"int": "int({v})", "float": "float({v})", "text": "{v}", "epoch": "float({v})", "day": "int({v})",
     "orders": "tuple((float(a), float(m), str(n)) for a, m, n in _json({v}))",
     "epochs": "tuple(float(t) for t in _json({v}))",
     "unpaid": "tuple((int(d), float(a)) for d, a in _json({v}))"},
    "UserState(row[0], watermark, {fields})", {"_json": _json})


class SourceStore:
    """Reads user states from PostgreSQL or CockroachDB."""

    def __init__(self, pool: PostgresPool, dialect: Dialect) -> None:
        self.pool = pool
        self.dialect = dialect
        self._by_ids = render_user_state(_BY_IDS)

    def states_for(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """States of the users that exist among ``user_ids`` (absent ones are simply missing)."""
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
        with self.pool.connection() as conn:
            if not user_ids:
                return self.dialect.watermark(conn.run(self.dialect.watermark_sql)[0][0]), {}
            if self.dialect.watermark_in_transaction:
                conn.execute("BEGIN")
            mark = self.dialect.watermark(conn.run(self.dialect.watermark_sql)[0][0])
            rows = conn.run(self._by_ids, ids=list(user_ids))
            if self.dialect.watermark_in_transaction:
                conn.execute("COMMIT")
        return mark, {row[0]: from_row(row, mark) for row in rows}

    def columns(self) -> list[str]:
        """The column names the state statement produces (to check them against the declaration)."""
        with self.pool.connection() as conn:
            conn.run(self._by_ids, ids=[])
            return conn.columns(self._by_ids)

