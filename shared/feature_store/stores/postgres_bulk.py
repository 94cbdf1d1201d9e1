"""Bulk reads of the source for cache refresh: finished Redis values per user, id ranges, changed ids.

The user-state statement (sql/queries/user_state.sql) stays the one definition of a state. On
PostgreSQL, bulk refresh runs the statement derived from it (stores/postgres_bulk_sql.py), which
packs each user's cached binary body in SQL: a chunk crosses the wire as ids and finished bodies,
and Python only prefixes the watermark. A user whose body comes back NULL (a state the binary body
cannot hold) is computed through the point read (``SourceStore``) and encoded as every writer does.
On another dialect the statement is wrapped and projected into one JSON list per user, which Python
reads into a state (``state_of``, fixing what SQL cannot: JSON numbers that must be floats, empty event
lists that SQL leaves NULL) and encodes. Either way the values written are byte-for-byte what
``redis_online.encode`` writes for the state the point read computes
(tests/integration/test_refresh_source.py).

Invariant: values are tagged with their watermark exactly as ``SourceStore`` tags states (the
dialect's position read just before the state statement takes its snapshot), so compare-and-set
writes of bulk values, CDC and the read path's write-back converge on the newest state.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from feature_store.domain.state import LAYOUT, STATE_COLUMNS, UserState, compile_mapper
from feature_store.stores.dialect import WATERMARK_HEX_DIGITS, Dialect
from feature_store.stores.ports import Tombstone
from feature_store.stores.postgres import Connection, PostgresPool
from feature_store.stores.postgres_bulk_sql import bulk_statement
from feature_store.stores.redis_online import encode, watermark_head
from feature_store.stores.source import SourceStore, render_user_state

# The state as one JSON list, built from the user-state row (read back by ``state_of``).
_PROJECTION = ("SELECT s.user_id, CAST(json_build_array(" + str(LAYOUT) + ", "
               + ", ".join(f"s.{c}" for c in STATE_COLUMNS[1:]) + ") AS text)\nFROM ({inner}) AS s\n")

_RANGE = "{c} >= :lo AND {c} < :hi"
_FROM = "{c} >= :lo"
_IDS = "{c} = ANY(CAST(:ids AS text[]))"

# The start of the chunk after the one starting at :lo: an index-only walk of :n keys.
_NEXT_BOUNDARY = "SELECT user_id FROM users WHERE user_id >= :lo ORDER BY user_id OFFSET :n LIMIT 1"
_NEXT_BOUNDARY_BELOW = ("SELECT user_id FROM users WHERE user_id >= :lo AND user_id < :hi "
                        "ORDER BY user_id OFFSET :n LIMIT 1")
_COUNT = "SELECT count(*) FROM users WHERE user_id >= :lo"
_COUNT_BELOW = "SELECT count(*) FROM users WHERE user_id >= :lo AND user_id < :hi"

# Users any of whose source rows carries a timestamp after :since (docs/capacity.md lists what
# this cannot see). Every branch is an index range scan (transactions' is partition-pruned); the
# updated_at columns are kept current by the triggers of migration 0004.
_CHANGED = """
SELECT DISTINCT user_id FROM (
    SELECT user_id FROM users WHERE updated_at > :since
    UNION ALL SELECT user_id FROM transactions WHERE created_at > :since
    UNION ALL SELECT user_id FROM installment_plans WHERE updated_at > :since
    UNION ALL SELECT user_id FROM installments WHERE updated_at > :since
    UNION ALL SELECT user_id FROM risk_scores WHERE calculated_at > :since
) AS changed
WHERE user_id > :after
ORDER BY user_id
"""

# The oldest start of a transaction still open: a row it stamps with now() may commit later
# with a timestamp before our own now(). Only sessions this login may see are counted.
_SAFE_NOW_POSTGRES = """
SELECT now(), least(now(), (SELECT min(xact_start) FROM pg_stat_activity
                            WHERE datname = current_database() AND pid <> pg_backend_pid()
                              AND xact_start IS NOT NULL))
"""
_SAFE_NOW_OTHER = "SELECT now(), now()"


@dataclass(frozen=True, slots=True)
class Vector:
    """A user's finished online-store value (watermark prefix included), ready to write."""

    user_id: str
    value: bytes

    @property
    def watermark(self) -> int:
        return int(self.value[:WATERMARK_HEX_DIGITS], 16)


@dataclass(frozen=True, slots=True)
class IdBatch:
    """The vectors of the ids asked that exist, and the watermark of the statement that looked."""

    vectors: list[Vector]
    missing: list[str]
    watermark: int


# The JSON PostgreSQL writes -> the state it describes: PostgreSQL prints ``0`` for a zero sum and
# ``12.50`` for an amount, and a state's floats must be floats (they are cached and served as such).
state_of: Callable[[str, int, list[Any]], UserState] = compile_mapper(
    "state_of", "user_id, watermark, d", "d[{i} + 1]",
    {"int": "{v}", "float": "float({v})", "text": "{v}", "epoch": "float({v})", "day": "{v}",
     "orders": "tuple((float(a), float(m), n) for a, m, n in {v} or ())",
     "epochs": "tuple(float(t) for t in {v} or ())",
     "unpaid": "tuple((x, float(a)) for x, a in {v} or ())"},
    "UserState(user_id, watermark, {fields})")


def value_of(user_id: str, watermark: int, text: str) -> bytes:
    """The cached value of the state the projection's JSON describes, exactly as ``encode`` writes it."""
    return encode(state_of(user_id, watermark, orjson.loads(text)))


class BulkSource:
    """Set-based reads for refresh: finished values by id range or id list, boundaries, changes."""

    def __init__(self, pool: PostgresPool, dialect: Dialect, work_mem_mb: int | None = None) -> None:
        self.pool = pool
        self.dialect = dialect
        self.work_mem_mb = work_mem_mb
        self._tuned: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._binary = dialect.name == "postgresql"
        self._point = SourceStore(pool, dialect)  # the users whose state the SQL-packed body cannot hold
        self._range = self._render(_RANGE)
        self._from = self._render(_FROM)
        self._ids = self._render(_IDS)

    def _render(self, scope: str) -> str:
        if self._binary:
            return bulk_statement().format(scope=scope.format(c="user_id"), scope_u=scope.format(c="u.user_id"))
        return _PROJECTION.format(inner=render_user_state(scope))

    def _snapshot(self, sql: str, **params: Any) -> tuple[int, list[Vector]]:
        """The watermark, then the values from a snapshot taken after it (as SourceStore does)."""
        with self.pool.connection() as conn:
            self._tune(conn)
            if self.dialect.watermark_in_transaction:
                conn.execute("BEGIN")
            mark = self.dialect.watermark(conn.run(self.dialect.watermark_sql)[0][0])
            rows = conn.run(sql, **params)
            if self.dialect.watermark_in_transaction:
                conn.execute("COMMIT")
        if not self._binary:
            return mark, [Vector(user_id, value_of(user_id, mark, body)) for user_id, body in rows]
        head = watermark_head(mark)
        vectors = [Vector(user_id, head + body if body is not None else b"") for user_id, body in rows]
        unfit = [v.user_id for v in vectors if not v.value]
        if unfit:
            # Their own snapshot and watermark (taken later, so at least as new): exact by construction.
            mark_unfit, states = self._point.snapshot_states(unfit)
            values = {u: encode(s) for u, s in states.items()}
            gone = encode(Tombstone("", mark_unfit))  # deleted since the chunk's snapshot
            vectors = [v if v.value else Vector(v.user_id, values.get(v.user_id, gone)) for v in vectors]
        return mark, vectors

    def _tune(self, conn: Connection) -> None:
        """Give a pooled connection the bulk statements' work_mem, once."""
        if self.work_mem_mb is not None and self.dialect.name == "postgresql" and conn not in self._tuned:
            conn.execute(f"SET work_mem = '{int(self.work_mem_mb)}MB'")
            self._tuned.add(conn)

    def vectors_in_range(self, lo: str, hi: str | None) -> list[Vector]:
        """Values of every user with ``lo <= user_id < hi`` (no upper bound when hi is None), by id."""
        if hi is None:
            return self._snapshot(self._from, lo=lo)[1]
        return self._snapshot(self._range, lo=lo, hi=hi)[1]

    def vectors_for(self, user_ids: Sequence[str]) -> IdBatch:
        """Values of the ids that exist; the others are ``missing`` as of the same snapshot."""
        mark, vectors = self._snapshot(self._ids, ids=list(user_ids))
        found = {v.user_id for v in vectors}
        return IdBatch(vectors, [u for u in dict.fromkeys(user_ids) if u not in found], mark)

    def next_boundary(self, lo: str, n: int, hi: str | None = None) -> str | None:
        """The ``n``-th user id at or after ``lo`` (and below ``hi``): where the next chunk starts."""
        with self.pool.connection() as conn:
            if hi is None:
                rows = conn.run(_NEXT_BOUNDARY, lo=lo, n=n)
            else:
                rows = conn.run(_NEXT_BOUNDARY_BELOW, lo=lo, hi=hi, n=n)
        return str(rows[0][0]) if rows else None

    def count(self, lo: str, hi: str | None) -> int:
        """How many users have ``lo <= user_id < hi``."""
        with self.pool.connection() as conn:
            rows = conn.run(_COUNT, lo=lo) if hi is None else conn.run(_COUNT_BELOW, lo=lo, hi=hi)
        return int(rows[0][0])

    def safe_now(self) -> tuple[datetime, datetime]:
        """The source's clock, and the latest instant before which every commit is already visible."""
        sql = _SAFE_NOW_POSTGRES if self.dialect.name == "postgresql" else _SAFE_NOW_OTHER
        with self.pool.connection() as conn:
            now, safe = conn.run(sql)[0]
        return now, safe

    @contextmanager
    def changed_since(self, since: datetime, after: str, page: int) -> Iterator[Iterator[list[str]]]:
        """Pages of the ids (ascending, > ``after``) changed after ``since``, read through one cursor.

        The set is sorted once in the database and fetched ``page`` ids at a time, so ten million
        changed users never sit in this process at once.
        """
        with self.pool.connection() as conn:
            self._tune(conn)
            conn.execute("BEGIN READ ONLY")
            try:
                conn.run(f"DECLARE refresh_changes NO SCROLL CURSOR FOR {_CHANGED}", since=since, after=after)
                yield _pages(conn, page)
            finally:
                conn.execute("ROLLBACK")


def _pages(conn: Connection, page: int) -> Iterator[list[str]]:
    fetch = f"FETCH {int(page)} FROM refresh_changes"
    while True:
        rows = conn.run(fetch)
        if not rows:
            return
        yield [str(r[0]) for r in rows]
