"""The migration's durable state in the target database (sql/migration/state.sql, replica.sql).

``MigrationState`` is the one row of ``fs_migration_state``: direction, truth, percent, and a JSON
document of what each phase recorded. Changes are read-modify-write under ``SELECT ... FOR UPDATE``,
so two callers never lose each other's update. Runs, backfill checkpoints and verification results
have tables of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import pg8000.native

from feature_store.stores.migration_tables import MIGRATED, KeyValue, key_from_json, key_json
from feature_store.stores.postgres import Connection, PostgresPool
from feature_store.stores.sql_files import sql_root

Direction = Literal["none", "forward", "reverse"]
Truth = Literal["source", "target"]
_UNDEFINED_TABLE = "42P01"


@dataclass
class MigrationState:
    direction: Direction = "none"
    truth: Truth = "source"
    percent: float = 0.0
    doc: dict[str, Any] = field(default_factory=dict)


def sqlstate(exc: BaseException) -> str:
    args = exc.args[0] if exc.args else {}
    return str(args.get("C", "")) if isinstance(args, dict) else ""


def migration_sql(name: str) -> str:
    return (sql_root() / "migration" / f"{name}.sql").read_text()


def ensure_replica_tables(conn: Connection) -> None:
    """The per-row position tables of the receiving side (idempotent)."""
    conn.execute(migration_sql("replica"))


def ensure_state_tables(conn: Connection) -> None:
    """State, runs, checkpoints, and one staging table per migrated table (idempotent)."""
    conn.execute(migration_sql("state"))
    for table in MIGRATED:
        conn.execute(f"CREATE TABLE IF NOT EXISTS fs_stage_{table} AS SELECT * FROM {table} WHERE false")
    conn.run("INSERT INTO fs_migration_state (name) VALUES ('current') ON CONFLICT (name) DO NOTHING")


class StateStore:
    """Reads and changes the migration's state, runs and checkpoints in the target database."""

    def __init__(self, pool: PostgresPool) -> None:
        self.pool = pool

    def read(self) -> MigrationState | None:
        """The state, or None when the target has not been prepared (no state table yet)."""
        try:
            with self.pool.connection() as conn:
                rows = conn.run("SELECT direction, truth, percent, doc FROM fs_migration_state WHERE name = 'current'")
        except pg8000.native.DatabaseError as exc:
            if sqlstate(exc) == _UNDEFINED_TABLE:
                return None
            raise
        if not rows:
            return None
        direction, truth, percent, doc = rows[0]
        return MigrationState(direction, truth, float(percent), _json(doc))

    @contextmanager
    def changing(self) -> Iterator[MigrationState]:
        """Yield the state locked for update; whatever the caller sets is written when the block ends."""
        with self.pool.connection() as conn:
            conn.execute("BEGIN")
            try:
                direction, truth, percent, doc = conn.run(
                    "SELECT direction, truth, percent, doc FROM fs_migration_state WHERE name = 'current' "
                    "FOR UPDATE")[0]
                state = MigrationState(direction, truth, float(percent), _json(doc))
                yield state
                conn.run("UPDATE fs_migration_state SET direction = :d, truth = :t, percent = :p, "
                         "doc = CAST(:doc AS JSONB), updated_at = now() WHERE name = 'current'",
                         d=state.direction, t=state.truth, p=Decimal(str(state.percent)),
                         doc=json.dumps(state.doc, sort_keys=True, default=str))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def update_doc(self, change: Callable[[dict[str, Any]], None]) -> MigrationState:
        with self.changing() as state:
            change(state.doc)
        return state

    # --- runs ---------------------------------------------------------------------------------

    def ensure_bookkeeping(self) -> None:
        """The state, runs and checkpoint tables (idempotent): a run is recorded before prepare runs."""
        with self.pool.connection() as conn:
            conn.execute(migration_sql("state"))

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            rows = conn.run("SELECT run_id, status, phase, started_at, finished_at, steps, error "
                            "FROM fs_migration_runs WHERE run_id = :r", r=run_id)
        if not rows:
            return None
        run_id, status, phase, started, finished, steps, error = rows[0]
        return {"run_id": run_id, "status": status, "phase": phase, "started_at": started.isoformat(),
                "finished_at": finished.isoformat() if finished else None, "steps": _json(steps), "error": error}

    def save_run(self, run_id: str, status: str, phase: str | None, steps: Mapping[str, Any],
                 error: str | None = None, finished: bool = False) -> None:
        with self.pool.connection() as conn:
            conn.run("INSERT INTO fs_migration_runs (run_id, status, phase, steps, error, finished_at) "
                     "VALUES (:r, :s, :p, CAST(:steps AS JSONB), :e, CASE WHEN :f THEN now() END) "
                     "ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, phase = EXCLUDED.phase, "
                     "steps = EXCLUDED.steps, error = EXCLUDED.error, finished_at = EXCLUDED.finished_at",
                     r=run_id, s=status, p=phase, steps=json.dumps(steps, sort_keys=True, default=str),
                     e=error, f=finished)

    # --- backfill checkpoints -----------------------------------------------------------------

    def progress(self, job: str, table: str) -> tuple[int, KeyValue | None, int, bool]:
        """(chunks done, key of the last row copied, rows copied, table done) of a backfill job."""
        with self.pool.connection() as conn:
            rows = conn.run("SELECT chunk, last_key, (SELECT COALESCE(sum(rows_copied), 0) FROM fs_migration_chunks "
                            "WHERE job = :j AND tbl = :t) FROM fs_migration_chunks WHERE job = :j AND tbl = :t "
                            "ORDER BY chunk DESC LIMIT 1", j=job, t=table)
        if not rows:
            return 0, None, 0, False
        chunk, last, total = rows[0]
        return int(chunk) + 1, key_from_json(last), int(total), last is None

    @staticmethod
    def checkpoint(job: str, table: str, chunk: int, after: KeyValue | None, last: KeyValue | None, rows: int,
                   seconds: Callable[[], float]) -> Callable[[Connection], None]:
        """The statement recording a landed chunk, to run in the transaction that landed it (``seconds``: how
        long the chunk took, asked when it is written)."""
        def write(conn: Connection) -> None:
            conn.run("INSERT INTO fs_migration_chunks (job, tbl, chunk, after_key, last_key, rows_copied, seconds) "
                     "VALUES (:j, :t, :c, CAST(:a AS JSONB), CAST(:l AS JSONB), :n, :s)",
                     j=job, t=table, c=chunk, a=key_json(after), l=key_json(last), n=rows, s=round(seconds(), 3))
        return write

    # --- verification results -----------------------------------------------------------------

    def record_check(self, job: str, table: str, chunk: int, after: KeyValue | None, last: KeyValue | None,
                     source: tuple[int, str], target: tuple[int, str], status: str, attempts: int) -> None:
        with self.pool.connection() as conn:
            conn.run("INSERT INTO fs_migration_checks (job, tbl, chunk, after_key, last_key, source_rows, target_rows, "
                     "source_sum, target_sum, status, attempts) VALUES (:j, :t, :c, CAST(:a AS JSONB), "
                     "CAST(:l AS JSONB), :sr, :tr, :ss, :ts, :st, :n) ON CONFLICT (job, tbl, chunk) DO UPDATE SET "
                     "after_key = EXCLUDED.after_key, last_key = EXCLUDED.last_key, "
                     "source_rows = EXCLUDED.source_rows, "
                     "target_rows = EXCLUDED.target_rows, source_sum = EXCLUDED.source_sum, "
                     "target_sum = EXCLUDED.target_sum, status = EXCLUDED.status, attempts = EXCLUDED.attempts, "
                     "checked_at = now()", j=job, t=table, c=chunk, a=key_json(after), l=key_json(last),
                     sr=source[0], tr=target[0], ss=source[1], ts=target[1], st=status, n=attempts)

    def checks(self, job: str, status: str | None = None) -> list[dict[str, Any]]:
        """Verification results of a job (optionally only one status), in table and chunk order."""
        with self.pool.connection() as conn:
            rows = conn.run("SELECT tbl, chunk, after_key, last_key, source_rows, target_rows, source_sum, target_sum, "
                            "status, attempts FROM fs_migration_checks WHERE job = :j AND (:s = '' OR status = :s) "
                            "ORDER BY tbl, chunk", j=job, s=status or "")
        return [{"table": t, "chunk": int(c), "after": key_from_json(a), "last": key_from_json(last),
                 "source_rows": int(sr), "target_rows": int(tr), "source_sum": ss, "target_sum": ts,
                 "status": st, "attempts": int(n)} for t, c, a, last, sr, tr, ss, ts, st, n in rows]


def _json(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        parsed: dict[str, Any] = json.loads(value)
        return parsed
    return dict(value)
