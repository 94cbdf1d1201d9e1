"""The offline ETL: incremental export PostgreSQL -> BigQuery, the daily feature snapshot, run records.

Export: per mirrored table (stores/bigquery_mirror.py), rows whose modification time is at or
after the table's watermark minus ``overlap_s`` and at most the source's clock at the start of
the call are read in keyset pages, written to a CSV file, loaded into a staging table and merged
into the mirror; the watermark then moves to the last row merged. Invariants: a watermark moves
only after its rows are merged, never backwards, so a failed batch leaves it where it was and a
re-run merges the same rows again with no duplicates; the overlap re-reads rows committed late
with an older timestamp (the MERGE makes the re-read harmless). A call stops starting batches
after ``step_budget_s`` and answers ``done: false``; the workflow calls again.

Snapshot: the features of every user as of the end of a UTC day, computed in BigQuery from the
catalog (stores/bigquery_features.py), replacing that day's rows in one transaction.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from feature_store.domain.catalog import FeatureSet, get_feature_set
from feature_store.errors import InvalidParameter, OfflineQueryFailed
from feature_store.logs import get_logger
from feature_store.settings import EtlSettings
from feature_store.stores.bigquery_features import features_sql, literal, script
from feature_store.stores.bigquery_mirror import (
    MIRRORED,
    MirrorTable,
    apply_sql,
    keyset_position,
    read_page,
    start_position,
)
from feature_store.stores.bigquery_offline import OfflineStore
from feature_store.stores.postgres import PostgresPool

log = get_logger(__name__)

_ONE_MICROSECOND = timedelta(microseconds=1)


def new_run_id(now: datetime) -> str:
    """A fresh run id: sortable by time, unique by its random tail."""
    return f"etl-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def parse_watermark(text: str) -> datetime:
    """A watermark (ISO 8601 with Z) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def format_watermark(moment: datetime) -> str:
    """The watermark text of an instant: fixed width, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class TableExport:
    """What one export call did to one table."""

    rows: int = 0
    batches: int = 0
    watermark: str | None = None  # after the call's last batch (None: nothing landed)
    done: bool = False
    seconds: float = 0.0


class Etl:
    """The ETL steps of workflows/etl.yaml, each one HTTP call of run_etl."""

    def __init__(self, source: PostgresPool, offline: OfflineStore, settings: EtlSettings,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.source = source
        self.offline = offline
        self.settings = settings
        self._clock = clock
        self._now = now
        self._schema_ready = False

    def feature_set(self) -> FeatureSet:
        return get_feature_set(self.settings.feature_set, self.settings.feature_set_version)

    def ensure_schema(self) -> None:
        """Apply sql/bigquery/ once per instance (every statement is idempotent)."""
        if not self._schema_ready:
            self.offline.ensure_schema()
            self._schema_ready = True

    # --- export -------------------------------------------------------------------------------

    def export(self, run_id: str | None = None, full: bool = False) -> dict[str, Any]:
        """Export what changed since each table's watermark (``full``: everything), within the budget.

        The first call of a run fixes its plan in the run's record: per table the lower bound
        (watermark minus overlap), the source clock as the upper bound, and the refresh request.
        Later calls of the run resume each table exactly after the last row merged.
        """
        started = self._clock()
        deadline = started + self.settings.step_budget_s
        run_id = run_id or new_run_id(self._now())
        self.ensure_schema()
        record = self.offline.run_record(run_id)
        steps: dict[str, Any] = record["steps"] if record else {}
        plan: dict[str, Any] = steps.get("export") or self._plan(full)
        steps["export"] = plan
        plan["calls"] = int(plan.get("calls", 0)) + 1
        tables: dict[str, TableExport] = {}
        for table in MIRRORED:
            progress = plan["tables"][table.name]
            if progress["done"]:
                continue
            # Out of time, but only once this call has landed a batch: every call makes progress.
            if any(t.batches for t in tables.values()) and self._clock() > deadline:
                break
            tables[table.name] = self._export_table(table, progress, plan["upper"], run_id, deadline,
                                                    lambda: self._save(run_id, steps))
            if not progress["done"]:
                break
        plan["done"] = all(p["done"] for p in plan["tables"].values())
        self._save(run_id, steps)
        rows = sum(t.rows for t in tables.values())
        seconds = round(self._clock() - started, 3)
        log.info("export call finished", extra={"fields": {"run_id": run_id, "rows": rows, "done": plan["done"],
                                                           "seconds": seconds}})
        return {"run_id": run_id, "step": "export", "done": plan["done"], "rows": rows, "seconds": seconds,
                "tables": {n: asdict(t) for n, t in tables.items()}, "materialize": plan["materialize"]}

    def _plan(self, full: bool) -> dict[str, Any]:
        marks = {} if full else self.offline.watermarks()
        overlap = timedelta(seconds=self.settings.overlap_s)

        def lower(mark: str | None) -> str:
            return "-infinity" if mark is None else format_watermark(parse_watermark(mark) - overlap)

        return {"upper": self._source_now(), "materialize": self._materialize_request(full), "rows": 0,
                "tables": {t.name: {"lo": lower(marks.get(t.name)), "after": None, "done": False, "rows": 0}
                           for t in MIRRORED}}

    def _save(self, run_id: str, steps: dict[str, Any]) -> None:
        plan = steps["export"]
        plan["rows"] = sum(int(p["rows"]) for p in plan["tables"].values())
        self.offline.save_run(run_id, "running", steps, rows_loaded=plan["rows"])

    def _materialize_request(self, full: bool) -> dict[str, Any]:
        """The refresh_cache request of a run: incremental since the last good run, else full."""
        last = None if full else self.offline.last_run("succeeded")
        upper = (last or {}).get("steps", {}).get("export", {}).get("upper")
        if not upper:
            return {"mode": "full"}
        since = parse_watermark(upper) - timedelta(seconds=self.settings.overlap_s)
        return {"mode": "incremental", "since": format_watermark(since)}

    def _source_now(self) -> str:
        with self.source.connection() as conn:
            return str(conn.run("SELECT to_char(now() AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0][0])

    def _export_table(self, table: MirrorTable, progress: dict[str, Any], upper: str, run_id: str,
                      deadline: float, save: Callable[[], None]) -> TableExport:
        """Export one table from its saved position until done or out of time; ``progress`` is updated."""
        result = TableExport()
        began = self._clock()
        after: list[str] = progress["after"] or start_position(table, progress["lo"])
        folder = self.settings.tmp_dir or tempfile.gettempdir()
        fd, name = tempfile.mkstemp(prefix=f"fs_export_{table.name}_", suffix=".csv", dir=folder)
        path = Path(name)
        try:
            with os.fdopen(fd, "w", newline="") as out, self.source.connection() as conn:
                writer = self._start_batch(out, table)
                in_batch, first, last = 0, None, None
                while True:
                    page = read_page(conn, table, upper, after, self.settings.chunk_rows)
                    if page:
                        writer.writerows(page)
                        in_batch += len(page)
                        first = first or str(page[0][0])
                        last = str(page[-1][0])
                        after = keyset_position(table, page[-1])
                    end = len(page) < self.settings.chunk_rows
                    if in_batch and (end or in_batch >= self.settings.batch_rows):
                        out.flush()
                        assert first is not None and last is not None  # the batch has rows
                        self._land(table, path, in_batch, parse_watermark(first), run_id)
                        # Only now, with the rows merged, do the watermark and the position move.
                        self.offline.set_watermark(table.name, last, run_id)
                        progress["after"], progress["done"] = after, end
                        progress["rows"] = int(progress["rows"]) + in_batch
                        result.rows += in_batch
                        result.batches += 1
                        result.watermark = last
                        in_batch, first = 0, None
                        writer = self._start_batch(out, table)
                        save()
                        elapsed = self._clock() - began
                        log.info("export progress", extra={"fields": {
                            "run_id": run_id, "table": table.name, "rows": result.rows, "done": end,
                            "rows_per_s": round(result.rows / elapsed) if elapsed > 0 else None}})
                        if not end and self._clock() > deadline:
                            return result
                    if end:
                        progress["done"] = result.done = True
                        return result
        finally:
            result.seconds = round(self._clock() - began, 3)
            path.unlink(missing_ok=True)

    @staticmethod
    def _start_batch(out: Any, table: MirrorTable) -> Any:
        out.seek(0)
        out.truncate()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c for c, _ in table.staging_schema])
        return writer

    def _land(self, table: MirrorTable, path: Path, rows: int, lo: datetime, run_id: str) -> None:
        """Load one batch file into a staging table of its own and merge it into the mirror."""
        staging = f"_stage_{table.name}_{secrets.token_hex(6)}"
        try:
            loaded = self.offline.load_csv(path, staging, table.staging_schema)
            if loaded != rows:
                raise OfflineQueryFailed(f"{table.name}: {rows} rows written but {loaded} loaded; nothing merged",
                                         code="export_incomplete")
            self.offline.run(apply_sql(table, self.offline.table(table.name), self.offline.table(staging)),
                             {"lo": lo} if table.append_only else None)
        finally:
            self.offline.drop_table(staging)

    # --- snapshot -----------------------------------------------------------------------------

    def snapshot(self, run_id: str, day: date | None = None) -> dict[str, Any]:
        """Build the feature snapshot of ``day`` (default: yesterday, UTC), replacing its rows."""
        started = self._clock()
        now = self._now()
        day = day or (now.date() - timedelta(days=1))
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if start > now:
            raise InvalidParameter(f"date {day.isoformat()} has not begun yet (UTC); snapshots describe past days")
        # The end of the day (its last microsecond), or now for today's partial snapshot.
        as_of = min(start + timedelta(days=1) - _ONE_MICROSECOND, now)
        self.ensure_schema()
        fs = self.feature_set()
        marks = self.offline.watermarks()
        target = self.offline.table("feature_snapshots")
        names = [f.name for f in fs.features]
        columns = ["snapshot_date", "user_id", "feature_set", "feature_set_version", "as_of", "source_watermark",
                   "computed_at", "etl_run_id", *names]
        values = [literal(day), "user_id", literal(fs.name), str(fs.version), "as_of",
                  literal(json.dumps(marks, sort_keys=True)), "CURRENT_TIMESTAMP()", literal(run_id), *names]
        this_day = (f"snapshot_date = {literal(day)} AND feature_set = {literal(fs.name)} "
                    f"AND feature_set_version = {fs.version}")
        # Chunks of users by id bound each statement's memory; the day's rows are then replaced in
        # one transaction, so readers see the old day or the new one, never a part.
        staging = self.offline.table(f"_snapshot_{secrets.token_hex(6)}")
        bounds = self._user_bounds(as_of)
        try:
            for i, lo in enumerate(bounds):
                scope = f"user_id >= {literal(lo)}" + (f" AND user_id < {literal(bounds[i + 1])}"
                                                      if i + 1 < len(bounds) else "")
                requests = (f"SELECT user_id AS req_id, user_id, {literal(as_of)} AS as_of "
                            f"FROM {self.offline.table('users')} WHERE created_at <= {literal(as_of)} AND {scope}")
                select = (f"SELECT {', '.join(f'{v} AS {c}' for v, c in zip(values, columns, strict=True))} FROM (\n"
                          f"{features_sql(fs, self.offline.dataset, requests, ['user_id', 'as_of'])}\n)")
                into = f"CREATE TABLE {staging} AS\n" if i == 0 else f"INSERT INTO {staging} ({', '.join(columns)})\n"
                self.offline.run(script(into + select))
                elapsed = self._clock() - started
                log.info("snapshot progress", extra={"fields": {
                    "run_id": run_id, "chunks_done": i + 1, "chunks": len(bounds),
                    "eta_s": round(elapsed / (i + 1) * (len(bounds) - i - 1), 1)}})
            land = (f"INSERT INTO {target} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {staging}"
                    if bounds else "SELECT 0")
            self.offline.run(f"BEGIN TRANSACTION;\nDELETE FROM {target} WHERE {this_day};\n{land};\n"
                             "COMMIT TRANSACTION;")
        finally:
            self.offline.drop_table(staging.strip("`").split(".")[-1])
        rows = int(self.offline.run(f"SELECT COUNT(*) AS n FROM {target} WHERE {this_day}")[0]["n"])
        seconds = round(self._clock() - started, 3)
        log.info("snapshot built", extra={"fields": {"run_id": run_id, "rows": rows, "seconds": seconds}})
        return {"run_id": run_id, "step": "snapshot", "date": day.isoformat(), "as_of": as_of.isoformat(),
                "feature_set": fs.name, "version": fs.version, "rows": rows, "seconds": seconds}

    def _user_bounds(self, as_of: datetime) -> list[str]:
        """The first user id of each chunk of ``feature_chunk`` users who existed at ``as_of``, in order."""
        rows = self.offline.run(
            f"SELECT user_id FROM (SELECT user_id, ROW_NUMBER() OVER (ORDER BY user_id) AS n "
            f"FROM {self.offline.table('users')} WHERE created_at <= @as_of) "
            "WHERE MOD(n - 1, @chunk) = 0 ORDER BY user_id", {"as_of": as_of, "chunk": self.settings.feature_chunk})
        return [str(r["user_id"]) for r in rows]

    # --- run record ---------------------------------------------------------------------------

    def record(self, run_id: str, status: str, steps: Mapping[str, Any] | None = None,
               error: str | None = None) -> dict[str, Any]:
        """Close the run's etl_runs row with its final status and what each step reported."""
        self.ensure_schema()
        record = self.offline.run_record(run_id)
        merged: dict[str, Any] = dict(record["steps"]) if record else {}
        # The export's plan (bounds, positions, refresh request) is the service's own: a report of
        # the export's answer must not replace it, or the next run would not know where this began.
        merged.update({k: v for k, v in (steps or {}).items() if k != "export" or "export" not in merged})
        rows = merged.get("export", {}).get("rows")
        self.offline.save_run(run_id, status, merged, error=None if error is None else error[:4000],
                              rows_loaded=None if rows is None else int(rows), finished=True)
        log.info("run recorded", extra={"fields": {"run_id": run_id, "status": status}})
        return {"run_id": run_id, "step": "record", "status": status}
